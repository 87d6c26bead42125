"""The decoder's input checks: bad input raises a ``ValueError`` naming the value, early.

Shapes, ranks and dtypes are known on the host and are always checked (under ``torch.compile``
they are guards, not graph breaks). Checks that read tensor values (token-id and position
ranges) would stall an accelerator until its queue drains, so they run only on CPU tensors in
eager mode; on an accelerator the batch is checked where it is built, on the CPU (the ARLM
collators check token ids against the tokenizer).
"""

from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

if TYPE_CHECKING:
    from arlm.network.config import DecoderConfig
    from arlm.network.kv_cache import KVCache


TOKEN_ID_DTYPES = (torch.int64, torch.int32)


def reads_values_for_free(tensor: Optional[Tensor]) -> bool:
    """True when reading ``tensor``'s values costs no device synchronisation: a CPU tensor, in
    eager mode."""
    return tensor is not None and tensor.device.type == "cpu" and not torch.compiler.is_compiling()


def check_token_ids(input_ids: Tensor, vocab_size: int, what: str = "the embedding size") -> None:
    """Raise ``ValueError`` naming the first id outside ``[0, vocab_size)``."""
    bad = (input_ids < 0) | (input_ids >= vocab_size)
    if bad.any():
        raise ValueError(
            f"token id {input_ids[bad][0].item()} is outside [0, {vocab_size}) ({what}); "
            f"check the tokenizer matches the model"
        )


def _check_input_ranks(input_ids: Optional[Tensor], inputs_embeds: Optional[Tensor]) -> None:
    """Exactly one of ``input_ids`` (integer, ``(batch, seq)``) and ``inputs_embeds``
    (``(batch, seq, d_model)``), else a ``ValueError``."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    if input_ids is not None:
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
            raise ValueError(
                f"token ids must be a 2-D (batch, seq) tensor, got shape {shape}; for one sequence use ids[None]"
            )
        if input_ids.dtype not in TOKEN_ID_DTYPES:
            raise ValueError(
                f"token ids must be an int64 or int32 integer tensor, got dtype {input_ids.dtype} "
                f"(the embedding indexes with those only); convert them with ids.long()"
            )
    if inputs_embeds is not None and inputs_embeds.dim() != 3:
        raise ValueError(f"inputs_embeds must be (batch, seq, d_model), got shape {tuple(inputs_embeds.shape)}")


def check_decoder_inputs(
    config: "DecoderConfig",
    *,
    vocab_size: int,
    input_ids: Optional[Tensor] = None,
    inputs_embeds: Optional[Tensor] = None,
    attention_mask: Optional[Tensor] = None,
    positions: Optional[Tensor] = None,
    encoder_hidden_states: Optional[Tensor] = None,
    cache: Optional["KVCache"] = None,
) -> None:
    """Raise a ``ValueError`` naming the offending value of one decoder forward.

    The arguments are :meth:`arlm.network.decoder.DecoderStack.forward`'s; ``vocab_size`` is
    the embedding's current size (it outgrows ``config.vocab_size`` after
    ``resize_token_embeddings``). The number of keys comes from the cache, as in
    :func:`arlm.network.attention.attention_inputs`.
    """
    _check_input_ranks(input_ids, inputs_embeds)
    B, L = (input_ids if inputs_embeds is None else inputs_embeds).shape[:2]
    if B == 0 or L == 0:
        raise ValueError(f"empty batch: input of shape {(B, L)}; need at least one token per row")
    key_len = L if cache is None else cache.key_length(L)
    if key_len > config.max_positions:
        keys = (
            f"a preallocated KV cache of {key_len} slots" if cache is not None and cache.preallocated
            else f"sequence length {key_len}"
        )
        raise ValueError(f"{keys} exceeds {config.owner}{config.arg_name('max_positions')} {config.max_positions}")
    if positions is not None:
        if positions.dtype.is_floating_point or positions.dtype == torch.bool:
            raise ValueError(f"positions must be an integer tensor, got dtype {positions.dtype}")
        if tuple(positions.shape) != (B, L):
            raise ValueError(f"positions must have shape {(B, L)}, got {tuple(positions.shape)}")
    if attention_mask is not None:
        _check_mask_shape(attention_mask, B, L, key_len, cache)
    if encoder_hidden_states is not None:
        if not config.cross_attention:
            raise ValueError("encoder_hidden_states given but the model has no cross-attention")
        expected = (B, config.cross_attention_dim)
        got = (encoder_hidden_states.shape[0], encoder_hidden_states.shape[-1])
        if encoder_hidden_states.dim() != 3 or got != expected:
            raise ValueError(
                f"encoder_hidden_states must have shape (batch={B}, enc_seq, "
                f"{config.cross_attention_dim}), got {tuple(encoder_hidden_states.shape)}"
            )
    if reads_values_for_free(input_ids):
        check_token_ids(input_ids, vocab_size)
    if reads_values_for_free(positions) and ((positions < 0) | (positions >= config.max_positions)).any():
        raise ValueError(
            f"positions must be in [0, {config.owner}{config.arg_name('max_positions')}={config.max_positions}), got values in "
            f"[{positions.min().item()}, {positions.max().item()}]"
        )


def _check_mask_shape(mask: Tensor, B: int, L: int, key_len: int, cache: Optional["KVCache"]) -> None:
    """``(B, W)`` padding (``W = L`` without a cache, ``W >= past + L`` with a growing one, any
    width with a preallocated one) or ``(B, L, key_len)``."""
    if mask.dtype.is_floating_point:
        raise ValueError(f"attention_mask must be bool or integer (True/1 = attend), got {mask.dtype}")
    shape = tuple(mask.shape)
    if mask.dim() == 3 and shape == (B, L, key_len):
        return
    if mask.dim() == 2 and shape[0] == B:
        width = shape[1]
        if width == key_len or (cache is not None and (cache.preallocated or width > key_len)):
            return
    raise ValueError(
        f"attention_mask must have shape (batch, keys)={(B, key_len)} or "
        f"(batch, queries, keys)={(B, L, key_len)}, got {shape}"
    )
