"""ArlowTokenizerFast: byte-level BPE trained from local files, special tokens, save/load."""

import json

import pytest
from transformers import AutoTokenizer

from arlm import ArlowTokenizerFast
from arlm.pretrain.tokenizer import train_arlow_tokenizer

CORPUS = "the tokenizer learns merges from these lines of text\nand from this one too\n" * 20


@pytest.fixture
def tokenizer(tmp_path):
    (tmp_path / "corpus.txt").write_text(CORPUS)
    return train_arlow_tokenizer([tmp_path / "corpus.txt"], vocab_size=320)


def test_special_tokens_have_the_first_ids(tokenizer):
    assert [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id,
            tokenizer.unk_token_id, tokenizer.mask_token_id] == [0, 1, 2, 3, 4]
    assert 261 < len(tokenizer) <= 320 and tokenizer.padding_side == "left"  # specials + bytes + merges


@pytest.mark.parametrize(
    "text",
    ["the tokenizer learns", "naïve café — 東京 🙂 ∑x²", "<s>masked <mask> words</s><pad>", "  spaces\tand\nnewlines  "],
)
def test_encode_decode_round_trip(tokenizer, text):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text


def test_special_tokens_are_single_ids_and_can_be_skipped(tokenizer):
    ids = tokenizer.encode("hello <mask> world</s>")
    assert ids.count(tokenizer.mask_token_id) == 1 and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "hello  world"


def test_learned_merges_shorten_training_text(tokenizer):
    assert len(tokenizer.encode("the tokenizer learns merges")) < len("the tokenizer learns merges") / 2


def test_save_and_load_through_auto_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert isinstance(loaded, ArlowTokenizerFast)
    text = "naïve <mask> text</s>"
    assert loaded.encode(text) == tokenizer.encode(text)
    batch = loaded(["a", "longer text"], padding=True)
    assert batch["input_ids"][0][0] == loaded.pad_token_id and batch["attention_mask"][0][0] == 0


def test_trains_from_jsonl_text_field(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"body": line}) for line in CORPUS.splitlines()))
    tok = train_arlow_tokenizer([rows], vocab_size=300, text_field="body")
    assert tok.decode(tok.encode("learns merges")) == "learns merges"
    with pytest.raises(ValueError, match="jsonl row has no field 'text'"):
        train_arlow_tokenizer([rows], vocab_size=300)


def test_bad_arguments_raise_clear_errors(tmp_path):
    (tmp_path / "c.txt").write_text(CORPUS)
    with pytest.raises(ValueError, match="vocab_size must be at least 261"):
        train_arlow_tokenizer([tmp_path / "c.txt"], vocab_size=100)
    with pytest.raises(ValueError, match="text file not found"):
        train_arlow_tokenizer([tmp_path / "missing.txt"], vocab_size=300)
    (tmp_path / "c.csv").write_text("a,b")
    with pytest.raises(ValueError, match="unsupported text file"):
        train_arlow_tokenizer([tmp_path / "c.csv"], vocab_size=300)
    with pytest.raises(ValueError, match="needs tokenizer_file"):
        ArlowTokenizerFast()


def test_reload_keeps_the_learned_merges_never_characters(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = ArlowTokenizerFast.from_pretrained(tmp_path / "tok")
    text = "the tokenizer learns merges"
    assert loaded.encode(text) == tokenizer.encode(text) and len(loaded.encode(text)) < len(text) / 2
    assert len(loaded) == len(tokenizer)


def test_special_tokens_come_from_tokenizer_json_and_are_never_invented(tokenizer, tmp_path):
    only_json = tmp_path / "only_json"
    only_json.mkdir()
    tokenizer.backend_tokenizer.save(str(only_json / "tokenizer.json"))
    loaded = ArlowTokenizerFast.from_pretrained(only_json)
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.mask_token_id) == (0, 2, 4)
    assert len(loaded) == len(tokenizer)

    vocab = {"<pad>": 0, "</s>": 1, "a": 2, "b": 3}
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    partial = ArlowTokenizerFast(tokenizer_object=backend)
    assert (partial.pad_token, partial.eos_token, partial.bos_token, partial.mask_token) == ("<pad>", "</s>", None, None)
    assert len(partial) == 4  # no default special token added past the vocabulary
    with pytest.raises(ValueError, match="bos_token '<s>' is not in the vocabulary"):
        ArlowTokenizerFast(tokenizer_object=backend, bos_token="<s>")
