"""Rotary position embeddings (RoPE), rotate-half convention as in HF Llama."""

from typing import Optional, Tuple

import torch
from jaxtyping import Float, Integer
from torch import Tensor, nn

from arlm.network.value_checks import is_int


class RotaryEmbedding(nn.Module):
    """cos/sin tables for RoPE over the first ``dim`` channels of every head.

    The tables are computed once in fp32 for positions ``[0, max_positions)`` and kept as
    non-persistent buffers named ``cos`` / ``sin`` (xlm-core drops ``rotary_emb.cos`` /
    ``rotary_emb.sin`` keys when it loads checkpoints, so they must not be in the state dict).
    """

    def __init__(self, dim: int, max_positions: int, theta: float = 10000.0):
        super().__init__()
        if not is_int(dim) or dim <= 0 or dim % 2:
            raise ValueError(f"rotary dim must be a positive even number, got {dim!r}")
        self.dim = dim
        self.max_positions = max_positions
        self.theta = theta
        cos, sin = self._tables()
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, device: Optional[torch.device] = None) -> Tuple[Tensor, Tensor]:
        """``(cos, sin)``, each ``(max_positions, dim)`` fp32, on ``device`` (default: torch's)."""
        f64 = dict(dtype=torch.float64, device=device)
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.dim, 2, **f64) / self.dim))
        angles = torch.outer(torch.arange(self.max_positions, **f64), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # (P, dim): rotate-half layout
        return angles.cos().float(), angles.sin().float()

    @torch.no_grad()
    def reset_tables(self) -> None:
        """Recompute ``cos`` / ``sin`` in place, on the buffers' device and dtype.

        Non-persistent buffers are not in any checkpoint, so a model built on the meta device
        and then materialised (``from_pretrained`` in transformers 5, ``low_cpu_mem_usage``,
        ``device_map``) holds uninitialised memory here until this runs.
        """
        if self.cos.device.type == "meta":
            return
        cos, sin = self._tables(torch.device("cpu"))
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    def forward(
        self, positions: Integer[Tensor, "batch_or_1 seq"], dtype: torch.dtype
    ) -> Tuple[Float[Tensor, "batch_or_1 seq dim"], Float[Tensor, "batch_or_1 seq dim"]]:
        """cos/sin at ``positions`` (each in ``[0, max_positions)``), cast to ``dtype``."""
        return self.cos[positions].to(dtype), self.sin[positions].to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary_pos_emb(
    q: Float[Tensor, "batch heads seq head_dim"],
    k: Float[Tensor, "batch kv_heads seq head_dim"],
    cos: Float[Tensor, "batch seq rot"],
    sin: Float[Tensor, "batch seq rot"],
    unsqueeze_dim: int = 1,
) -> Tuple[Tensor, Tensor]:
    """Rotate the first ``rot`` channels of ``q`` and ``k``; the remaining channels pass through.

    ``cos``/``sin`` get a heads axis inserted at ``unsqueeze_dim`` (1 for ``(B, H, L, D)``
    inputs, 2 for ``(B, L, H, D)``), matching HF's ``apply_rotary_pos_emb``.
    """
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    rot = cos.shape[-1]
    if rot == q.shape[-1]:
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    q_rot, q_pass = q[..., :rot], q[..., rot:]
    k_rot, k_pass = k[..., :rot], k[..., rot:]
    q_rot = q_rot * cos + rotate_half(q_rot) * sin
    k_rot = k_rot * cos + rotate_half(k_rot) * sin
    return torch.cat([q_rot, q_pass], dim=-1), torch.cat([k_rot, k_pass], dim=-1)
