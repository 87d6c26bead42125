"""The one place that decides how attention runs, and the one builder of its mask and positions.

Attention goes through ``torch.nn.functional.scaled_dot_product_attention`` (SDPA) unless the
``flash_attn`` package is installed, the tensors are fp16/bf16 on CUDA, no explicit mask is
needed and the model asked for it; or through :func:`attend_eager` (explicit softmax, which also
returns the attention weights) for the ``eager`` backend. Any explicit mask rules out SDPA's
flash kernel on CUDA, so :func:`attention_inputs` returns no mask whenever causality alone is
enough.
"""

import importlib.util
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Integer
from torch import Tensor

ATTENTION_BACKENDS = ("sdpa", "eager", "flash_attn")

_FLASH_ATTN_INSTALLED = importlib.util.find_spec("flash_attn") is not None


def resolve_attention_backend(requested: str) -> str:
    """Return the backend to use; ``flash_attn`` falls back to SDPA (with a warning) if missing."""
    if requested not in ATTENTION_BACKENDS:
        raise ValueError(
            f"attention backend must be one of {ATTENTION_BACKENDS}, got {requested!r}"
        )
    if requested == "flash_attn" and not _FLASH_ATTN_INSTALLED:
        warnings.warn(
            "flash_attn was requested but is not installed; using torch SDPA instead "
            "(pip install 'arlm[flash]' on a CUDA machine to enable it).",
            stacklevel=3,
        )
        return "sdpa"
    return requested


@dataclass
class AttentionInputs:
    """What every layer of one forward shares: RoPE positions and SDPA's ``(mask, is_causal)``."""

    positions: Integer[Tensor, "batch_or_1 q_len"]
    mask: Optional[Bool[Tensor, "batch_or_1 1 q_len keys"]]
    is_causal: bool


def attention_inputs(
    attention_mask: Optional[Tensor],
    positions: Optional[Integer[Tensor, "batch q_len"]],
    slots: Integer[Tensor, " q_len"],
    key_len: int,
    past_len: Optional[int],
) -> AttentionInputs:
    """RoPE positions and the attention mask of one forward, built once and shared by every layer.

    Args:
        attention_mask: ``None`` (no padding), ``(B, W)`` key padding (True/1 = real token) over
            the tokens fed so far (columns past ``key_len`` are ignored, missing ones count as
            padding), or ``(B, q_len, key_len)`` used exactly as given (True = may attend).
        positions: explicit RoPE positions; by default ``cumsum(padding) - 1`` at the new tokens
            (a left-padded row is positioned as it would be alone), or their ``slots``.
        slots: the index of each new token in the sequence fed so far (its cache slot).
        key_len: the number of keys attention sees (``past + q_len``, or a preallocated cache's
            capacity, whose unwritten slots causality hides).
        past_len: tokens cached before this forward, when known on the host (growing caches);
            ``None`` for a preallocated cache.

    Causality is by slot: query ``i`` sees the keys ``<= slots[i]``. The mask is ``None``
    whenever causality alone is enough (no padding and no cache offset, or one new token over a
    growing cache), so SDPA's fast kernels stay eligible.
    """
    if attention_mask is not None and attention_mask.dim() == 3:
        return AttentionInputs(
            slots[None] if positions is None else positions, attention_mask.bool()[:, None], False
        )
    padding = None if attention_mask is None else _with_width(attention_mask.bool(), key_len)
    if positions is None:
        positions = slots[None] if padding is None else positions_from_padding_mask(padding).index_select(1, slots)
    q_len = slots.shape[0]
    if padding is None and past_len is not None and (past_len == 0 or q_len == 1):
        return AttentionInputs(positions, None, past_len == 0 and q_len > 1)
    visible = torch.arange(key_len, device=slots.device)[None, :] <= slots[:, None]  # (q_len, keys)
    mask = visible[None, None] if padding is None else visible[None, None] & padding[:, None, None, :]
    return AttentionInputs(positions, mask, False)


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
    """Scaled dot-product attention with grouped-query support (``kv_heads`` divides ``heads``).

    Rows whose mask is entirely False come out as zeros (SDPA's behaviour), never NaN.
    """
    if backend == "eager":
        return attend_eager(q, k, v, mask, is_causal, dropout_p)[0]
    if (
        backend == "flash_attn"
        and mask is None
        and q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
    ):
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
