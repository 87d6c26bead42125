"""The decoder's :class:`~arlm.decoder.KVCache` view of a ``transformers`` ``Cache``, 4.x and 5.x."""

from typing import Optional, Tuple

from torch import Tensor
from transformers.cache_utils import Cache


class HFCacheView:
    """Forwards ``update`` / ``get_seq_length`` to ``cache``; ``get_max_cache_shape`` is -1 for a
    growing cache and the slot count of a preallocated (``is_compileable``) one, read through
    ``get_max_cache_shape()`` (transformers 4) or ``get_max_length()`` (transformers 5)."""

    def __init__(self, cache: Cache):
        self.cache = cache

    def update(
        self, key_states: Tensor, value_states: Tensor, layer_idx: int,
        cache_kwargs: Optional[dict] = None,
    ) -> Tuple[Tensor, Tensor]:
        return self.cache.update(key_states, value_states, layer_idx, cache_kwargs)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.cache.get_seq_length(layer_idx)

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        if not self.cache.is_compileable:
            return -1
        if hasattr(self.cache, "get_max_cache_shape"):
            return self.cache.get_max_cache_shape()
        return self.cache.get_max_length(layer_idx)
