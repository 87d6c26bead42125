"""The one place that decides how attention runs, and the one builder of its mask and positions.

:func:`attend` picks a kernel once per shape (:func:`attention_kernel`, cached; decided from
shapes, dtype and device alone, never from tensor values, so it adds no host synchronisation and
compiles with ``fullgraph=True``):

- ``short_causal`` (:func:`attend_short_causal`): on the CPU, causal self-attention with no mask
  and no dropout over at most :data:`SHORT_SEQUENCE_MAX` tokens runs as ``baddbmm`` with an
  additive causal bias, softmax and ``bmm``. SDPA's CPU flash kernel works in query/key blocks
  and pays for them on short rows: at 64 x 4 heads x 44 tokens x 16 channels (STAR) forward and
  backward take about half its time; from 64 tokens on the flash kernel is faster (benchmarks).
- ``flash_attn``: the ``flash_attn`` package, when the model asked for it, it is installed, the
  tensors are fp16/bf16 on CUDA and no explicit mask is needed.
- ``eager``: :func:`attend_eager` (explicit softmax, which also returns the attention weights),
  when the model asked for it.
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` otherwise. On CUDA SDPA itself
  picks flash, memory-efficient or cuDNN attention by dtype, head size and mask (flash needs
  fp16/bf16 and no explicit mask), so the fast CUDA kernels stay eligible exactly when
  :func:`attention_inputs` returns no mask, which it does whenever causality alone is enough.

Every kernel computes the same function within float tolerance (tests/test_attention_kernels.py).
"""

import functools
import importlib.util
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Integer
from torch import Tensor

from arlm.network.config import ATTENTION_BACKENDS
from arlm.network.inputs import reads_values_for_free
from arlm.network.rope import RotaryEmbedding

if TYPE_CHECKING:
    from arlm.network.kv_cache import KVCache

SHORT_SEQUENCE_MAX = 48
"""Longest sequence that :func:`attend_short_causal` serves on the CPU: measured against SDPA's
flash kernel (fp32, forward + backward, 2,816 tokens a batch, head sizes 16-64, one thread), it is
faster up to 48 tokens and slower from 64 on."""

_FLASH_ATTN_INSTALLED = importlib.util.find_spec("flash_attn") is not None


def is_flash_attn_available() -> bool:
    """Whether the ``flash_attn`` package is installed (looked up once, at import). The name is
    the one transformers' remote-code loader recognises: the ``flash_attn`` import under an
    ``if is_flash_attn_available()`` is not required of an environment loading an Arlow export."""
    return _FLASH_ATTN_INSTALLED


def resolve_attention_backend(requested: str) -> str:
    """Return the backend to use; ``flash_attn`` falls back to SDPA (with a warning) if missing."""
    if requested not in ATTENTION_BACKENDS:
        raise ValueError(
            f"attention backend must be one of {ATTENTION_BACKENDS}, got {requested!r}"
        )
    if requested == "flash_attn" and not is_flash_attn_available():
        warnings.warn(
            "flash_attn was requested but is not installed; using torch SDPA instead "
            "(pip install 'arlm[flash]' on a CUDA machine to enable it).",
            stacklevel=3,
        )
        return "sdpa"
    return requested


@dataclass(frozen=True)
class AttentionInputs:
    """What every decoder layer of one forward shares, built once by :func:`attention_inputs`.

    Attributes:
        cos, sin: RoPE tables at the new tokens' positions, in the activations' dtype.
        mask: SDPA's boolean mask (True = may attend), or ``None`` when causality alone is enough.
        is_causal: SDPA's ``is_causal`` (top-left aligned causal mask, used when ``mask`` is None).
        slots: the index of each new token in the sequence fed so far (its cache slot).
        encoder_states: the keys/values of cross-attention, or ``None`` (the blocks are skipped).
        encoder_mask: their key padding (True = real), broadcast to ``(B, 1, 1, enc_seq)``.
        need_weights: layers return their self-attention weights (computed by :func:`attend_eager`).
    """

    cos: Float[Tensor, "batch_or_1 q_len rot"]
    sin: Float[Tensor, "batch_or_1 q_len rot"]
    mask: Optional[Bool[Tensor, "batch_or_1 1 q_len keys"]]
    is_causal: bool
    slots: Integer[Tensor, " q_len"]
    encoder_states: Optional[Float[Tensor, "batch enc_seq enc_dim"]] = None
    encoder_mask: Optional[Bool[Tensor, "batch 1 1 enc_seq"]] = None
    need_weights: bool = False


def attention_inputs(
    rotary: RotaryEmbedding,
    hidden: Float[Tensor, "batch q_len d_model"],
    attention_mask: Optional[Tensor] = None,
    positions: Optional[Integer[Tensor, "batch q_len"]] = None,
    cache: Optional["KVCache"] = None,
    encoder_hidden_states: Optional[Float[Tensor, "batch enc_seq enc_dim"]] = None,
    encoder_attention_mask: Optional[Tensor] = None,
    need_weights: bool = False,
) -> AttentionInputs:
    """RoPE tables, mask and cache slots of one forward, built once and shared by every layer.

    Args:
        rotary: the decoder's RoPE tables.
        hidden: the embedded new tokens (their number, dtype and device are read).
        attention_mask: ``None`` (no padding), ``(B, W)`` key padding (True/1 = real token) over
            the tokens fed so far (columns past the keys are ignored, missing ones count as
            padding), or ``(B, q_len, keys)`` used exactly as given (True = may attend).
        positions: explicit RoPE positions; by default ``cumsum(padding) - 1`` at the new tokens
            (a left-padded row is positioned as it would be alone), or their slots.
        cache: where the keys live (:class:`arlm.network.kv_cache.KVCache`): it gives the new
            tokens' slots and how many keys attention sees (``past + q_len``, or a preallocated
            cache's capacity, whose unwritten slots causality hides). ``None``: the keys are the
            new tokens.
        encoder_hidden_states, encoder_attention_mask: cross-attention's keys and their padding.
        need_weights: ask the layers for their attention weights.

    Causality is by slot: query ``i`` sees the keys ``<= slots[i]``. The mask is ``None``
    whenever causality alone is enough (no padding and no cache offset, or one new token over a
    growing cache), so SDPA's fast kernels stay eligible. A ``(B, W)`` mask that hides nothing is
    dropped when that is known for free (:func:`arlm.network.inputs.reads_values_for_free`):
    the result is the same, only the kernel differs.
    """
    q_len, device = hidden.shape[1], hidden.device
    slots = torch.arange(q_len, device=device) if cache is None else cache.slots(q_len, device)
    key_len = q_len if cache is None else cache.key_length(q_len)
    preallocated = cache is not None and cache.preallocated
    # A growing cache (or none) returns exactly past + new keys, so the host knows whether these
    # tokens start the sequence; a preallocated cache counts its written slots on the device.
    starts_sequence = not preallocated and key_len == q_len
    if attention_mask is not None and attention_mask.dim() == 3:
        positions = slots[None] if positions is None else positions
        mask, is_causal = attention_mask.bool()[:, None], False
    else:
        padding = None if attention_mask is None else _with_width(attention_mask.bool(), key_len)
        if starts_sequence and reads_values_for_free(padding) and bool(padding.all()):
            padding = None
        if positions is None:
            positions = slots[None] if padding is None else positions_from_padding_mask(padding).index_select(1, slots)
        mask, is_causal = _causal_mask(padding, slots, key_len, starts_sequence, preallocated)
    cos, sin = rotary(positions, hidden.dtype)
    encoder_mask = None
    if encoder_attention_mask is not None:
        encoder_mask = encoder_attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S_enc)
    return AttentionInputs(cos, sin, mask, is_causal, slots, encoder_hidden_states, encoder_mask, need_weights)


def _causal_mask(
    padding: Optional[Bool[Tensor, "batch keys"]],
    slots: Integer[Tensor, " q_len"],
    key_len: int,
    starts_sequence: bool,
    preallocated: bool,
) -> Tuple[Optional[Bool[Tensor, "batch_or_1 1 q_len keys"]], bool]:
    """SDPA's ``(mask, is_causal)``: query ``i`` sees the real keys ``<= slots[i]``.

    A padding query (left padding) would see no key at all, and some SDPA kernels (cuDNN's on
    recent GPUs) answer a fully masked row with NaN, which the next layer spreads to real tokens
    through ``0 * NaN``; so every query also sees its own slot. Real queries never see padding,
    so their outputs are unchanged, on every device.
    """
    q_len = slots.shape[0]
    if padding is None and not preallocated and (starts_sequence or q_len == 1):
        return None, starts_sequence and q_len > 1
    keys = torch.arange(key_len, device=slots.device)[None, :]
    visible = keys <= slots[:, None]  # (q_len, keys)
    if padding is None:
        return visible[None, None], False
    itself = keys == slots[:, None]
    return visible[None, None] & (padding[:, None, None, :] | itself[None, None]), False


def _with_width(padding: Tensor, width: int) -> Tensor:
    """``padding`` cut to ``width`` columns, or extended with False (padding) up to it."""
    if padding.shape[1] >= width:
        return padding[:, :width]
    return F.pad(padding, (0, width - padding.shape[1]), value=False)


def positions_from_padding_mask(
    attention_mask: Integer[Tensor, "batch seq"],
) -> Integer[Tensor, "batch seq"]:
    """``cumsum(mask) - 1`` clamped at 0: real tokens count 0, 1, 2, ... and padding gets 0.

    A left-padded prompt therefore gets the same positions as the prompt alone.
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp_min(0)


def attend(
    q: Float[Tensor, "batch heads q_len head_dim"],
    k: Float[Tensor, "batch kv_heads kv_len head_dim"],
    v: Float[Tensor, "batch kv_heads kv_len head_dim"],
    mask: Optional[Bool[Tensor, "batch 1 q_len kv_len"]],
    is_causal: bool,
    dropout_p: float,
    backend: str,
) -> Float[Tensor, "batch heads q_len head_dim"]:
    """Scaled dot-product attention with grouped-query support (``kv_heads`` divides ``heads``),
    on the kernel :func:`attention_kernel` picks for these shapes.

    Rows whose mask is entirely False come out as zeros (SDPA's behaviour), never NaN.
    """
    kernel = attention_kernel(
        q.device.type, q.dtype, q.shape[2], k.shape[2], q.shape[3], mask is not None, is_causal, dropout_p > 0, backend,
    )
    if kernel == "eager":
        return attend_eager(q, k, v, mask, is_causal, dropout_p)[0]
    if kernel == "short_causal":
        return attend_short_causal(q, k, v)
    # The availability call, redundant with the kernel choice, is the guard transformers'
    # remote-code loader recognises: an Arlow export then loads where flash_attn is missing.
    if kernel == "flash_attn" and is_flash_attn_available():
        from flash_attn import flash_attn_func

        out = flash_attn_func(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
            dropout_p=dropout_p, causal=is_causal,
        )
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(
        q, k, v,
        attn_mask=mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        enable_gqa=q.shape[1] != k.shape[1],
    )


def attention_kernel(
    device_type: str, dtype: torch.dtype, q_len: int, kv_len: int, head_dim: int,
    masked: bool, is_causal: bool, dropout: bool, backend: str,
) -> str:
    """The kernel :func:`attend` runs for one shape: ``eager``, ``flash_attn``, ``short_causal``
    or ``sdpa`` (the module docstring says when). Decided once per shape and cached (a compiled
    graph decides once, while it is traced); reads no tensor."""
    args = (device_type, dtype, q_len, kv_len, head_dim, masked, is_causal, dropout, backend)
    if torch.compiler.is_compiling():
        return _choose_kernel.__wrapped__(*args)
    return _choose_kernel(*args)


@functools.lru_cache(maxsize=None)
def _choose_kernel(
    device_type: str, dtype: torch.dtype, q_len: int, kv_len: int, head_dim: int,
    masked: bool, is_causal: bool, dropout: bool, backend: str,
) -> str:
    if backend == "eager":
        return "eager"
    if (
        backend == "flash_attn" and is_flash_attn_available() and not masked and device_type == "cuda"
        and dtype in (torch.float16, torch.bfloat16)
    ):
        return "flash_attn"
    if device_type == "cpu" and is_causal and not masked and not dropout and q_len == kv_len <= SHORT_SEQUENCE_MAX:
        return "short_causal"
    return "sdpa"


def attend_short_causal(
    q: Float[Tensor, "batch heads seq head_dim"],
    k: Float[Tensor, "batch kv_heads seq head_dim"],
    v: Float[Tensor, "batch kv_heads seq head_dim"],
) -> Float[Tensor, "batch heads seq head_dim"]:
    """Causal attention without mask or dropout as three batched matrix products:
    ``softmax(q k^T / sqrt(d) + bias) v`` with ``bias`` 0 on and below the diagonal and ``-inf``
    above it (every row keeps its diagonal, so no row is empty). The fastest CPU kernel for
    short sequences (:data:`SHORT_SEQUENCE_MAX`); same result as SDPA within float tolerance."""
    B, H, L, D = q.shape
    group = H // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    bias = torch.full((L, L), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
    scores = torch.baddbmm(bias, q.reshape(B * H, L, D), k.reshape(B * H, L, D).transpose(1, 2), alpha=D**-0.5)
    if q.dtype in (torch.float16, torch.bfloat16):
        weights = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)  # fp32 sums, as SDPA's kernels
    else:
        weights = scores.softmax(dim=-1)
    return torch.bmm(weights, v.reshape(B * H, L, D)).view(B, H, L, D)


def attend_eager(
    q: Float[Tensor, "batch heads q_len head_dim"],
    k: Float[Tensor, "batch kv_heads kv_len head_dim"],
    v: Float[Tensor, "batch kv_heads kv_len head_dim"],
    mask: Optional[Bool[Tensor, "batch 1 q_len kv_len"]],
    is_causal: bool,
    dropout_p: float,
) -> Tuple[Float[Tensor, "batch heads q_len head_dim"], Float[Tensor, "batch heads q_len kv_len"]]:
    """:func:`attend` written out: ``softmax(q k^T / sqrt(d) + mask) v`` and the weights.

    Same contract as SDPA (``is_causal`` aligns the causal mask to the top-left corner, grouped
    k/v heads serve ``heads // kv_heads`` query heads each); fully masked rows give zero weights.
    """
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, L, S)
    L, S = scores.shape[-2:]
    if is_causal:
        causal = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        mask = causal if mask is None else mask & causal
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).nan_to_num(0.0).to(q.dtype)
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return dropped @ v, weights
