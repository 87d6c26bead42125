"""Sizes that cannot fit in this machine's memory are refused before anything is allocated, naming
the setting, the estimate and the limit (before: an allocator error naming no key, or the OOM killer)."""

import time

import pytest
import torch

from arlm.hf.configuration_arlow import ArlowConfig
from arlm.model_arlm import RotaryTransformerARLMModel
from arlm.network.kv_cache import StaticKVCache
from arlm.network.memory_budget import MemoryBudgetError, host_memory_bytes, kv_cache_bytes

TINY = dict(num_embeddings=30, d_model=32, num_layers=1, nhead=2, rotary_emb_dim=16)


def test_host_memory_is_known_on_linux():
    assert host_memory_bytes() > 2**28


def test_parameter_count_matches_a_built_model():
    model = RotaryTransformerARLMModel(**TINY, bias=False)
    weights = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2)
    norms = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 1)
    assert model.config.parameter_count == weights + norms


@pytest.mark.parametrize(
    "override, key",
    [({"max_length": 10**9}, "max_length=1000000000"), ({"d_model": 2**17}, "d_model=131072"),
     ({"num_embeddings": 10**10}, "num_embeddings=10000000000"), ({"num_layers": 10**6}, "num_layers=1000000")],
)
def test_a_model_too_big_for_memory_is_refused_before_allocating(override, key):
    start = time.perf_counter()
    with pytest.raises(MemoryBudgetError, match=r"would take about .* more than the .* of cpu memory on this machine. Fix:") as caught:
        RotaryTransformerARLMModel(**{**TINY, **override})
    assert key in str(caught.value)
    assert time.perf_counter() - start < 5, "it allocated before refusing"


def test_the_hf_face_names_its_own_argument():
    with pytest.raises(MemoryBudgetError, match="ArlowConfig.max_position_embeddings=1000000000"):
        from arlm.hf.modeling_arlow import ArlowForCausalLM

        ArlowForCausalLM(ArlowConfig(vocab_size=30, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=10**9))


def test_a_model_on_the_meta_device_is_not_checked():
    with torch.device("meta"):
        model = RotaryTransformerARLMModel(**{**TINY, "max_length": 10**9})
    assert model.model.rotary_emb.cos.device.type == "meta"


def test_a_static_cache_of_1e8_slots_is_refused_naming_max_length():
    assert kv_cache_bytes(2, 4, 2, 10**8, 16, 4) == 2 * 2 * 4 * 2 * 10**8 * 16 * 4
    with pytest.raises(MemoryBudgetError, match=r"static KV cache of max_length=100000000 slots .* batch_size=4"):
        StaticKVCache(2, 4, 2, 10**8, 16)
