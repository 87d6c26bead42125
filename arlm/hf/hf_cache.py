"""The decoder's :class:`~arlm.network.kv_cache.KVCache` view of a ``transformers`` ``Cache``, 4.x and 5.x."""

from typing import Optional, Tuple

import torch
from torch import Tensor
from transformers.cache_utils import Cache


class HFCacheView:
    """``cache`` as the decoder sees it, for one forward.

    The slots of the new tokens are ``cache_position`` when the caller gives them (``generate``
    does), else they follow ``cache.get_seq_length()``. A preallocated (``is_compileable``)
    cache returns all its slots, read through ``get_max_cache_shape()`` (transformers 4) or
    ``get_max_length()`` (transformers 5).
    """

    def __init__(self, cache: Cache, cache_position: Optional[Tensor] = None):
        self.cache = cache
        self.cache_position = cache_position
        self.preallocated = bool(cache.is_compileable)

    def slots(self, num_new: int, device: torch.device) -> Tensor:
        if self.cache_position is not None:
            return self.cache_position
        past = self.cache.get_seq_length()  # a tensor for a preallocated cache in transformers 5.24
        if isinstance(past, Tensor):
            return past.to(device) + torch.arange(num_new, device=device)
        return torch.arange(past, past + num_new, device=device)

    def key_length(self, num_new: int) -> int:
        if not self.preallocated:
            return self.cache.get_seq_length() + num_new
        if hasattr(self.cache, "get_max_cache_shape"):
            return self.cache.get_max_cache_shape()
        return self.cache.get_max_length(0)

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, slots: Tensor) -> Tuple[Tensor, Tensor]:
        return self.cache.update(key_states, value_states, layer_idx, {"cache_position": slots})
