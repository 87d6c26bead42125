"""Metric update functions: ``fn(batch, loss_dict, tokenizer=None) -> kwargs of metric.update``,
and the corpus-level NLL metrics they feed.

xlm-core's ``MetricWrapper`` calls them and splats the result into the torchmetrics object:
``MeanMetric`` takes ``value``; ``xlm.metrics.ExactMatch`` takes ``pred, target, pred_length,
target_length``; ``xlm.metrics.TokenAccuracy`` takes ``pred, target, pred_mask``;
:class:`CorpusTokenNLL` and :class:`CorpusPerplexity` take ``nlls, mask``.
"""

from typing import Any, Dict, Mapping, Optional

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from torchmetrics import MeanMetric

from arlm.types_arlm import IGNORE_INDEX


def _generated_suffix_like_target(
    batch: Mapping[str, Any], loss_dict: Mapping[str, Any], tokenizer: Any
) -> Tensor:
    """``ids[:, output_start_idx:]`` cut or padded (with pad ids) to the width of ``target_ids``.

    Cutting is safe: the target ends with EOS, so a prediction that matches it up to that
    width has stopped there too.
    """
    pred = loss_dict["ids"][:, loss_dict["output_start_idx"] :]
    target = batch["target_ids"]
    width = target.shape[1]
    if pred.shape[1] >= width:
        return pred[:, :width]
    pad = 0 if tokenizer is None else tokenizer.pad_token_id
    filler = torch.full((pred.shape[0], width - pred.shape[1]), pad, dtype=pred.dtype, device=pred.device)
    return torch.cat([pred, filler], dim=1)


def seq2seq_exact_match_update_fn(
    batch: Mapping[str, Any], loss_dict: Mapping[str, Any], tokenizer: Any = None
) -> Dict[str, Any]:
    """Whole generated continuation equals ``target_ids`` (EOS and the padding after it included)."""
    return {
        "pred": _generated_suffix_like_target(batch, loss_dict, tokenizer),
        "target": batch["target_ids"],
        "pred_length": None,
        "target_length": None,
    }


def seq2seq_token_accuracy_update_fn(
    batch: Mapping[str, Any], loss_dict: Mapping[str, Any], tokenizer: Any = None
) -> Dict[str, Any]:
    """Fraction of continuation positions equal to ``target_ids``, every position counted."""
    pred = _generated_suffix_like_target(batch, loss_dict, tokenizer)
    return {"pred": pred, "target": batch["target_ids"], "pred_mask": torch.ones_like(pred, dtype=torch.bool)}


def mean_metric_update_fn(
    batch: Mapping[str, Any], loss_dict: Mapping[str, Any], tokenizer: Any = None
) -> Dict[str, Any]:
    """The batch's mean loss (``batch_loss`` if present, else ``loss`` detached)."""
    value = loss_dict["batch_loss"] if "batch_loss" in loss_dict else loss_dict["loss"].detach()
    return {"value": value}


def _target_mask(batch: Mapping[str, Any], loss_dict: Mapping[str, Any]) -> Optional[Tensor]:
    """Which ``nlls`` entries are target tokens: ``loss_dict["target_mask"]``, else
    ``batch["target_ids"] != -100``, else ``None`` (unknown: every entry counts)."""
    if "target_mask" in loss_dict:
        return loss_dict["target_mask"]
    if "target_ids" in batch:
        return batch["target_ids"] != IGNORE_INDEX
    return None


def perplexity_metric_update_fn(
    batch: Mapping[str, Any], loss_dict: Mapping[str, Any], tokenizer: Any = None
) -> Dict[str, Any]:
    """Perplexity from ``loss_dict["nlls"]``.

    With a known target mask (see :func:`_target_mask`): per-sequence perplexity
    ``exp(mean NLL over its target tokens)``, shape ``(B,)``, rows without a target token left
    out. Without one (the seed's contract): ``exp(nlls.mean())``, a scalar.
    """
    nlls = loss_dict["nlls"]
    mask = _target_mask(batch, loss_dict)
    if mask is None:
        return {"value": nlls.float().mean().exp()}
    counts = mask.sum(dim=1)
    mean_nll = (nlls * mask).sum(dim=1) / counts.clamp_min(1)
    return {"value": mean_nll.exp()[counts > 0]}


def token_nll_metric_update_fn(
    batch: Mapping[str, Any], loss_dict: Mapping[str, Any], tokenizer: Any = None
) -> Dict[str, Any]:
    """``loss_dict["nlls"]``: only its target tokens (flattened) when the target mask is known,
    so that the mean is the token-level NLL; otherwise passed through unchanged."""
    mask = _target_mask(batch, loss_dict)
    nlls = loss_dict["nlls"]
    return {"value": nlls if mask is None else nlls[mask]}


def sequence_length_metric_update_fn(
    batch: Mapping[str, Any], loss_dict: Mapping[str, Any], tokenizer: Any = None
) -> Dict[str, Any]:
    """Number of real tokens per example, ``(B,)`` float."""
    return {"value": batch["attention_mask"].sum(dim=1).float()}


def valid_tokens_metric_update_fn(
    batch: Mapping[str, Any], loss_dict: Mapping[str, Any], tokenizer: Any = None
) -> Dict[str, Any]:
    """Number of tokens that carry loss per example (real and target != -100), ``(B,)`` float."""
    valid = batch["attention_mask"].bool() & (batch["target_ids"] != IGNORE_INDEX)
    return {"value": valid.sum(dim=1).float()}


def corpus_nll_metric_update_fn(
    batch: Mapping[str, Any], loss_dict: Mapping[str, Any], tokenizer: Any = None
) -> Dict[str, Any]:
    """``nlls`` and the target-token ``mask`` (all True when unknown) for the corpus metrics."""
    nlls = loss_dict["nlls"]
    mask = _target_mask(batch, loss_dict)
    return {"nlls": nlls, "mask": torch.ones_like(nlls, dtype=torch.bool) if mask is None else mask}


class CorpusTokenNLL(MeanMetric):
    """Token-level mean NLL over everything seen since the last reset (a whole split):
    ``sum of target-token NLL / number of target tokens``, in nats.

    torchmetrics' ``MeanMetric`` with its two sums (``mean_value``, ``weight``) in float64, reduced
    by summing across processes, so the value is the same whatever the batching and the number of
    devices; NaN NLLs are kept (they make the value NaN). NaN before any target token.
    """

    higher_is_better = False

    def __init__(self, **kwargs: Any):
        super().__init__(nan_strategy="disable", **kwargs)
        self.set_dtype(torch.float64)

    def update(self, nlls: Float[Tensor, "*batch"], mask: Bool[Tensor, "*batch"]) -> None:
        """Add the NLL of the positions where ``mask`` is True (``nlls`` and ``mask`` same shape)."""
        if nlls.shape != mask.shape:
            raise ValueError(f"nlls shape {tuple(nlls.shape)} differs from mask shape {tuple(mask.shape)}")
        super().update(nlls.detach()[mask.bool()])

    def compute(self) -> Tensor:
        return super().compute().float()


class CorpusPerplexity(CorpusTokenNLL):
    """Corpus perplexity, as language-modelling papers report it: ``exp(CorpusTokenNLL)``."""

    def compute(self) -> Tensor:
        return MeanMetric.compute(self).exp().float()
