"""The kernel choice of ``arlm.network.attention``: which kernel each shape gets, and that every
kernel computes the same attention (values and gradients) within float tolerance."""

import pytest
import torch
import torch.nn.functional as F

from arlm.network.attention import SHORT_SEQUENCE_MAX, attend, attend_short_causal, attention_kernel


def qkv(batch=3, heads=4, kv_heads=4, seq=11, head_dim=8, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    shapes = [(batch, heads, seq, head_dim), (batch, kv_heads, seq, head_dim), (batch, kv_heads, seq, head_dim)]
    return [torch.randn(s, generator=g, dtype=torch.float32).to(dtype).requires_grad_() for s in shapes]


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("seq", [1, 5, 44])
def test_short_causal_kernel_equals_sdpa_in_values_and_gradients(kv_heads, seq):
    q, k, v = qkv(kv_heads=kv_heads, seq=seq)
    grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    out = attend_short_causal(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv_heads != 4)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_short_causal_kernel_in_bfloat16_stays_close_to_fp32():
    q, k, v = qkv(dtype=torch.bfloat16, seq=44)
    out = attend_short_causal(q, k, v).float()
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(
    "args, kernel",
    [
        (("cpu", torch.float32, 44, 44, 16, False, True, False, "sdpa"), "short_causal"),
        (("cpu", torch.float32, SHORT_SEQUENCE_MAX, SHORT_SEQUENCE_MAX, 64, False, True, False, "sdpa"), "short_causal"),
        (("cpu", torch.float32, SHORT_SEQUENCE_MAX + 1, SHORT_SEQUENCE_MAX + 1, 16, False, True, False, "sdpa"), "sdpa"),
        (("cpu", torch.float32, 44, 44, 16, True, False, False, "sdpa"), "sdpa"),  # a padding mask
        (("cpu", torch.float32, 44, 44, 16, False, True, True, "sdpa"), "sdpa"),  # dropout
        (("cpu", torch.float32, 1, 45, 16, False, False, False, "sdpa"), "sdpa"),  # a decode step
        (("cuda", torch.bfloat16, 44, 44, 16, False, True, False, "sdpa"), "sdpa"),  # SDPA picks flash/cuDNN
        (("cuda", torch.bfloat16, 44, 44, 16, False, True, False, "flash_attn"), "sdpa"),  # package not installed
        (("cpu", torch.float32, 44, 44, 16, False, True, False, "eager"), "eager"),
    ],
)
def test_kernel_by_shape(args, kernel):
    assert attention_kernel(*args) == kernel


def test_the_choice_is_made_once_per_shape():
    from arlm.network.attention import _choose_kernel

    _choose_kernel.cache_clear()
    q, k, v = qkv(seq=7)
    for _ in range(3):
        attend(q, k, v, None, True, 0.0, "sdpa")
    info = _choose_kernel.cache_info()
    assert (info.misses, info.hits) == (1, 2)


@pytest.mark.parametrize("seq", [7, SHORT_SEQUENCE_MAX + 3])
def test_every_path_of_the_dispatch_agrees_with_eager(seq):
    q, k, v = qkv(kv_heads=2, seq=seq)
    dispatched = attend(q, k, v, None, True, 0.0, "sdpa")
    eager = attend(q, k, v, None, True, 0.0, "eager")
    torch.testing.assert_close(dispatched, eager, atol=1e-6, rtol=1e-5)


def test_short_causal_kernel_compiles_into_one_graph():
    torch._dynamo.reset()
    q, k, v = qkv(seq=9)
    explanation = torch._dynamo.explain(lambda q, k, v: attend(q, k, v, None, True, 0.0, "sdpa"))(q, k, v)
    assert explanation.graph_break_count == 0, explanation.break_reasons
