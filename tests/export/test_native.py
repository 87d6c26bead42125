"""Native export: the GPT-NeoX / Llama twin of an xLM network, loaded where arlm cannot be imported,
gives the xLM face's logits and greedy continuations. Runs under transformers 4 and 5."""

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, GPTNeoXForCausalLM, LlamaForCausalLM, PreTrainedTokenizerFast

from arlm import RotaryTransformerARLMModel
from arlm.export.exporter import choose_architecture, export_checkpoint_to_hf, xlm_to_hf
from arlm.model_arlm import XLM_MODEL_TARGET
from arlm.export.native import native_blocker, to_native

from tests.hf_without_arlm import greedy_reference, load_without_arlm

WORDS = [str(i) for i in range(50)]
SPECIALS = {"pad_token": "[PAD]", "bos_token": "[BOS]", "eos_token": "[EOS]", "unk_token": "[UNK]"}
BASE = dict(d_model=32, num_layers=2, nhead=4, dropout=0.0, rotary_emb_dim=4, max_length=64, padding_idx=0)
NEOX_GQA = dict(num_kv_heads=2, activation="gelu")
LLAMA = dict(norm="rmsnorm", activation="swiglu", bias=False, num_kv_heads=2, rotary_emb_dim=8)
PROMPTS = ["3 4 5", "7", "10 11 12 13 14 15"]


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate([*SPECIALS.values(), *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIALS)


def xlm_model(vocab_size: int, **overrides) -> RotaryTransformerARLMModel:
    torch.manual_seed(0)
    model = RotaryTransformerARLMModel(num_embeddings=vocab_size, **{**BASE, **overrides}).eval()
    with torch.no_grad():  # make the continuations depend on the prompt, not on one dominant logit
        model.lm_head.weight.mul_(20.0)
    return model


@pytest.mark.parametrize(
    "overrides, native_class",
    [({}, GPTNeoXForCausalLM), (NEOX_GQA, GPTNeoXForCausalLM), (LLAMA, LlamaForCausalLM)],
    ids=["gpt_neox", "gpt_neox_gqa_gelu", "llama_gqa"],
)
def test_native_twin_has_the_same_logits_and_greedy_generation(overrides, native_class):
    arlow = xlm_to_hf(xlm_model(54, **overrides))
    native = to_native(arlow)
    assert type(native) is native_class
    ids = torch.randint(4, 54, (3, 20), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0
    mask[2, :15] = 0
    with torch.no_grad():
        torch.testing.assert_close(native(ids).logits, arlow(ids).logits, atol=1e-5, rtol=0)
        kwargs = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
        assert torch.equal(native.generate(ids, **kwargs), arlow.generate(ids, **kwargs))


def test_gpt_neox_config_states_the_mapping():
    native = to_native(xlm_to_hf(xlm_model(54, **NEOX_GQA)))
    config = native.config
    assert config.use_parallel_residual is False and config.hidden_act == "gelu"
    rotary_pct = getattr(config, "rotary_pct", None) or config.rope_parameters["partial_rotary_factor"]
    assert rotary_pct == 4 / 8 and int(8 * rotary_pct) == 4
    qkv = native.gpt_neox.layers[0].attention.query_key_value.weight
    arlow_attn = xlm_model(54, **NEOX_GQA).model.layers[0].self_attn
    per_head = qkv.view(4, 3, 8, 32)  # head h rows: [q_h | k_h | v_h]
    assert torch.equal(per_head[1, 0], arlow_attn.q_proj.weight[8:16])
    assert torch.equal(per_head[1, 1], arlow_attn.k_proj.weight[0:8])  # heads 0, 1 share kv head 0
    assert torch.equal(per_head[2, 2], arlow_attn.v_proj.weight[8:16])


@pytest.mark.parametrize(
    "overrides, reason",
    [
        (dict(final_layer_without_normalization=True), "no final norm"),
        (dict(norm="rmsnorm"), "RMSNorm with a plain 'relu' MLP"),
        (dict(activation="swiglu"), "LayerNorm with a gated"),
        (dict(activation="silu"), "GPT-NeoX is exported for activations"),
        (dict(norm="rmsnorm", activation="swiglu", rotary_emb_dim=4), "Llama rotates the whole head"),
    ],
)
def test_networks_without_a_native_twin_stay_arlow_and_say_why(overrides, reason):
    arlow = xlm_to_hf(xlm_model(54, **overrides))
    assert reason in native_blocker(arlow.config)
    assert choose_architecture(arlow, "auto") is arlow
    with pytest.raises(ValueError, match=f"no exact native transformers twin because .*{reason}"):
        choose_architecture(arlow, "native")


@pytest.mark.parametrize(
    "overrides, architecture",
    [({}, "auto"), (dict(LLAMA, tie_word_embeddings=True), "auto"), (NEOX_GQA, "arlow")],
    ids=["gpt_neox", "llama_tied", "arlow_remote_code"],
)
def test_export_loads_without_arlm_through_auto_classes_and_pipeline(tmp_path, overrides, architecture):
    tokenizer = word_tokenizer()
    xlm = xlm_model(len(tokenizer), **overrides)
    kwargs = {"_target_": XLM_MODEL_TARGET, "num_embeddings": len(tokenizer), **BASE, **overrides}
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in xlm.state_dict().items()},
         "hyper_parameters": {"model": kwargs}},
        tmp_path / "last.ckpt",
    )
    export_checkpoint_to_hf(tmp_path / "last.ckpt", tmp_path / "hf", tokenizer=tokenizer, architecture=architecture)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    remote_code = architecture == "arlow"
    assert config["model_type"] == ("arlowgpt" if remote_code else config["model_type"])
    assert config["model_type"] in ("gpt_neox", "llama", "arlowgpt") and ("auto_map" in config) == remote_code
    ids = torch.randint(4, len(tokenizer), (2, 12), generator=torch.Generator().manual_seed(2))
    result = load_without_arlm(tmp_path / "hf", tmp_path / "child", ids, PROMPTS, new_tokens=6, trust_remote_code=remote_code)

    assert result["model_class"] == config["architectures"][0] and result["model_dtype"] == "torch.float32"
    assert result["padding_side"] == "left" and result["vocab_size"] == len(tokenizer)
    assert result["specials"] == {"pad_token": "[PAD]", "bos_token": "[BOS]", "eos_token": "[EOS]"}
    with torch.no_grad():
        torch.testing.assert_close(result["logits"], xlm(ids), atol=1e-5, rtol=0)
    mask = result["attention_mask"]
    assert (mask == 0).any() and (mask[:, -1] == 1).all()  # a left-padded batch
    prompt_ids = [tokenizer.encode(p) for p in PROMPTS]
    expected = greedy_reference(xlm, prompt_ids, 6, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert result["generated"][:, mask.shape[1]:].tolist() == expected
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "hf")
    # Every way of reading the text gives the same words, separated by single spaces as in the
    # data: each decoded text starts with one space, so the prompt plus the decoded continuation
    # (the pipeline's full text on transformers 5) reads right, as the full decode does on 4.x.
    expected_texts = [reloaded.decode(c, skip_special_tokens=True) for c in expected]
    assert all(t.startswith(" ") and "  " not in t for t in expected_texts)
    assert result["pipeline_texts"] == result["batch_decoded"] == result["decoded"] == expected_texts
    assert result["pipeline_full_texts"] == [p + t for p, t in zip(PROMPTS, expected_texts)]
    for prompt, continuation, full in zip(PROMPTS, expected, result["pipeline_full_texts"]):
        words = [reloaded.convert_ids_to_tokens(i) for i in continuation if i not in reloaded.all_special_ids]
        assert full.split(" ") == prompt.split(" ") + words
