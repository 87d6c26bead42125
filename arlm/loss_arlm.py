"""``ARLMLoss``: next-token cross entropy for the xLM Harness."""

import math
from typing import Any, Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Integer
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from arlm.network.inputs import reads_values_for_free
from arlm.network.value_checks import check_int_at_least
from arlm.types_arlm import IGNORE_INDEX, ARLMBatch, ARLMLossDict, ARLMModel

REQUIRED_BATCH_KEYS = ("input_ids", "attention_mask", "target_ids")

LOGITS_PER_CHUNK = 2**24
"""Most fp32 logits (tokens x vocabulary) the loss holds at once: 64 MiB. A batch with more is
cut into chunks of tokens, each projected and scored on its own (see :func:`next_token_nlls`)."""


class ARLMLoss:
    """Mean cross entropy of ``model(input_ids)`` against ``target_ids`` (already shifted).

    The Harness builds it from config with no arguments and then sets ``.model`` and
    ``.tokenizer``. What the model sees depends on the batch alone, never on its device:

    - a batch declaring ``right_padded=True`` (the ARLM training collators do, on the CPU where
      they build it) runs without any mask or positions: causality alone keeps every real token
      from seeing the padding after it, and SDPA's fast kernels stay eligible. Where checking
      the declaration is free (CPU tensors, eager mode) a false one raises ``ValueError``;
      elsewhere it is trusted.
    - any other batch gives the model its ``attention_mask``, so padding anywhere (left, middle)
      is hidden and positions count real tokens only.

    Neither path reads a tensor value on the host, so an accelerator never waits and
    ``torch.compile`` sees no graph break.

    Targets equal to -100 carry no loss. A batch whose targets are all -100 gives a loss of
    exactly 0 (not NaN), so it can never poison training.

    Memory: for a model with a decoder and an output projection (:class:`arlm.types_arlm.ARLMModel`,
    either face) the loss projects the final hidden states itself, in chunks of tokens whose fp32
    logits stay under ``logits_per_chunk`` (default :data:`LOGITS_PER_CHUNK`; :func:`next_token_nlls`),
    so a large vocabulary never holds the whole batch's logits, neither in the model's dtype nor
    upcast to fp32. Chunking recomputes the output projection in the backward pass (at GPT-2's
    vocabulary about 10% more arithmetic); ``logits_per_chunk=None`` (``loss.logits_per_chunk=null``)
    turns it off where memory is plentiful.
    """

    def __init__(
        self, model: Optional[Any] = None, tokenizer: Optional[Any] = None,
        logits_per_chunk: Optional[int] = LOGITS_PER_CHUNK,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.logits_per_chunk = (
            None if logits_per_chunk is None else check_int_at_least("loss.logits_per_chunk", logits_per_chunk, 1)
        )

    def configure(self, pl_module: Any) -> None:
        """Nothing to precompute: the loss holds no tensors of its own."""

    def __call__(
        self,
        batch: ARLMBatch,
        batch_idx: Optional[int] = None,
        dataloader_idx: Optional[int] = None,
        dataloader_name: Optional[str] = None,
    ) -> ARLMLossDict:
        return self.loss_fn(batch, batch_idx, dataloader_idx, dataloader_name)

    def loss_fn(
        self,
        batch: ARLMBatch,
        batch_idx: Optional[int] = None,
        dataloader_idx: Optional[int] = None,
        dataloader_name: Optional[str] = None,
    ) -> ARLMLossDict:
        _validate_batch(batch)
        input_ids, target_ids = batch["input_ids"], batch["target_ids"]
        key_padding = None if _declared_right_padded(batch) else batch["attention_mask"]
        if isinstance(self.model, ARLMModel):
            features = self.model.last_hidden_state(input_ids, attention_mask=key_padding)
            head, vocab_size = self.model.lm_head, self.model.lm_head.out_features
        else:
            features = self.model(input_ids, attention_mask=key_padding)  # logits
            head, vocab_size = None, features.shape[-1]
        if reads_values_for_free(target_ids):
            _check_target_range(target_ids, vocab_size)
        nlls = next_token_nlls(
            features.flatten(0, 1), head, vocab_size, target_ids.flatten(), self.logits_per_chunk
        ).view_as(target_ids)
        target_mask = target_ids != IGNORE_INDEX
        loss = nlls.sum() / target_mask.sum().clamp_min(1)
        return {
            "loss": loss,
            "batch_loss": loss.detach(),
            "nlls": nlls.detach(),
            "target_mask": target_mask,
        }


def next_token_nlls(
    features: Float[Tensor, "tokens dim"],
    head: Optional[Callable[[Tensor], Tensor]],
    vocab_size: int,
    targets: Integer[Tensor, " tokens"],
    logits_per_chunk: Optional[int] = LOGITS_PER_CHUNK,
) -> Float[Tensor, " tokens"]:
    """Cross entropy of ``head(features)`` (the logits; ``features`` themselves when ``head`` is
    None) against ``targets``, in fp32, 0 where the target is ``IGNORE_INDEX``.

    When the fp32 logits would exceed ``logits_per_chunk`` (None: never), the tokens are cut into chunks
    and each chunk's projection, upcast and cross entropy runs under activation checkpointing:
    only the features are kept for the backward pass, which recomputes one chunk's logits at a
    time (one more forward pass of the head). Values and gradients equal the unchunked ones
    within float rounding."""
    chunks = 1 if logits_per_chunk is None else math.ceil(features.shape[0] * vocab_size / logits_per_chunk)
    if chunks <= 1:
        return _nlls(features, targets, head)
    return torch.cat([
        checkpoint(_nlls, part, part_targets, head, use_reentrant=False)
        for part, part_targets in zip(features.chunk(chunks), targets.chunk(chunks))
    ])


def _nlls(features: Tensor, targets: Tensor, head: Optional[Callable[[Tensor], Tensor]]) -> Tensor:
    logits = features if head is None else head(features)
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="none")


def _declared_right_padded(batch: ARLMBatch) -> bool:
    """The batch's ``right_padded`` declaration (absent: False), checked against its mask where
    that is free."""
    declared = batch.get("right_padded", False)
    if not isinstance(declared, bool):
        raise ValueError(
            f"batch['right_padded'] must be True or False (a Python bool set by the collator), "
            f"got {declared!r} ({type(declared).__name__})"
        )
    mask = batch["attention_mask"]
    if declared and reads_values_for_free(mask):
        first = _first_true(mask[:, 1:].bool() & ~mask[:, :-1].bool())  # real token after padding
        if first is not None:
            row, column = first
            raise ValueError(
                f"the batch declares right_padded=True but row {row} of its attention_mask has a "
                f"real token at column {column + 1} after padding; a collator that does not "
                f"right-pad must leave right_padded out (the loss then masks padding wherever it is)"
            )
    return declared


def _validate_batch(batch: ARLMBatch) -> None:
    missing = [k for k in REQUIRED_BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(f"ARLMLoss batch is missing {missing}; it has {sorted(batch)}")
    shape = tuple(batch["input_ids"].shape)
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"input_ids must be a non-empty (batch, seq) tensor, got shape {shape}")
    for key in ("attention_mask", "target_ids"):
        if tuple(batch[key].shape) != shape:
            raise ValueError(
                f"{key} must have the shape of input_ids {shape}, got {tuple(batch[key].shape)}"
            )
    if batch["target_ids"].dtype != torch.int64:
        raise ValueError(
            f"target_ids must be an int64 tensor (ids, and {IGNORE_INDEX} where no loss is taken), got dtype "
            f"{batch['target_ids'].dtype}; convert them with target_ids.long() (uint8 cannot hold {IGNORE_INDEX})"
        )


def _check_target_range(target_ids: torch.Tensor, vocab_size: int) -> None:
    """Raise ``ValueError`` naming the first target that is neither an id of the model's
    vocabulary nor the ignore index (reads values: called for CPU tensors in eager mode only)."""
    first = _first_true((target_ids != IGNORE_INDEX) & ((target_ids < 0) | (target_ids >= vocab_size)))
    if first is not None:
        row, column = first
        raise ValueError(
            f"target_ids[{row}, {column}] = {target_ids[row, column].item()} is outside [0, {vocab_size}) "
            f"(the model's vocabulary) and not the ignore index {IGNORE_INDEX}; check that the collator "
            f"and tokenizer match model.num_embeddings"
        )


def _first_true(flags: torch.Tensor) -> Optional[Tuple[int, int]]:
    """``(row, column)`` of the first True of a 2-D bool tensor, or None (reads values: CPU only)."""
    if not bool(flags.any()):
        return None
    row, column = flags.nonzero()[0].tolist()
    return row, column
