"""The decoder's input checks: bad input raises a ``ValueError`` naming the value, early."""

from typing import TYPE_CHECKING, Optional, Tuple

import torch
from torch import Tensor

if TYPE_CHECKING:
    from arlm.decoder import DecoderConfig


def validate_decoder_inputs(
    config: "DecoderConfig",
    vocab_size: int,
    input_ids: Optional[Tensor],
    attention_mask: Optional[Tensor],
    positions: Optional[Tensor],
    past_len: int,
    batch_shape: Tuple[int, int],
    encoder_hidden_states: Optional[Tensor],
    fixed_key_len: int = -1,
) -> None:
    """Raise a ``ValueError`` naming the offending value; skipped while ``torch.compile`` traces.

    ``vocab_size`` is the embedding's current size (it outgrows ``config.vocab_size`` after
    ``resize_token_embeddings``); ``fixed_key_len`` is the length of a preallocated cache (its
    keys span all of it), or -1.
    """
    B, L = batch_shape
    if B == 0 or L == 0:
        raise ValueError(f"empty batch: input of shape {(B, L)}; need at least one token per row")
    if input_ids is not None:
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise ValueError(f"token ids must be an integer tensor, got dtype {input_ids.dtype}")
        bad = (input_ids < 0) | (input_ids >= vocab_size)
        if bad.any():
            raise ValueError(
                f"token id {input_ids[bad][0].item()} is outside [0, {vocab_size}) "
                f"(the embedding size); check the tokenizer matches the model"
            )
    if fixed_key_len > 0 and (
        positions is None or attention_mask is None or attention_mask.dim() != 3
    ):
        raise ValueError(
            f"a preallocated KV cache returns all {fixed_key_len} of its slots as keys: pass "
            f"explicit positions and an attention_mask of shape (batch, queries, "
            f"{fixed_key_len}) that is False on unwritten slots"
        )
    if positions is None and past_len + L > config.max_positions:
        raise ValueError(
            f"sequence length {past_len + L} exceeds max_length {config.max_positions}"
        )
    if positions is not None:
        if tuple(positions.shape) != (B, L):
            raise ValueError(f"positions must have shape {(B, L)}, got {tuple(positions.shape)}")
        if ((positions < 0) | (positions >= config.max_positions)).any():  # one host sync
            raise ValueError(
                f"positions must be in [0, max_length={config.max_positions}), got values in "
                f"[{positions.min().item()}, {positions.max().item()}]"
            )
    if attention_mask is not None:
        if attention_mask.dtype.is_floating_point:
            raise ValueError(
                f"attention_mask must be bool or integer (True/1 = attend), got {attention_mask.dtype}"
            )
        S = fixed_key_len if fixed_key_len > 0 else past_len + L
        if tuple(attention_mask.shape) not in ((B, S), (B, L, S)):
            raise ValueError(
                f"attention_mask must have shape (batch, keys)={(B, S)} or "
                f"(batch, queries, keys)={(B, L, S)}, got {tuple(attention_mask.shape)}"
            )
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


def check_input_ranks(
    input_ids: Optional[Tensor], inputs_embeds: Optional[Tensor], positions: Optional[Tensor]
) -> None:
    """Raise a ``ValueError`` unless ids are ``(batch, seq)``, embeddings ``(batch, seq, d)`` and
    positions integer; exactly one of ``input_ids`` and ``inputs_embeds`` must be given."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    if input_ids is not None and (not isinstance(input_ids, Tensor) or input_ids.dim() != 2):
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ValueError(
            f"token ids must be a 2-D (batch, seq) tensor, got shape {shape}; for one sequence use ids[None]"
        )
    if inputs_embeds is not None and inputs_embeds.dim() != 3:
        raise ValueError(f"inputs_embeds must be (batch, seq, d_model), got shape {tuple(inputs_embeds.shape)}")
    if positions is not None and (positions.dtype.is_floating_point or positions.dtype == torch.bool):
        raise ValueError(f"positions must be an integer tensor, got dtype {positions.dtype}")
