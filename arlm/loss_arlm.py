"""``ARLMLoss``: next-token cross entropy for the xLM Harness."""

from typing import Any, Optional

import torch.nn.functional as F
from torch import Tensor

from arlm.network.inputs import reads_values_for_free
from arlm.types_arlm import IGNORE_INDEX, ARLMBatch, ARLMLossDict

REQUIRED_BATCH_KEYS = ("input_ids", "attention_mask", "target_ids")


class ARLMLoss:
    """Mean cross entropy of ``model(input_ids)`` against ``target_ids`` (already shifted).

    The Harness builds it from config with no arguments and then sets ``.model`` and
    ``.tokenizer``. Batches are right-padded (as the ARLM collators make them), so causality
    alone keeps every real token from seeing padding and the model runs without any mask or
    positions: SDPA's fast kernels stay eligible. A batch on the CPU in eager mode is checked
    for free: one that is not right-padded gets its key-padding mask. On an accelerator, and
    under ``torch.compile``, the right-padding contract is trusted: checking it would stall the
    device (or break the graph) at every step.

    Targets equal to -100 carry no loss. A batch whose targets are all -100 gives a loss of
    exactly 0 (not NaN), so it can never poison training.
    """

    def __init__(self, model: Optional[Any] = None, tokenizer: Optional[Any] = None):
        self.model = model
        self.tokenizer = tokenizer

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
        key_padding = None
        if reads_values_for_free(batch["attention_mask"]) and not is_right_padded(batch["attention_mask"]):
            key_padding = batch["attention_mask"]
        logits = self.model(input_ids, attention_mask=key_padding)
        nlls = F.cross_entropy(
            logits.flatten(0, 1).float(), target_ids.flatten(),
            ignore_index=IGNORE_INDEX, reduction="none",
        ).view_as(target_ids)  # (B, L), 0 where ignored
        target_mask = target_ids != IGNORE_INDEX
        loss = nlls.sum() / target_mask.sum().clamp_min(1)
        return {
            "loss": loss,
            "batch_loss": loss.detach(),
            "nlls": nlls.detach(),
            "target_mask": target_mask,
        }


def is_right_padded(attention_mask: Tensor) -> bool:
    """True when every row is ``1...1 0...0`` (padding never precedes a real token)."""
    mask = attention_mask.bool()
    return not bool((mask[:, 1:] & ~mask[:, :-1]).any())


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
