"""``DecoderConfig`` is data: a configuration of any size constructs at once, allocating and probing
nothing; memory is checked where the decoder is built, with the dtype and device of its weights."""

import time

import pytest
import torch

from arlm.hf.configuration_arlow import ArlowConfig
from arlm.model_arlm import RotaryTransformerARLMModel
from arlm.network import memory_budget
from arlm.network.config import DecoderConfig
from arlm.network.memory_budget import MemoryBudgetError

LLAMA_70B = dict(
    hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
    num_key_value_heads=8, vocab_size=128256,
)


def refuse_probing(*args, **kwargs):
    raise AssertionError("a configuration probed a device's memory")


def test_a_config_larger_than_this_machine_constructs_at_once_without_probing(monkeypatch):
    monkeypatch.setattr(memory_budget, "device_memory_bytes", refuse_probing)
    monkeypatch.setattr(torch.cuda, "mem_get_info", refuse_probing)
    start = time.perf_counter()
    config = ArlowConfig(**LLAMA_70B)
    decoder = config.to_decoder_config()
    assert time.perf_counter() - start < 0.5
    assert decoder.parameter_count > 60 * 10**9 and not torch.cuda.is_initialized()


@pytest.mark.parametrize("options", [
    {}, dict(bias=False), dict(norm="rmsnorm", activation="swiglu", bias=False, n_kv_heads=1),
    dict(tie_word_embeddings=True, final_norm=False), dict(cross_attention=True, cross_attention_dim=24),
    dict(norm="rmsnorm", activation="gelu", d_ff=40),
])
def test_parameter_count_is_what_a_built_model_holds(options):
    from arlm.hf.modeling_arlow import ArlowForCausalLM

    decoder = DecoderConfig(vocab_size=30, d_model=32, n_layers=2, n_heads=4, **options)
    arlow = ArlowForCausalLM(ArlowConfig.from_decoder_config(decoder))
    assert decoder.parameter_count == sum(p.numel() for p in arlow.parameters())


def test_the_decoder_checks_its_weights_at_the_dtype_it_is_built_in(monkeypatch):
    kwargs = dict(num_embeddings=1000, d_model=64, num_layers=2, nhead=4, rotary_emb_dim=16)
    weights = RotaryTransformerARLMModel(**kwargs).config.parameter_count
    monkeypatch.setattr(memory_budget, "host_memory_bytes", lambda: 3 * weights)
    with pytest.raises(MemoryBudgetError, match=r"the weights \(.* parameters from num_embeddings=1000"):
        RotaryTransformerARLMModel(**kwargs)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        assert RotaryTransformerARLMModel(**kwargs).lm_head.weight.dtype == torch.bfloat16
    finally:
        torch.set_default_dtype(previous)
    with torch.device("meta"):
        RotaryTransformerARLMModel(**{**kwargs, "num_embeddings": 10**9})


def test_a_config_takes_only_booleans_as_flags_and_known_attention_backends():
    with pytest.raises(ValueError, match=r"bias must be True or False, got 'no'"):
        DecoderConfig(vocab_size=30, d_model=32, n_layers=1, n_heads=2, bias="no")
    with pytest.raises(ValueError, match=r"attention_backend must be one of \('sdpa', 'eager', 'flash_attn'\), got 'xformers'"):
        DecoderConfig(vocab_size=30, d_model=32, n_layers=1, n_heads=2, attention_backend="xformers")


def test_the_hf_face_names_its_own_length_field_in_input_errors():
    from arlm.hf.modeling_arlow import ArlowForCausalLM

    config = ArlowConfig(vocab_size=30, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8)
    with pytest.raises(ValueError, match=r"sequence length 9 exceeds ArlowConfig.max_position_embeddings 8"):
        ArlowForCausalLM(config)(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_with_cuda_as_default_device_a_config_initialises_nothing_and_a_model_is_checked_there():
    import subprocess
    import sys

    code = (
        "import torch; torch.set_default_device('cuda'); from arlm.hf.configuration_arlow import ArlowConfig; "
        f"ArlowConfig(**{LLAMA_70B!r}); print(torch.cuda.is_initialized())"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
    with torch.device("cuda"), pytest.raises(MemoryBudgetError, match=r"the weights .* of cuda(:\d+)? memory on this machine"):
        RotaryTransformerARLMModel(num_embeddings=10**8, d_model=8192, num_layers=2, nhead=64, rotary_emb_dim=128)
