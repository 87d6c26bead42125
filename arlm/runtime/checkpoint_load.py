"""Reading a checkpoint file without running code from it; no Lightning, so that the Hugging Face
export (installed without xlm-core) reads checkpoints the same way training does.

:func:`load_safely` reads with ``torch.load(weights_only=True)`` (tensors and plain containers
only) and turns torch's errors for empty, text, truncated and code-carrying files into
:class:`CheckpointError` naming the file. :func:`copy_ema_weights` puts a checkpoint's EMA
weights into a module, for the export and for ``generate_arlm`` alike; :func:`first_non_finite`
and :func:`non_finite_ema` find NaN/Inf weights; :func:`checkpoints_in` lists a directory's
checkpoints.
"""

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: empty, not a checkpoint, truncated, or unsafe."""


def checkpoints_in(directory: Union[str, Path]) -> List[Path]:
    """The ``*.ckpt`` entries of ``directory``, sorted by name: files, and the directories that
    sharded strategies write under that suffix. Empty when ``directory`` is not a directory."""
    directory = Path(directory)
    return sorted(directory.glob("*.ckpt")) if directory.is_dir() else []


def _describe_unreadable(path: Path, error: BaseException) -> str:
    size = path.stat().st_size if path.exists() else 0
    text = str(error)
    if size == 0:
        return f"{path} is empty (0 bytes): it was never written completely"
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(4)
        if head.startswith(b"PK"):
            return f"{path} is truncated or corrupt ({size} bytes, the zip archive is incomplete)"
        return f"{path} is not a PyTorch checkpoint ({size} bytes, no zip archive; a text file or another format?)"
    if "Weights only load failed" in text or isinstance(error, pickle.UnpicklingError):
        match = re.search(r"Unsupported global: GLOBAL (\S+)", text) or re.search(r"WeightsUnpickler error: ([^\n]+)", text)
        reason = match.group(1) if match else text.splitlines()[0]
        return (
            f"{path} asks to run or build Python objects that arlm does not load from checkpoints "
            f"({reason}); it was not loaded. Use checkpoints written by arlm/Lightning training, or "
            f"re-save its tensors with a tool you trust"
        )
    return f"{path} is truncated or corrupt ({size} bytes): {type(error).__name__}: {text.splitlines()[0] if text else ''}"


def load_safely(path: Union[str, Path], map_location: Any = "cpu") -> Dict[str, Any]:
    """``torch.load(path, weights_only=True)``: Lightning checkpoints of arlm runs hold only
    tensors and plain containers, so no class is allowed; a :class:`CheckpointError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(_describe_unreadable(path, error)) from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dictionary")
    return checkpoint


def first_non_finite(named_tensors: Iterable[Tuple[str, Any]]) -> Optional[str]:
    """The name of the first floating-point tensor holding NaN or Inf, else None (non-tensors are skipped)."""
    for name, value in named_tensors:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None


def non_finite_ema(checkpoint: Mapping[str, Any]) -> Optional[str]:
    """``"ema.shadow_params[i]"`` for the first EMA weight of ``checkpoint`` (``torch_ema`` state
    under ``"ema"``) holding NaN or Inf; None when they are finite or there is no EMA state."""
    shadows = (checkpoint.get("ema") or {}).get("shadow_params") or []
    return first_non_finite((f"ema.shadow_params[{i}]", shadow) for i, shadow in enumerate(shadows))


def copy_ema_weights(module: torch.nn.Module, ema: Optional[Mapping[str, Any]], path: Union[str, Path], fix: str) -> None:
    """Copy the ``torch_ema`` shadow parameters of ``checkpoint["ema"]`` into ``module``.

    xlm-core's EMA callback tracks the Harness's trainable parameters in registration order. In an
    arlm run the model is the Harness's only module with parameters, so the shadows are, in order,
    the trainable ``parameters()`` of the Harness and of its model alike. ``ValueError`` naming
    ``path`` and ending with ``fix`` when there are no EMA weights or they do not match.
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
