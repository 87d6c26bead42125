"""format=gguf: a Llama-shaped network written as one GGUF file for llama.cpp, read back by
transformers' GGUF reader (``from_pretrained(dir, gguf_file=...)``) in a process where arlm cannot
be imported: f32 gives the native export's logits and greedy continuations, f16 and q8_0 exactly
the native weights rounded as each type stores them. Every network llama.cpp cannot run as its
``llama`` architecture, and every vocabulary its tokenizer would cut differently, is refused
before anything is written. Runs on transformers 4 and 5."""

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from arlm.export.exporter import export_checkpoint_to_hf
from arlm.export.gguf import interleave_rope_rows
from arlm.export.gguf_export import export_checkpoint_to_gguf, gguf_file_name
from arlm.model_arlm import XLM_MODEL_TARGET

from tests.export.test_native import BASE, LLAMA, PROMPTS, SPECIALS, word_tokenizer, xlm_model
from tests.hf_without_arlm import greedy_reference, run_without_arlm

gguf = pytest.importorskip("gguf")

DTYPES = ("f32", "f16", "q8_0")
READ_BACK = r'''
import sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

request = torch.load("request.pt")
results = {}
for dtype in request["dtypes"]:
    model = AutoModelForCausalLM.from_pretrained(dtype, gguf_file=f"model-{dtype}.gguf").eval()
    tokenizer = AutoTokenizer.from_pretrained(dtype)
    with torch.no_grad():
        logits = model(request["ids"]).logits
        batch = tokenizer(request["prompts"], return_tensors="pt", padding=True)
        generated = model.generate(**batch, max_new_tokens=6)
    results[dtype] = {"class": type(model).__name__, "logits": logits, "state": model.state_dict(),
                      "width": batch["input_ids"].shape[1], "generated": generated}
torch.save(results, "result.pt")
'''


def save_checkpoint(path, tokenizer, **overrides) -> torch.nn.Module:
    xlm = xlm_model(len(tokenizer), **overrides)
    kwargs = {"_target_": XLM_MODEL_TARGET, "num_embeddings": len(tokenizer), **BASE, **overrides}
    torch.save({"state_dict": {f"model.{k}": v for k, v in xlm.state_dict().items()},
                "hyper_parameters": {"model": kwargs, "job_name": "star_llama"}}, path)
    return xlm


def stored(weights: torch.Tensor, dtype: str) -> torch.Tensor:
    """``weights`` rounded as a GGUF of ``dtype`` stores them (vectors stay float32)."""
    array = weights.float().numpy()
    if array.ndim < 2 or dtype == "f32":
        return torch.from_numpy(array)
    if dtype == "q8_0" and array.shape[-1] % 32 == 0:
        kind = gguf.GGMLQuantizationType.Q8_0
        return torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(array, kind), kind))
    return torch.from_numpy(array.astype(np.float16).astype(np.float32))


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """One Llama-shaped checkpoint (GQA, untied head, MLP rows of 85: not whole Q8_0 blocks)
    exported as the native directory and as GGUF in each dtype, each GGUF read back by transformers
    in one process without arlm: ``(root, xlm model, tokenizer, ids, {dtype: what it read})``."""
    root = tmp_path_factory.mktemp("gguf")
    tokenizer = word_tokenizer()
    xlm = save_checkpoint(root / "last.ckpt", tokenizer, **LLAMA, dim_feedforward=85)
    export_checkpoint_to_hf(root / "last.ckpt", root / "hf", tokenizer=tokenizer, architecture="native")
    for dtype in DTYPES:
        path = export_checkpoint_to_gguf(root / "last.ckpt", root / dtype, tokenizer, dtype=dtype)
        assert path == root / dtype / gguf_file_name(dtype)
    ids = torch.randint(4, len(tokenizer), (2, 12), generator=torch.Generator().manual_seed(3))
    torch.save({"ids": ids, "prompts": PROMPTS, "dtypes": DTYPES}, root / "request.pt")
    run_without_arlm(READ_BACK, [], root)
    return root, xlm, tokenizer, ids, torch.load(root / "result.pt", weights_only=True)


def test_f32_gguf_read_by_transformers_gives_the_native_exports_logits_and_greedy_text(exports):
    root, xlm, tokenizer, ids, read = exports
    native = AutoModelForCausalLM.from_pretrained(root / "hf").eval()
    assert read["f32"]["class"] == "LlamaForCausalLM"
    with torch.no_grad():
        torch.testing.assert_close(read["f32"]["logits"], native(ids).logits, atol=1e-6, rtol=0)
    expected = greedy_reference(xlm, [tokenizer.encode(p) for p in PROMPTS], 6, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert read["f32"]["generated"][:, read["f32"]["width"]:].tolist() == expected


@pytest.mark.parametrize("dtype", ["f16", "q8_0"])
def test_smaller_dtypes_hold_the_native_weights_rounded_as_their_type(exports, dtype):
    root, _, _, _, read = exports
    state = read[dtype]["state"]
    native = AutoModelForCausalLM.from_pretrained(root / "hf").state_dict()
    assert state.keys() == native.keys()
    for name, weights in native.items():
        if name.endswith(("q_proj.weight", "k_proj.weight")):  # rounded in llama.cpp's row order
            heads = 4 if "q_proj" in name else 2
            expected = _undo_interleave(stored(interleave_rope_rows(weights, heads), dtype), heads)
        else:
            expected = stored(weights, dtype)
        assert torch.equal(state[name], expected), name


def _undo_interleave(weights: torch.Tensor, heads: int) -> torch.Tensor:
    rows, width = weights.shape
    return weights.reshape(heads, rows // heads // 2, 2, width).transpose(1, 2).reshape(rows, width)


def test_file_holds_llama_metadata_and_the_vocabulary_as_llama_cpp_reads_it(exports):
    root, _, tokenizer, _, _ = exports
    reader = gguf.GGUFReader(root / "q8_0" / gguf_file_name("q8_0"))
    fields = {name: field.contents() for name, field in reader.fields.items()}
    assert fields["general.architecture"] == "llama" and fields["general.name"] == "star_llama"
    assert (fields["llama.block_count"], fields["llama.attention.head_count"], fields["llama.attention.head_count_kv"]) == (2, 4, 2)
    assert fields["llama.rope.dimension_count"] == 8 and fields["llama.context_length"] == 64
    assert fields["tokenizer.ggml.model"] == "t5"  # llama.cpp's unigram tokenizer
    assert fields["tokenizer.ggml.add_bos_token"] is False and fields["tokenizer.ggml.add_eos_token"] is False
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    vocab = tokenizer.get_vocab()
    assert tokens[vocab["7"]] == "\u25817" and types[vocab["7"]] == gguf.TokenType.NORMAL
    assert tokens[vocab["[BOS]"]] == "[BOS]" and types[vocab["[BOS]"]] == gguf.TokenType.CONTROL
    assert types[vocab["[UNK]"]] == gguf.TokenType.UNKNOWN
    assert (fields["tokenizer.ggml.bos_token_id"], fields["tokenizer.ggml.eos_token_id"]) == (vocab["[BOS]"], vocab["[EOS]"])
    assert (fields["tokenizer.ggml.unknown_token_id"], fields["tokenizer.ggml.padding_token_id"]) == (vocab["[UNK]"], vocab["[PAD]"])
    kinds = {tensor.name: tensor.tensor_type for tensor in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0  # rows of 32
    assert kinds["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.F16  # rows of 85: not whole blocks
    assert kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert "output.weight" in kinds


def test_tied_head_is_left_to_the_token_embeddings(tmp_path):
    tokenizer = word_tokenizer()
    save_checkpoint(tmp_path / "last.ckpt", tokenizer, **LLAMA, tie_word_embeddings=True)
    path = export_checkpoint_to_gguf(tmp_path / "last.ckpt", tmp_path / "out", tokenizer)
    assert "output.weight" not in {tensor.name for tensor in gguf.GGUFReader(path).tensors}


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({}, "GPT-NeoX-shaped .* tanh-approximated GELU only, so a 'relu' MLP cannot be expressed"),
        (dict(activation="gelu"), "a 'gelu' MLP cannot be expressed"),
        (dict(LLAMA, bias=True), "it has biases .* transformers' GGUF reader drops Llama biases"),
        (dict(LLAMA, final_layer_without_normalization=True), "not Llama-shaped \\(it has no final norm\\)"),
        (dict(LLAMA, rotary_emb_dim=4), "not Llama-shaped \\(Llama rotates the whole head"),
    ],
    ids=["gpt_neox_relu", "gpt_neox_gelu", "llama_with_biases", "no_final_norm", "partial_rotary"],
)
def test_networks_llama_cpp_cannot_run_are_refused_before_anything_is_written(tmp_path, overrides, reason):
    tokenizer = word_tokenizer()
    save_checkpoint(tmp_path / "last.ckpt", tokenizer, **overrides)
    with pytest.raises(ValueError, match=f"format=gguf cannot write this network for llama.cpp: .*{reason}") as error:
        export_checkpoint_to_gguf(tmp_path / "last.ckpt", tmp_path / "out", tokenizer)
    assert "model.bias=false" in str(error.value) or "model=rotary_transformer_llama_arlm" in str(error.value)
    assert not (tmp_path / "out").exists()


def _word_level(words, specials=SPECIALS) -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate([*specials.values(), *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials.get("unk_token", "[PAD]")))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **specials)


def _byte_level_bpe() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE(vocab={"[UNK]": 0, "a": 1}, merges=[], unk_token="[UNK]"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="[UNK]")


WORDS = [str(i) for i in range(50)]


@pytest.mark.parametrize(
    "tokenizer, message",
    [
        (None, "needs the run's tokenizer"),
        (_byte_level_bpe(), "word-level vocabularies .* a BPE model"),
        (_word_level(WORDS[:-1] + ["4\u25819"]), "the vocabulary word '4\u25819' cannot be one llama.cpp token"),
        (_word_level(WORDS, {k: v for k, v in SPECIALS.items() if k != "unk_token"}),
         "needs a tokenizer with an unk_token: without one llama.cpp takes id 2 \\('\\[EOS\\]'\\) as that token"),
    ],
    ids=["no_tokenizer", "bpe", "word_with_the_space_marker", "no_unknown_token"],
)
def test_vocabularies_llama_cpp_would_cut_differently_are_refused(tmp_path, tokenizer, message):
    save_checkpoint(tmp_path / "last.ckpt", word_tokenizer(), **LLAMA)
    with pytest.raises(ValueError, match=message):
        export_checkpoint_to_gguf(tmp_path / "last.ckpt", tmp_path / "out", tokenizer)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype", ["q4_0", "F32", True])
def test_unknown_dtype_is_refused(tmp_path, dtype):
    save_checkpoint(tmp_path / "last.ckpt", word_tokenizer(), **LLAMA)
    with pytest.raises(ValueError, match="gguf_dtype must be one of \\('f32', 'f16', 'q8_0'\\)"):
        export_checkpoint_to_gguf(tmp_path / "last.ckpt", tmp_path / "out", word_tokenizer(), dtype=dtype)


def test_card_says_how_to_run_the_file_with_llama_cpp_and_transformers(exports):
    root = exports[0]
    card = (root / "f16" / "README.md").read_text()
    assert "`model-f16.gguf`: llama.cpp's `llama` architecture, float16 matrices" in card
    assert "Llama(model_path='f16/model-f16.gguf', n_ctx=64" in card
    assert "create_completion(prompt, max_tokens=64 - len(ids), temperature=0.0)" in card
    assert "from_pretrained('f16', gguf_file='model-f16.gguf')" in card


def test_overwrite_replaces_an_earlier_gguf_export_but_not_a_project(tmp_path):
    """Round 4, case 2, for ``format=gguf``: its directory (a ``model-<dtype>.gguf``, no
    ``config.json``) is recognised as an earlier export; anything else is refused."""
    tokenizer = word_tokenizer()
    save_checkpoint(tmp_path / "last.ckpt", tokenizer, **LLAMA)
    export_checkpoint_to_gguf(tmp_path / "last.ckpt", tmp_path / "out", tokenizer)
    path = export_checkpoint_to_gguf(tmp_path / "last.ckpt", tmp_path / "out", tokenizer, dtype="f16", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.gguf")) == [path.name]
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    with pytest.raises(ValueError, match="is not an earlier export \\(it holds .git"):
        export_checkpoint_to_gguf(tmp_path / "last.ckpt", project, tokenizer, overwrite=True)
    assert [p.name for p in project.iterdir()] == [".git"]
