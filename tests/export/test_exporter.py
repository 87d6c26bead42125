"""xLM checkpoint -> Hugging Face directory: same logits in both faces, clear errors otherwise."""

import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPTNeoXForCausalLM,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from arlm import ArlowConfig, ArlowForCausalLM, RotaryTransformerARLMModel
from arlm.checkpoints.checks import copy_ema_weights
from arlm.export.exporter import export_checkpoint_to_hf, hf_tokenizer_from, xlm_to_hf
from arlm.model_arlm import XLM_MODEL_TARGET

from tests.conftest import TINY_MODEL_KWARGS, VOCAB_SIZE

XLM_KWARGS = dict(TINY_MODEL_KWARGS, num_layers=2, padding_idx=0, rotary_emb_dim=8)


def xlm_model(**overrides) -> RotaryTransformerARLMModel:
    torch.manual_seed(0)
    return RotaryTransformerARLMModel(**{**XLM_KWARGS, **overrides}).eval()


def lightning_checkpoint(model: RotaryTransformerARLMModel, kwargs: dict, ema=None) -> dict:
    """What xlm-core's Harness + EMA callback write: the model under ``model.``, the config under
    ``hyper_parameters`` (resolved under dummy resolvers: tokenizer-dependent values stay literal
    interpolations), torch_ema's state under ``ema``."""
    recorded = dict(kwargs, num_embeddings="${tokenizer:full_vocab_size}", padding_idx="${tokenizer:pad_token_id}")
    checkpoint = {
        "epoch": 0,
        "global_step": 3,
        "pytorch-lightning_version": "2.5.2",
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {"model": {"_target_": XLM_MODEL_TARGET, **recorded}, "block_size": 32},
    }
    if ema is not None:
        checkpoint["ema"] = ema.state_dict()
    return checkpoint


def ids_batch():
    return torch.randint(7, VOCAB_SIZE, (2, 16), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        dict(tie_word_embeddings=True, final_layer_without_normalization=True),
        dict(norm="rmsnorm", activation="swiglu", bias=False, num_kv_heads=1, rotary_emb_dim=16),
        dict(activation="gelu", rope_theta=500.0, dim_feedforward=48),
    ],
)
def test_xlm_model_and_hf_export_give_identical_logits(overrides):
    xlm = xlm_model(**overrides)
    hf = xlm_to_hf(xlm)
    assert hf.state_dict().keys() == xlm.state_dict().keys()
    ids = ids_batch()
    with torch.no_grad():
        assert torch.equal(xlm(ids), hf(ids).logits)


def test_export_lightning_checkpoint_round_trips_through_auto_classes(tmp_path, simple_tokenizer):
    xlm = xlm_model()
    path = tmp_path / "last.ckpt"
    torch.save(lightning_checkpoint(xlm, XLM_KWARGS), path)
    export_checkpoint_to_hf(path, tmp_path / "hf", tokenizer=simple_tokenizer, architecture="arlow")
    names = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert isinstance(hf, ArlowForCausalLM)
    assert hf.config.norm_type == "layernorm" and not hf.config.gated_mlp and hf.config.bias
    assert hf.config.rotary_dim == 8 and not hf.config.tie_word_embeddings
    assert (hf.config.pad_token_id, hf.config.eos_token_id) == (0, 3)
    ids = ids_batch()
    with torch.no_grad():
        assert torch.equal(xlm(ids), hf(ids).logits)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert isinstance(tokenizer, PreTrainedTokenizerFast) and tokenizer.padding_side == "left"
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.bos_token) == ("[PAD]", "[EOS]", "[BOS]")
    text = "3 4 5 [EOS]"
    assert tokenizer.encode(text) == simple_tokenizer.encode(text) == [10, 11, 12, 3]
    assert tokenizer.decode([10, 11, 12, 3]) == " " + text and len(tokenizer) == VOCAB_SIZE  # a space before each token


@pytest.mark.parametrize(
    "overrides, architecture",
    [
        ({}, GPTNeoXForCausalLM),
        (dict(num_kv_heads=1, activation="gelu", bias=False), GPTNeoXForCausalLM),
        (dict(norm="rmsnorm", activation="swiglu", bias=False, num_kv_heads=1, rotary_emb_dim=16), LlamaForCausalLM),
        (dict(final_layer_without_normalization=True), ArlowForCausalLM),
        (dict(norm="rmsnorm", activation="swiglu", rotary_emb_dim=8), ArlowForCausalLM),
    ],
)
def test_auto_export_writes_the_native_twin_when_exact(tmp_path, simple_tokenizer, overrides, architecture):
    kwargs = {**XLM_KWARGS, **overrides}
    xlm = xlm_model(**overrides)
    path = tmp_path / "last.ckpt"
    torch.save(lightning_checkpoint(xlm, kwargs), path)
    written = export_checkpoint_to_hf(path, tmp_path / "hf", tokenizer=simple_tokenizer)
    assert type(written) is architecture
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(loaded) is architecture
    ids = ids_batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, xlm(ids), atol=1e-5, rtol=0)
    if architecture is ArlowForCausalLM:
        with pytest.raises(ValueError, match="architecture='native': this network has no exact native"):
            export_checkpoint_to_hf(path, tmp_path / "native", simple_tokenizer, architecture="native")
        assert not (tmp_path / "native").exists()


def model_with_diverged_ema():
    """A model and its torch_ema tracker whose shadows differ from the model's current weights
    (the tracker was updated after every weight moved by 0.1, with decay 0.5)."""
    ExponentialMovingAverage = pytest.importorskip("torch_ema").ExponentialMovingAverage
    xlm = xlm_model()
    ema = ExponentialMovingAverage([p for p in xlm.parameters() if p.requires_grad], decay=0.5)
    with torch.no_grad():
        for p in xlm.parameters():
            p.add_(0.1)
    ema.update()
    return xlm, ema


def test_export_applies_ema_weights_by_default(tmp_path, simple_tokenizer):
    xlm, ema = model_with_diverged_ema()
    path = tmp_path / "ema.ckpt"
    torch.save(lightning_checkpoint(xlm, XLM_KWARGS, ema), path)
    with_ema = export_checkpoint_to_hf(path, tmp_path / "a", simple_tokenizer, architecture="arlow")
    without = export_checkpoint_to_hf(path, tmp_path / "b", simple_tokenizer, apply_ema=False, architecture="arlow")
    ema.copy_to()
    assert torch.equal(with_ema.lm_head.weight, xlm.lm_head.weight)
    assert not torch.equal(without.lm_head.weight, xlm.lm_head.weight)


def test_ema_weights_copy_into_the_model_or_a_module_holding_it():
    """What ``generate_arlm`` does to the Harness (the model's parent), checked against
    torch_ema's own ``copy_to``; a mismatched EMA state is refused with the fix."""
    xlm, ema = model_with_diverged_ema()
    state = ema.state_dict()
    harness_like = torch.nn.Module()
    harness_like.model = xlm_model()
    copy_ema_weights(harness_like, state, "run.ckpt", fix="use apply_ema=False")
    ema.copy_to()
    for ours, theirs in zip(harness_like.model.state_dict().values(), xlm.state_dict().values()):
        assert torch.equal(ours, theirs)
    short = dict(state, shadow_params=state["shadow_params"][:-1])
    with pytest.raises(ValueError, match=r"EMA weights of run.ckpt \(\d+ tensors\) do not match .* Fix: use apply_ema=False"):
        copy_ema_weights(harness_like, short, "run.ckpt", fix="use apply_ema=False")
    with pytest.raises(ValueError, match=r"run.ckpt has no EMA weights .* Fix: use apply_ema=False"):
        copy_ema_weights(harness_like, None, "run.ckpt", fix="use apply_ema=False")


def test_export_model_only_safetensors_needs_and_uses_model_config(tmp_path):
    xlm = xlm_model(tie_word_embeddings=False)
    path = tmp_path / "model.safetensors"
    save_file(xlm.state_dict(), str(path))
    with pytest.raises(ValueError, match="does not record its model configuration"):
        export_checkpoint_to_hf(path, tmp_path / "hf")
    hf = export_checkpoint_to_hf(
        path, tmp_path / "hf", model_config={"_target_": XLM_MODEL_TARGET, **XLM_KWARGS},
        architecture="arlow",
    )
    ids = ids_batch()
    with torch.no_grad():
        assert torch.equal(xlm(ids), hf(ids).logits)


def test_non_arlm_checkpoints_are_rejected(tmp_path, simple_tokenizer):
    xlm = xlm_model()
    other = lightning_checkpoint(xlm, XLM_KWARGS)
    other["hyper_parameters"]["model"]["_target_"] = "mdlm.model_mdlm.MDLMModel"
    torch.save(other, tmp_path / "mdlm.ckpt")
    with pytest.raises(ValueError, match="is not an arlm checkpoint: its model is 'mdlm.model_mdlm.MDLMModel'"):
        export_checkpoint_to_hf(tmp_path / "mdlm.ckpt", tmp_path / "out")
    renamed = lightning_checkpoint(xlm, XLM_KWARGS)
    renamed["state_dict"] = {k.replace("layers", "blocks"): v for k, v in renamed["state_dict"].items()}
    torch.save(renamed, tmp_path / "renamed.ckpt")
    with pytest.raises(ValueError, match="missing keys .*unexpected keys"):
        export_checkpoint_to_hf(tmp_path / "renamed.ckpt", tmp_path / "out", simple_tokenizer)
    torch.save([1, 2, 3], tmp_path / "list.ckpt")
    with pytest.raises(ValueError, match="holds a list, not a checkpoint dictionary"):
        export_checkpoint_to_hf(tmp_path / "list.ckpt", tmp_path / "out")
    with pytest.raises(ValueError, match="missing.ckpt does not exist or is not a file"):
        export_checkpoint_to_hf(tmp_path / "missing.ckpt", tmp_path / "out")
    torch.save(lightning_checkpoint(xlm, XLM_KWARGS), tmp_path / "no_ema.ckpt")
    with pytest.raises(ValueError, match="has no EMA weights"):
        export_checkpoint_to_hf(tmp_path / "no_ema.ckpt", tmp_path / "out", simple_tokenizer, apply_ema=True)
    with pytest.raises(ValueError, match=r"records model argument num_embeddings='\$\{tokenizer:full_vocab_size\}' unresolved"):
        export_checkpoint_to_hf(tmp_path / "no_ema.ckpt", tmp_path / "out")


def test_fast_tokenizer_conversion_keeps_ids_and_specials(tmp_path):
    from arlm.pretrain.tokenizer import train_arlow_tokenizer

    (tmp_path / "t.txt").write_text("some words to learn from\n" * 10)
    trained = train_arlow_tokenizer([tmp_path / "t.txt"], vocab_size=280)
    plain_fast = __import__("transformers").PreTrainedTokenizerFast(
        tokenizer_object=trained.backend_tokenizer, eos_token="</s>", pad_token="<pad>"
    )
    converted = hf_tokenizer_from(plain_fast)
    assert converted.encode("some words</s>") == trained.encode("some words</s>")
    assert converted.bos_token is None and converted.eos_token_id == trained.eos_token_id
    assert isinstance(ArlowConfig.from_decoder_config(xlm_model().config), ArlowConfig)
