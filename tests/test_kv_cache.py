import pytest
import torch

from arlm.kv_cache import DynamicKVCache, StaticKVCache
from arlm.model_arlm import RotaryTransformerARLMModel
from arlm.rope import positions_from_padding_mask
from tests.conftest import TINY_MODEL_KWARGS, VOCAB_SIZE

B, KV, DH = 2, 2, 4


def kv(seq, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, KV, seq, DH, generator=g), torch.randn(B, KV, seq, DH, generator=g)


def test_dynamic_cache_concatenates_per_layer():
    cache = DynamicKVCache()
    assert cache.get_seq_length() == 0 and cache.get_max_cache_shape() == -1
    (k0, v0), (k1, v1) = kv(3, 0), kv(1, 1)
    for layer in (0, 1):
        cache.update(k0, v0, layer)
    k, v = cache.update(k1, v1, 0)
    assert torch.equal(k, torch.cat([k0, k1], 2)) and torch.equal(v, torch.cat([v0, v1], 2))
    assert cache.get_seq_length(0) == 4 and cache.get_seq_length(1) == 3


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


def test_static_cache_writes_in_place_and_returns_the_whole_buffer():
    cache = StaticKVCache(num_layers=2, batch_size=B, num_kv_heads=KV, max_length=6, head_dim=DH)
    buffer = cache.keys[0]
    (k0, v0), (k1, v1) = kv(3, 0), kv(1, 1)
    cache.update(k0, v0, 0)
    k, v = cache.update(k1, v1, 0)
    assert k is buffer and k.shape == (B, KV, 6, DH)
    assert torch.equal(k[:, :, :4], torch.cat([k0, k1], 2))
    assert torch.equal(v[:, :, :4], torch.cat([v0, v1], 2))
    assert (k[:, :, 4:] == 0).all()
    assert int(cache.get_seq_length(0)) == 4 and int(cache.get_seq_length(1)) == 0
    assert cache.get_max_cache_shape() == 6


def test_static_cache_overflow_raises():
    cache = StaticKVCache(num_layers=1, batch_size=B, num_kv_heads=KV, max_length=3, head_dim=DH)
    cache.update(*kv(2, 0), layer_idx=0)
    with pytest.raises(ValueError, match="overflow at layer 0: 2 slots written \\+ 2 new > max_length 3"):
        cache.update(*kv(2, 1), layer_idx=0)


def test_static_cache_rejects_non_positive_sizes():
    with pytest.raises(ValueError, match="max_length must be a positive integer, got 0"):
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


def causal_padding_mask(mask, key_len):
    """(B, L, key_len): causal among the first L keys, padding hidden, later keys hidden."""
    L = mask.shape[1]
    m = torch.ones(L, L, dtype=torch.bool).tril()[None] & mask.bool()[:, None, :]
    return torch.nn.functional.pad(m, (0, key_len - L), value=False)


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_prefill_then_steps_match_the_full_forward(gqa_model, kind):
    """Logits of a prefill of 4 tokens plus 3 one-token steps equal one forward over all 7."""
    ids, mask = left_padded_batch()
    positions = positions_from_padding_mask(mask)
    full = gqa_model(ids, attention_mask=mask, positions=positions)
    real = mask.bool()[:, :, None]
    width = ids.shape[1]
    if kind == "dynamic":
        cache, key_len = DynamicKVCache(), None
    else:
        cache, key_len = StaticKVCache.for_decoder(gqa_model.config, 3, width), width
    prefill_mask = causal_padding_mask(mask[:, :4], key_len or 4)
    logits = [gqa_model(ids[:, :4], prefill_mask, positions[:, :4], cache=cache)]
    for t in range(4, width):
        step_mask = torch.nn.functional.pad(mask[:, : t + 1].bool(), (0, (key_len or t + 1) - t - 1))
        logits.append(gqa_model(ids[:, t : t + 1], step_mask[:, None], positions[:, t : t + 1], cache=cache))
    stepped = torch.cat(logits, dim=1)
    assert torch.allclose(stepped * real, full * real, atol=1e-5)


def test_static_cache_needs_explicit_positions_and_a_3d_mask(gqa_model):
    cache = StaticKVCache.for_decoder(gqa_model.config, 1, 8)
    ids = torch.full((1, 2), 9)
    with pytest.raises(ValueError, match="preallocated KV cache returns all 8 of its slots"):
        gqa_model(ids, attention_mask=torch.ones(1, 2, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        gqa_model(ids, causal_padding_mask(torch.ones(1, 2), 2), torch.arange(2)[None], cache=cache)
