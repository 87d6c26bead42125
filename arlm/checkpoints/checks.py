"""Whether a checkpoint's contents can be used, checked the same way by every job.

* :func:`first_non_finite` / :func:`non_finite_ema`: NaN or Inf weights, raw or EMA;
* :func:`check_resumable`: what resuming needs (weights, all finite, not written at a NaN/Inf
  stop, :data:`NON_FINITE_STOP_KEY`);
* :func:`weights_difference`: the first way a set of weights does not fit a model (another
  shape, a weight only one side has), worded once for every job;
* :func:`copy_ema_weights`: a checkpoint's EMA weights into a module.

The functions take a checkpoint's contents (the dictionary Lightning hands its hooks, or
:attr:`arlm.checkpoints.read.Checkpoint.contents`).
"""

from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Tuple, Union

import torch

from arlm.checkpoints.read import CheckpointError

NON_FINITE_STOP_KEY = "arlm_non_finite_stop"
"""Set in the checkpoint written when training stopped on a NaN/Inf loss; resuming skips it."""
SHOWN_KEYS = 5


def first_non_finite(named_tensors: Iterable[Tuple[str, Any]]) -> Optional[Tuple[str, int, int]]:
    """``(name, non-finite count, size)`` of the first floating-point tensor holding NaN or Inf,
    else None (non-tensors are skipped)."""
    for name, value in named_tensors:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                return name, int((~finite).sum()), value.numel()
    return None


def non_finite_ema(contents: Mapping[str, Any]) -> Optional[str]:
    """``"ema.shadow_params[i]"`` for the first EMA weight (``torch_ema`` state under ``"ema"``)
    holding NaN or Inf; None when they are finite or there is no EMA state."""
    shadows = (contents.get("ema") or {}).get("shadow_params") or []
    bad = first_non_finite((f"ema.shadow_params[{i}]", shadow) for i, shadow in enumerate(shadows))
    return None if bad is None else bad[0]


def check_resumable(path: Path, contents: Mapping[str, Any], include_ema: bool = True) -> None:
    """Raise :class:`CheckpointError` if ``contents`` (read from ``path``) lacks weights, holds
    non-finite ones (its EMA weights too with ``include_ema``), or was written when training
    stopped on a NaN/Inf loss."""
    if NON_FINITE_STOP_KEY in contents:
        raise CheckpointError(
            f"{path} was written when training stopped on a non-finite loss "
            f"({str(contents[NON_FINITE_STOP_KEY]).split('. ')[0]}); resuming from it would diverge again"
        )
    if "state_dict" not in contents:
        raise CheckpointError(
            f"{path} has no 'state_dict' (keys: {sorted(contents)[:4]}...); it is not a Lightning "
            f"checkpoint. A bare model state dict goes to +eval.model_only_checkpoint_path / "
            f"+generation.model_only_checkpoint_path instead"
        )
    bad = first_non_finite(contents["state_dict"].items())
    if bad is not None:
        raise CheckpointError(f"{path} holds NaN/Inf weights ({bad[0]}); a run that diverged wrote it")
    bad_ema = non_finite_ema(contents) if include_ema else None
    if bad_ema is not None:
        raise CheckpointError(f"{path} holds NaN/Inf EMA weights ({bad_ema}); a run that diverged wrote it")


def weights_difference(
    saved: Mapping[str, Sequence[int]], own: Mapping[str, Sequence[int]], source: str, strict: bool = True
) -> Optional[str]:
    """How the weight shapes ``saved`` (of ``source``: "checkpoint", "file") do not fit the
    model's ``own``, or None: the first weight of another shape, else (``strict``) the weights
    only one side has, ``"the configured model has <key>, which the checkpoint lacks"``."""
    for key, shape in saved.items():
        if key in own and tuple(shape) != tuple(own[key]):
            return f"{key} has shape {tuple(shape)} in the {source} but {tuple(own[key])} in the configured model"
    if not strict:
        return None
    missing = [key for key in own if key not in saved]
    unexpected = [key for key in saved if key not in own]
    parts = []
    if missing:
        parts.append(f"the configured model has {_keys(missing, 'missing')}, which the {source} lacks")
    if unexpected:
        parts.append(f"the {source} has {_keys(unexpected, 'unexpected')}, which the configured model lacks")
    return "; ".join(parts) or None


def _keys(keys: Sequence[str], kind: str) -> str:
    """``"a"`` or ``"a and 3 more <kind> keys (b, c, d...)"``."""
    if len(keys) == 1:
        return keys[0]
    more = ", ".join(keys[1:SHOWN_KEYS]) + ("..." if len(keys) > SHOWN_KEYS else "")
    return f"{keys[0]} and {len(keys) - 1} more {kind} keys ({more})"


def copy_ema_weights(
    module: torch.nn.Module, ema: Optional[Mapping[str, Any]], path: Union[str, Path], fix: str
) -> None:
    """Copy the ``torch_ema`` shadow parameters ``ema`` (a checkpoint's ``"ema"``) into ``module``.

    xlm-core's EMA callback tracks the Harness's trainable parameters in registration order. In an
    arlm run the model is the Harness's only module with parameters, so the shadows are, in order,
    the trainable ``parameters()`` of the Harness, of its model and of the same network in the
    Hugging Face face alike. ``ValueError`` naming ``path`` and ending with ``fix`` when there are
    no EMA weights or they do not match.
    """
    if ema is None:
        raise ValueError(f"{path} has no EMA weights (no 'ema' entry: trained without the EMA callback). Fix: {fix}")
    params = [p for p in module.parameters() if p.requires_grad]
    shadows = ema["shadow_params"]
    if len(shadows) != len(params) or any(s.shape != p.shape for s, p in zip(shadows, params)):
        raise ValueError(
            f"the EMA weights of {path} ({len(shadows)} tensors) do not match the model's "
            f"{len(params)} trainable parameters. Fix: {fix}"
        )
    with torch.no_grad():
        for param, shadow in zip(params, shadows):
            param.copy_(shadow)
