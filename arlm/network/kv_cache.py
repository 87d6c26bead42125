"""Key/value caches for incremental decoding: objects passed to ``forward``, never owned by a model.

The decoder asks a cache three things (:class:`KVCache`): the slots this forward's tokens take
(``slots``), how many keys attention will see (``key_length``), and to store this forward's
keys/values (``update``). From them it derives RoPE positions and the attention mask itself
(:func:`arlm.network.attention.attention_inputs`); callers only pass token ids, the padding mask and
the cache.

- :class:`DynamicKVCache` grows with every update: the keys it returns are exactly the
  ``past + L`` tokens seen so far. Unbounded, and what eager decoding uses.
- :class:`StaticKVCache` preallocates ``max_length`` slots per layer and writes new keys/values in
  place. It returns the whole buffer at every step, so every decode step has the same shapes and
  a ``torch.compile``d step is reused instead of recompiled; its count of written slots is a
  tensor, read by no host code.
"""

from typing import List, Optional, Protocol, Tuple

import torch
from jaxtyping import Float, Integer
from torch import Tensor

from arlm.network.config import DecoderConfig
from arlm.network.memory_budget import check_fits, device_memory_bytes, kv_cache_bytes
from arlm.network.value_checks import check_int_at_least

CACHE_KINDS = ("dynamic", "static")


class KVCache(Protocol):
    """What :class:`arlm.network.decoder.DecoderStack` needs from a key/value cache
    (``arlm.hf.hf_cache.HFCacheView`` makes a transformers ``Cache`` one).

    ``preallocated``: True for a cache that returns all ``key_length`` slots from ``update`` (the
    unwritten ones hidden by causality) and counts its written slots on the device, so the host
    never knows how many tokens precede a forward; False for a growing cache, whose
    ``key_length(num_new) - num_new`` is exactly the number of tokens seen so far. The decoder
    reads it to choose the mask and the length checks.
    """

    preallocated: bool

    def slots(self, num_new: int, device: torch.device) -> Integer[Tensor, " num_new"]:
        """Slot of each of the next ``num_new`` tokens: ``past .. past + num_new - 1``."""

    def key_length(self, num_new: int) -> int:
        """Keys ``update`` returns after storing ``num_new`` more tokens."""

    def update(
        self, key_states: Tensor, value_states: Tensor, layer_idx: int, slots: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """Store this forward's keys/values of ``layer_idx`` at ``slots``; return every key/value."""


class DynamicKVCache:
    """Per-layer keys/values of every token seen so far; ``update`` returns exactly those.

    Stored in buffers with spare room along the sequence axis that double when full, so
    appending a token copies that token only (amortised), where ``torch.cat`` would copy the
    whole cache at every step. The returned keys/values are views of the buffers.
    """

    preallocated = False

    def __init__(self) -> None:
        self.keys: List[Tensor] = []
        self.values: List[Tensor] = []
        self.lengths: List[int] = []

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of cached tokens of ``layer_idx`` (padding included)."""
        return self.lengths[layer_idx] if layer_idx < len(self.lengths) else 0

    def slots(self, num_new: int, device: torch.device) -> Integer[Tensor, " num_new"]:
        past = self.get_seq_length()
        return torch.arange(past, past + num_new, device=device)

    def key_length(self, num_new: int) -> int:
        return self.get_seq_length() + num_new

    def update(
        self,
        key_states: Float[Tensor, "batch kv_heads seq head_dim"],
        value_states: Float[Tensor, "batch kv_heads seq head_dim"],
        layer_idx: int,
        slots: Optional[Tensor] = None,
    ) -> Tuple[Float[Tensor, "batch kv_heads total head_dim"], Float[Tensor, "batch kv_heads total head_dim"]]:
        """Append this step's keys/values of ``layer_idx`` (``slots`` are implied: they follow
        the cached ones); return all of them (``total = past + seq``)."""
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


def _with_length(t: Tensor, length: int) -> Tuple[int, ...]:
    return (t.shape[0], t.shape[1], length, t.shape[3])


def _grown(buffer: Tensor, used: int, capacity: int) -> Tensor:
    """A ``capacity``-slot buffer holding the first ``used`` slots of ``buffer``."""
    new = buffer.new_empty(_with_length(buffer, capacity))
    new[:, :, :used] = buffer[:, :, :used]
    return new


class StaticKVCache:
    """``max_length`` preallocated key/value slots per layer, filled in place from slot 0 on.

    The count of written slots is a long tensor advanced by the last layer's ``update``, so a
    compiled step reads and advances it without guarding on its value. Writing past
    ``max_length`` raises in eager mode; the count it checks against is kept on the host for
    that purpose and is not advanced inside a compiled step.
    """

    preallocated = True

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
        num_layers, batch_size, num_kv_heads, max_length, head_dim = (
            check_int_at_least(name, value, 1) for name, value in (
                ("num_layers", num_layers), ("batch_size", batch_size),
                ("num_kv_heads", num_kv_heads), ("max_length", max_length), ("head_dim", head_dim),
            )
        )
        check_fits(
            f"a static KV cache of max_length={max_length} slots (x batch_size={batch_size} x "
            f"num_layers={num_layers} x num_kv_heads={num_kv_heads} x head_dim={head_dim}, keys and values)",
            kv_cache_bytes(num_layers, batch_size, num_kv_heads, max_length, head_dim, torch.empty((), dtype=dtype).element_size()),
            device_memory_bytes(device), f"{torch.device(device) if device is not None else torch.get_default_device()} memory",
            "lower max_length (the prompt plus the tokens to generate) or the batch size, or use the dynamic cache",
        )
        shape = (batch_size, num_kv_heads, max_length, head_dim)
        self.max_length = max_length
        self.num_layers = num_layers
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.written = torch.zeros((), dtype=torch.long, device=device)
        self._written_on_host = 0
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

    def slots(self, num_new: int, device: torch.device) -> Integer[Tensor, " num_new"]:
        if not torch.compiler.is_compiling() and self._written_on_host + num_new > self.max_length:
            raise ValueError(
                f"static KV cache overflow: {self._written_on_host} slots written + {num_new} "
                f"new > max_length {self.max_length}"
            )
        return self._slot_offsets[:num_new] + self.written

    def key_length(self, num_new: int) -> int:
        return self.max_length

    def update(
        self,
        key_states: Float[Tensor, "batch kv_heads seq head_dim"],
        value_states: Float[Tensor, "batch kv_heads seq head_dim"],
        layer_idx: int,
        slots: Integer[Tensor, " seq"],
    ) -> Tuple[Float[Tensor, "batch kv_heads max_length head_dim"], Float[Tensor, "batch kv_heads max_length head_dim"]]:
        """Write the ``seq`` new keys/values of ``layer_idx`` at ``slots``; return the buffers."""
        self.keys[layer_idx].index_copy_(2, slots, key_states)
        self.values[layer_idx].index_copy_(2, slots, value_states)
        if layer_idx == self.num_layers - 1:
            self.written += key_states.shape[2]
            if not torch.compiler.is_compiling():
                self._written_on_host += key_states.shape[2]
        return self.keys[layer_idx], self.values[layer_idx]


def new_cache(
    kind: str, config: DecoderConfig, batch_size: int, max_length: int,
    dtype: torch.dtype, device: torch.device,
) -> KVCache:
    """A fresh cache of ``kind`` (:data:`CACHE_KINDS`) for ``batch_size`` rows of up to
    ``max_length`` tokens of a decoder built from ``config``."""
    if kind == "dynamic":
        return DynamicKVCache()
    if kind == "static":
        return StaticKVCache.for_decoder(config, batch_size, max_length, dtype, device)
    raise ValueError(f"cache must be one of {CACHE_KINDS}, got {kind!r}")
