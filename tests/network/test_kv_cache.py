import pytest
import torch

from arlm.network.kv_cache import DynamicKVCache, StaticKVCache
from arlm.model_arlm import RotaryTransformerARLMModel
from tests.conftest import TINY_MODEL_KWARGS, VOCAB_SIZE

B, KV, DH = 2, 2, 4


def kv(seq, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, KV, seq, DH, generator=g), torch.randn(B, KV, seq, DH, generator=g)


def test_dynamic_cache_concatenates_per_layer():
    cache = DynamicKVCache()
    assert cache.get_seq_length() == 0 and not cache.preallocated
    assert cache.slots(3, torch.device("cpu")).tolist() == [0, 1, 2] and cache.key_length(3) == 3
    (k0, v0), (k1, v1) = kv(3, 0), kv(1, 1)
    for layer in (0, 1):
        cache.update(k0, v0, layer)
    k, v = cache.update(k1, v1, 0)
    assert torch.equal(k, torch.cat([k0, k1], 2)) and torch.equal(v, torch.cat([v0, v1], 2))
    assert cache.get_seq_length(0) == 4 and cache.get_seq_length(1) == 3
    assert cache.slots(2, torch.device("cpu")).tolist() == [4, 5] and cache.key_length(2) == 6


def test_dynamic_cache_matches_concatenation_across_buffer_growth():
    cache = DynamicKVCache()
    chunks = [kv(seq, seed) for seed, seq in enumerate([3, 1, 1, 4, 1, 1, 1, 9, 1])]
    for k_new, v_new in chunks:
        k, v = cache.update(k_new, v_new, 0)
    assert torch.equal(k, torch.cat([c[0] for c in chunks], 2))
    assert torch.equal(v, torch.cat([c[1] for c in chunks], 2))
    assert cache.get_seq_length() == 22


def test_dynamic_cache_rejects_a_skipped_layer():
    with pytest.raises(ValueError, match="layer 1 updated before layer 0"):
        DynamicKVCache().update(*kv(1, 0), layer_idx=1)


def fill(cache, chunks, layers):
    """Store each (keys, values) chunk in every layer, as one forward per chunk does."""
    for k_new, v_new in chunks:
        slots = cache.slots(k_new.shape[2], k_new.device)
        for layer in range(layers):
            k, v = cache.update(k_new, v_new, layer, slots)
    return k, v


def test_static_cache_writes_in_place_and_returns_the_whole_buffer():
    cache = StaticKVCache(num_layers=2, batch_size=B, num_kv_heads=KV, max_length=6, head_dim=DH)
    buffer = cache.keys[1]
    (k0, v0), (k1, v1) = kv(3, 0), kv(1, 1)
    k, v = fill(cache, [(k0, v0), (k1, v1)], layers=2)
    assert k is buffer and k.shape == (B, KV, 6, DH)
    assert torch.equal(k[:, :, :4], torch.cat([k0, k1], 2))
    assert torch.equal(v[:, :, :4], torch.cat([v0, v1], 2))
    assert (k[:, :, 4:] == 0).all()
    assert int(cache.written) == 4 and cache.preallocated and cache.key_length(1) == 6
    assert cache.slots(2, torch.device("cpu")).tolist() == [4, 5]


def test_static_cache_overflow_raises():
    cache = StaticKVCache(num_layers=1, batch_size=B, num_kv_heads=KV, max_length=3, head_dim=DH)
    fill(cache, [kv(2, 0)], layers=1)
    with pytest.raises(ValueError, match="overflow: 2 slots written \\+ 2 new > max_length 3"):
        cache.slots(2, torch.device("cpu"))


def test_static_cache_rejects_non_positive_sizes():
    with pytest.raises(ValueError, match="max_length must be an integer >= 1, got 0"):
        StaticKVCache(num_layers=1, batch_size=1, num_kv_heads=1, max_length=0, head_dim=4)


@pytest.fixture
def gqa_model():
    torch.manual_seed(0)
    kwargs = dict(TINY_MODEL_KWARGS, num_layers=2, nhead=4, num_kv_heads=2, rotary_emb_dim=4)
    return RotaryTransformerARLMModel(**kwargs).eval()


def left_padded_batch():
    ids = torch.randint(7, VOCAB_SIZE, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    mask[1, :1] = 0
    return ids.masked_fill(mask == 0, 0), mask


def new_cache(kind, model, width):
    return DynamicKVCache() if kind == "dynamic" else StaticKVCache.for_decoder(model.config, 3, width)


@pytest.mark.parametrize("kind", ["dynamic", "static"])
@pytest.mark.parametrize("mask_width", ["growing", "whole"])
def test_prefill_then_steps_match_the_full_forward(gqa_model, kind, mask_width):
    """Logits of a prefill of 4 tokens plus 3 one-token steps equal one forward over all 7, with
    only the padding mask given: the decoder derives positions and the causal mask itself,
    whether the mask grows with the tokens (transformers' convention) or covers them all."""
    ids, mask = left_padded_batch()
    full = gqa_model(ids, attention_mask=mask)
    real = mask.bool()[:, :, None]
    width = ids.shape[1]
    cache = new_cache(kind, gqa_model, width)
    step_mask = (lambda t: mask[:, :t]) if mask_width == "growing" else (lambda t: mask)
    logits = [gqa_model(ids[:, :4], step_mask(4), cache=cache)]
    for t in range(4, width):
        logits.append(gqa_model(ids[:, t : t + 1], step_mask(t + 1), cache=cache))
    stepped = torch.cat(logits, dim=1)
    assert torch.allclose(stepped * real, full * real, atol=1e-5)


def test_cache_inputs_are_checked(gqa_model):
    cache = DynamicKVCache()
    ids = torch.full((1, 2), 9)
    gqa_model(ids, attention_mask=torch.ones(1, 2, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, keys\)=\(1, 4\)"):
        gqa_model(ids, attention_mask=torch.ones(1, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="preallocated KV cache of 65 slots exceeds max_length 64"):
        gqa_model(ids, cache=StaticKVCache.for_decoder(gqa_model.config, 1, 65))
