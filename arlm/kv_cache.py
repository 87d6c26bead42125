"""Key/value caches for incremental decoding: objects passed to ``forward``, never owned by a model.

Both satisfy the decoder's :class:`arlm.decoder.KVCache` protocol (the same methods as HF's
``Cache``): ``update(k, v, layer_idx, cache_kwargs) -> (k_all, v_all)``, ``get_seq_length()``
and ``get_max_cache_shape()``.

- :class:`DynamicKVCache` grows with every update: the keys it returns are exactly the
  ``past + L`` tokens seen so far, so the decoder's default masks (``None`` or ``(B, past + L)``
  key padding) apply. Unbounded, and what eager decoding uses.
- :class:`StaticKVCache` preallocates ``max_length`` slots per layer and writes new keys/values in
  place. It returns the whole buffer (``S = max_length``) at every step, so every decode step has
  the same shapes and a ``torch.compile``d step is reused instead of recompiled. The caller passes
  explicit ``positions`` and a ``(B, L, max_length)`` mask whose unwritten slots are False.
"""

from typing import List, Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from arlm.decoder import DecoderConfig


class DynamicKVCache:
    """Per-layer keys/values of every token seen so far; ``update`` returns exactly those.

    Stored in buffers with spare room along the sequence axis that double when full, so
    appending a token copies that token only (amortised), where ``torch.cat`` would copy the
    whole cache at every step. The returned keys/values are views of the buffers.
    """

    def __init__(self) -> None:
        self.keys: List[Tensor] = []
        self.values: List[Tensor] = []
        self.lengths: List[int] = []

    def update(
        self,
        key_states: Float[Tensor, "batch kv_heads seq head_dim"],
        value_states: Float[Tensor, "batch kv_heads seq head_dim"],
        layer_idx: int,
        cache_kwargs: Optional[dict] = None,
    ) -> Tuple[Float[Tensor, "batch kv_heads total head_dim"], Float[Tensor, "batch kv_heads total head_dim"]]:
        """Append this step's keys/values of ``layer_idx``; return all of them (``total = past + seq``).

        ``cache_kwargs`` is accepted for HF compatibility and ignored.
        """
        if layer_idx > len(self.keys):
            raise ValueError(
                f"layer {layer_idx} updated before layer {len(self.keys)}; layers must be "
                f"cached in order on the first step"
            )
        if layer_idx == len(self.keys):
            self.keys.append(key_states.new_empty(_with_length(key_states, 0)))
            self.values.append(value_states.new_empty(_with_length(value_states, 0)))
            self.lengths.append(0)
        past, seq = self.lengths[layer_idx], key_states.shape[2]
        total = past + seq
        if total > self.keys[layer_idx].shape[2]:
            self.keys[layer_idx] = _grown(self.keys[layer_idx], past, 2 * total)
            self.values[layer_idx] = _grown(self.values[layer_idx], past, 2 * total)
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[:, :, past:total] = key_states
        values[:, :, past:total] = value_states
        self.lengths[layer_idx] = total
        return keys[:, :, :total], values[:, :, :total]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of cached tokens (padding included)."""
        return self.lengths[layer_idx] if layer_idx < len(self.lengths) else 0

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        """-1: the keys grow with every update."""
        return -1


def _with_length(t: Tensor, length: int) -> Tuple[int, ...]:
    return (t.shape[0], t.shape[1], length, t.shape[3])


def _grown(buffer: Tensor, used: int, capacity: int) -> Tensor:
    """A ``capacity``-slot buffer holding the first ``used`` slots of ``buffer``."""
    new = buffer.new_empty(_with_length(buffer, capacity))
    new[:, :, :used] = buffer[:, :, :used]
    return new


class StaticKVCache:
    """``max_length`` preallocated key/value slots per layer, filled in place from slot 0 on.

    Each layer keeps its own count of written slots as a long tensor (not a Python int), so a
    compiled step reads and advances it without guarding on its value. Writing past
    ``max_length`` raises (checked in eager mode).
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_kv_heads: int,
        max_length: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: Optional[torch.device] = None,
    ):
        for name, value in (
            ("num_layers", num_layers), ("batch_size", batch_size),
            ("num_kv_heads", num_kv_heads), ("max_length", max_length), ("head_dim", head_dim),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        shape = (batch_size, num_kv_heads, max_length, head_dim)
        self.max_length = max_length
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.lengths = torch.zeros(num_layers, dtype=torch.long, device=device)
        self._slot_offsets = torch.arange(max_length, device=device)

    @classmethod
    def for_decoder(
        cls,
        config: DecoderConfig,
        batch_size: int,
        max_length: int,
        dtype: torch.dtype = torch.float32,
        device: Optional[torch.device] = None,
    ) -> "StaticKVCache":
        """A cache shaped for every self-attention layer of a decoder built from ``config``."""
        return cls(
            config.n_layers, batch_size, config.n_kv_heads, max_length, config.head_dim,
            dtype, device,
        )

    def update(
        self,
        key_states: Float[Tensor, "batch kv_heads seq head_dim"],
        value_states: Float[Tensor, "batch kv_heads seq head_dim"],
        layer_idx: int,
        cache_kwargs: Optional[dict] = None,
    ) -> Tuple[Float[Tensor, "batch kv_heads max_length head_dim"], Float[Tensor, "batch kv_heads max_length head_dim"]]:
        """Write ``seq`` new slots of ``layer_idx`` after the ones already written; return the buffers.

        ``cache_kwargs`` is accepted for HF compatibility and ignored.
        """
        seq = key_states.shape[2]
        if not torch.compiler.is_compiling():
            written = int(self.lengths[layer_idx])
            if written + seq > self.max_length:
                raise ValueError(
                    f"static KV cache overflow at layer {layer_idx}: {written} slots written + "
                    f"{seq} new > max_length {self.max_length}"
                )
        slots = self._slot_offsets[:seq] + self.lengths[layer_idx]  # (seq,)
        self.keys[layer_idx].index_copy_(2, slots, key_states)
        self.values[layer_idx].index_copy_(2, slots, value_states)
        self.lengths[layer_idx] += seq
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> Tensor:
        """Slots written so far, as a 0-d long tensor (like HF's ``StaticCache``): a Python int
        would make a compiled step recompile whenever it changes."""
        return self.lengths[layer_idx].clone()

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        """The fixed key length every ``update`` returns."""
        return self.max_length
