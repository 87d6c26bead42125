"""ArlowConfig is data on every transformers version: a model larger than this machine is
configured and built on the meta device; transformers 5's ``rope_parameters`` give the RoPE base."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from arlm import ArlowConfig, ArlowForCausalLM

LLAMA_70B = dict(
    hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
    num_key_value_heads=8, vocab_size=128256,
)
TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2)


def test_a_model_larger_than_this_machine_builds_on_the_meta_device_in_bf16():
    config = ArlowConfig(**LLAMA_70B)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    assert isinstance(model, ArlowForCausalLM)
    assert model.lm_head.weight.device.type == "meta" and model.lm_head.weight.dtype == torch.bfloat16
    assert sum(p.numel() for p in model.parameters()) == config.to_decoder_config().parameter_count


@pytest.mark.parametrize("key", ["rope_parameters", "rope_scaling"])
def test_a_default_rope_setting_gives_the_base(tmp_path, key):
    """transformers 5 writes ``{"rope_type": "default", "rope_theta": X}`` and no ``rope_theta``."""
    ArlowConfig(**TINY).save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    written.pop("rope_theta")
    (tmp_path / "config.json").write_text(json.dumps({**written, key: {"rope_type": "default", "rope_theta": 500000.0}}))
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.rope_theta == 500000.0
    assert ArlowForCausalLM(config).model.config.rope_theta == 500000.0
    assert ArlowConfig(**TINY).rope_theta == 100000.0


@pytest.mark.parametrize("head_dim, refusal", [(16, None), (8, "ArlowConfig.head_dim=8 does not match")])
def test_head_dim_in_config_json_is_checked_not_an_attribute_error(tmp_path, head_dim, refusal):
    """Round 4, cryptic: ``head_dim`` in ``config.json`` (Llama writes it) gave ``AttributeError``,
    even at the value Arlow derives (hidden_size / num_attention_heads)."""
    ArlowConfig(**TINY).save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**written, "head_dim": head_dim}))
    if refusal is None:
        assert AutoConfig.from_pretrained(tmp_path).head_dim == 16
    else:
        with pytest.raises(ValueError, match=rf"{refusal} hidden_size=32 / num_attention_heads=2 = 16.*Fix: remove head_dim"):
            AutoConfig.from_pretrained(tmp_path)
