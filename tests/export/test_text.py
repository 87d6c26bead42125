"""The exported tokenizer's text: every token decodes as a space and the token, so decoded texts
start with one space, a decoded continuation appended to its prompt reads right on every
transformers, and encoding is what it was (same ids, same words). Runs on transformers 4 and 5.
(The pipeline and ``generate`` on a real export: tests/test_hf_native_export.py.)"""

import json

import pytest
from tokenizers import Tokenizer

from arlm.export.exporter import hf_tokenizer_from

from tests.export.test_native import word_tokenizer


@pytest.fixture(params=["fast_word_tokenizer", "simple_space_tokenizer"])
def exported(request, tmp_path):
    """The export's tokenizer, saved and reloaded, from a decoder-less fast word tokenizer or
    from xlm-core's SimpleSpaceTokenizer; and the source tokenizer."""
    source = word_tokenizer() if request.param == "fast_word_tokenizer" else request.getfixturevalue("simple_tokenizer")
    hf_tokenizer_from(source).save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tmp_path), source


def test_decoded_text_puts_one_space_before_every_token(exported):
    tokenizer, _ = exported
    ids = tokenizer.encode("3 4 5 [BOS] 7")
    assert tokenizer.decode(ids) == " 3 4 5 [BOS] 7"
    assert tokenizer.decode(ids, skip_special_tokens=True) == " 3 4 5 7"
    assert tokenizer.batch_decode([ids[:2], ids[2:]]) == [" 3 4", " 5 [BOS] 7"]
    # a continuation decoded alone, appended to its prompt's text, is the whole text decoded
    prompt, continuation = ids[:4], ids[4:]
    assert "3 4 5 [BOS]" + tokenizer.decode(continuation) == tokenizer.decode(ids).removeprefix(" ")
    assert tokenizer.decode(prompt) + tokenizer.decode(continuation) == tokenizer.decode(ids)


def test_encoding_keeps_ids_and_words_and_ignores_extra_whitespace(exported):
    tokenizer, source = exported
    text = "10 11 12 [BOS] 13 [EOS]"
    assert tokenizer.encode(text) == source.encode(text, add_special_tokens=False)
    assert tokenizer.decode(tokenizer.encode(text)).split() == text.split()
    assert tokenizer.encode("  10\t11 \n 12 ") == tokenizer.encode("10 11 12") == tokenizer.encode(" 10 11 12")


def test_lm_eval_context_continuation_split_tokenises_as_the_whole(exported):
    """lm-evaluation-harness scores ``continuation`` after ``context`` by encoding both together
    and taking the ids past ``len(encode(context))``; continuations start with a space."""
    tokenizer, _ = exported
    context, continuation = "3 4 5 [BOS]", " 9 9 13 [EOS]"
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    assert whole[: len(context_ids)] == context_ids
    assert whole[len(context_ids):] == tokenizer.encode(continuation) == tokenizer.encode(continuation.strip())


def test_decoder_is_saved_in_tokenizer_json_and_reloads_with_tokenizers_alone(tmp_path):
    hf_tokenizer_from(word_tokenizer()).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    assert saved["decoder"] == {"type": "Replace", "pattern": {"Regex": "^"}, "content": " "}
    backend = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert backend.decode(backend.encode("3 4 5").ids) == " 3 4 5"


def test_a_tokenizer_with_its_own_decoder_keeps_it(tmp_path):
    from arlm.pretrain.tokenizer import train_arlow_tokenizer

    (tmp_path / "t.txt").write_text("some words to learn from\n" * 10)
    trained = train_arlow_tokenizer([tmp_path / "t.txt"], vocab_size=280)
    converted = hf_tokenizer_from(trained)
    assert converted.decode(converted.encode("some words")) == "some words"
