"""Metric update functions: ``fn(batch, loss_dict, tokenizer=None) -> kwargs of metric.update``,
and the corpus-level NLL metrics they feed.

xlm-core's ``MetricWrapper`` calls them and splats the result into the torchmetrics object:
``MeanMetric`` takes ``value``; ``xlm.metrics.ExactMatch`` takes ``pred, target, pred_length,
target_length``; ``xlm.metrics.TokenAccuracy`` takes ``pred, target, pred_mask``;
:class:`CorpusTokenNLL` and :class:`CorpusPerplexity` take ``nlls, mask``.
:func:`star_planning_choice_update_fn` feeds a ``MeanMetric`` the STAR planning-choice
diagnostic (``planning_choice_accuracy``), read from the graph in each prompt.
"""

from collections import defaultdict
from typing import Any, Dict, List, Mapping, Optional, Sequence

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


def star_planning_prefix(prompt: Sequence[int]) -> List[int]:
    """The reference STAR answer up to and including its one planning choice, as token ids.

    ``prompt`` is a STAR prompt as xlm-core's ``xlm.tasks.star.preprocess_fn`` writes it, without
    BOS: the edge list flattened (``u1 v1 u2 v2 ...``), then ``source goal``. Every STAR level has
    one centre, the only node with more than one outgoing edge; the path runs from the source
    (the centre itself on STAR-easy, a node of an arm leading into it on medium and hard) along
    single edges to the centre, then down the one arm that reaches the goal. The choice of that
    arm is the step a model cannot take by following edges from the node before it.

    Returns the answer in the target layout (each path edge written ``u v``) from the source to
    the edge ``centre -> first node of the goal's arm`` included: ``2 * (k + 1)`` ids when the
    centre is the ``k``-th node after the source. Raises ``ValueError``, naming what is wrong,
    when ``prompt`` is not such a graph: odd or too short length, not exactly one node with
    several outgoing edges, no single-edge walk from the source to the centre, the goal
    before the centre or on no arm, or on more than one.
    """
    prompt = list(prompt)
    if len(prompt) < 4 or len(prompt) % 2:
        raise ValueError(
            f"a STAR prompt is an edge list (pairs of nodes) followed by source and goal, so an even "
            f"number >= 4 of tokens; got {len(prompt)}"
        )
    *flat, source, goal = prompt
    successors: Dict[int, List[int]] = defaultdict(list)
    for u, v in zip(flat[0::2], flat[1::2]):
        successors[u].append(v)
    branching = sorted(u for u, vs in successors.items() if len(vs) > 1)
    if len(branching) != 1:
        raise ValueError(
            f"a STAR graph has exactly one node with several outgoing edges (its centre); this one "
            f"has {len(branching)}: {branching}"
        )
    centre, max_walk = branching[0], len(flat) // 2
    path = [source]
    while path[-1] != centre:
        nexts = successors.get(path[-1], [])
        if path[-1] == goal or not nexts or len(path) > max_walk:
            raise ValueError(
                f"no walk along single edges from the source {source} to the centre {centre} before "
                f"the goal {goal} (stopped at {path})"
            )
        path.append(nexts[0])
    arms = [first for first in successors[centre] if goal in _arm(first, successors, max_walk)]
    if len(arms) != 1:
        raise ValueError(
            f"the goal {goal} must lie on exactly one arm leaving the centre {centre}; it lies on "
            f"{len(arms)} (arms start at {successors[centre]})"
        )
    path.append(arms[0])
    return [node for edge in zip(path, path[1:]) for node in edge]


def _arm(first: int, successors: Mapping[int, List[int]], max_walk: int) -> List[int]:
    """The nodes reached from ``first`` along single outgoing edges (at most ``max_walk``)."""
    arm = [first]
    while len(successors.get(arm[-1], [])) == 1 and len(arm) <= max_walk:
        arm.append(successors[arm[-1]][0])
    return arm


def star_planning_choice_update_fn(
    batch: Mapping[str, Any], loss_dict: Mapping[str, Any], tokenizer: Any
) -> Dict[str, Float[Tensor, " batch"]]:
    """Per STAR graph, 1.0 when the generated path is right up to and including the arm taken at
    the centre (:func:`star_planning_prefix`), else 0.0: ``{"value": (B,) float}`` for a
    ``MeanMetric`` (``planning_choice_accuracy``).

    On STAR-easy the centre is the source, so this is the first node after it; on medium and
    hard it is the node after the centre, wherever the centre falls in the path. A model that
    follows edges and guesses the arm scores one over the centre's out-degree (1/3 on easy and
    medium, 1/5 on hard) here, and exact match stays near that value; past the plateau both rise.

    The reference comes from the graph in the prompt alone: ``batch["input_ids"]`` rows are
    ``[pad...][prompt][BOS]`` (``ARLMSeq2SeqPredCollator``) with ``attention_mask`` 1 on the
    prompt and BOS; the generation is ``loss_dict["ids"][:, loss_dict["output_start_idx"]:]``.
    Rows the collator cut (``batch["prompt_cut"]``, ``on_overflow="truncate"``) have lost part
    of their graph: their value is NaN, which the configured ``MeanMetric`` leaves out of the mean
    (``nan_strategy: ignore``) and the predictions JSONL writes as null. Any other row whose
    prompt is not a STAR graph, or does not end with BOS, raises ``ValueError`` naming the row and
    the prompt. ``tokenizer`` is required (its BOS and node tokens).
    """
    if tokenizer is None:
        raise ValueError("star_planning_choice_update_fn needs the tokenizer (its BOS and node tokens)")
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ValueError(
            f"planning_choice_accuracy needs a tokenizer with a BOS token (a STAR prompt ends with it, "
            f"before the path); {type(tokenizer).__name__} has none. Fix: use the experiment's tokenizer "
            f"(global_components.tokenizer: xlm.datamodule.SimpleSpaceTokenizer.for_numbers), or leave this "
            f"metric out of the experiment's reported metrics for a tokenizer without BOS"
        )
    generated = loss_dict["ids"][:, loss_dict["output_start_idx"] :]
    values = []
    cut = batch["prompt_cut"].tolist() if "prompt_cut" in batch else [False] * len(generated)
    rows = zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(), generated.tolist(), cut)
    for i, (ids, mask, continuation, was_cut) in enumerate(rows):
        if was_cut:
            values.append(float("nan"))
            continue
        prompt = [t for t, real in zip(ids, mask) if real]
        try:
            if not prompt or prompt[-1] != bos:
                raise ValueError(f"a STAR prediction prompt ends with BOS (id {bos})")
            non_nodes = [t for t in tokenizer.convert_ids_to_tokens(prompt[:-1]) if not t.isdigit()]
            if non_nodes:
                raise ValueError(f"STAR nodes are number tokens; the prompt also has {non_nodes[:5]}")
            reference = star_planning_prefix(prompt[:-1])
        except ValueError as error:
            raise ValueError(
                f"planning_choice_accuracy: row {i} of the prediction batch is not a STAR graph "
                f"prompt ({error}). Prompt: {tokenizer.decode(prompt)!r}"
            ) from error
        values.append(float(continuation[: len(reference)] == reference))
    return {"value": torch.tensor(values, dtype=torch.float32, device=generated.device)}


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
