"""The one place that decides how attention runs, and the one mask builder.

Attention goes through ``torch.nn.functional.scaled_dot_product_attention`` (SDPA) unless the
``flash_attn`` package is installed, the tensors are fp16/bf16 on CUDA, no explicit mask is
needed and the model asked for it; or through :func:`attend_eager` (explicit softmax, which also
returns the attention weights) for the ``eager`` backend. Any explicit mask rules out SDPA's flash kernel on CUDA, so
:func:`build_attention_mask` returns ``None`` whenever causality alone is enough.
"""

import importlib.util
import warnings
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
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


def build_attention_mask(
    attention_mask: Optional[Tensor], q_len: int, past_len: int, device: torch.device
) -> Tuple[Optional[Bool[Tensor, "batch 1 q_len kv_len"]], bool]:
    """Turn the user-facing mask into what SDPA takes: ``(mask or None, is_causal)``.

    ``attention_mask`` may be
      - ``None``: plain causal attention over ``past_len + q_len`` keys;
      - ``(B, past_len + q_len)`` key padding (True/1 = real token), combined with causality;
      - ``(B, q_len, past_len + q_len)`` used exactly as given (True = may attend).
    The result is ``None`` (with ``is_causal`` telling SDPA whether to apply its own causal
    mask) whenever no explicit mask is needed, so fast kernels stay eligible. Built once per
    forward and shared by every layer.
    """
    kv_len = past_len + q_len
    if attention_mask is not None and attention_mask.dim() == 3:
        return attention_mask.bool().unsqueeze(1), False
    if attention_mask is None:
        if past_len == 0:
            return None, q_len > 1
        if q_len == 1:  # one new token sees every cached key
            return None, False
    # Causal with an offset: query i (absolute position past_len + i) sees keys <= past_len + i.
    # Built only when required (cache offset with several new tokens, or key padding).
    key_idx = torch.arange(kv_len, device=device)
    query_idx = torch.arange(past_len, kv_len, device=device)
    causal = key_idx[None, :] <= query_idx[:, None]  # (q_len, kv_len)
    if attention_mask is None:
        return causal[None, None], False
    return causal[None, None] & attention_mask.bool()[:, None, None, :], False


def cache_slot_mask(
    key_padding: Tensor, cache_position: Tensor, num_slots: int
) -> Bool[Tensor, "batch q_len num_slots"]:
    """The ``(B, L, S)`` mask for a preallocated cache whose ``update`` returns all ``S`` slots.

    Query ``i`` (written to slot ``cache_position[i]``) sees the slots ``<= cache_position[i]``
    that ``key_padding`` (``(B, K)``, 1 = real token, ``K <= S``) marks real; the unwritten
    slots after it are hidden by causality.
    """
    slots = torch.arange(num_slots, device=cache_position.device)
    visible = slots[None, :] <= cache_position[:, None]  # (L, S)
    padding = torch.zeros((key_padding.shape[0], num_slots), dtype=torch.bool, device=key_padding.device)
    padding[:, : key_padding.shape[1]] = key_padding.bool()
    return visible[None] & padding[:, None, :]


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
