"""The one checkpoint writer, and the Lightning plugin through which every checkpoint is written and read.

* :func:`save_atomically` writes ``torch.save`` output with
  :func:`arlm.runtime.atomic_files.write_file_atomically` (a temporary beside the target, fsynced
  and renamed into place; on any error, a full disk or Ctrl+C included, the temporary is removed and the
  old target is untouched; temporaries of writers killed earlier are deleted).
* Reading goes through :func:`arlm.checkpoints.read.read_checkpoint` (weights only, one message
  per way a file can be unreadable) and :func:`arlm.checkpoints.checks.check_resumable`.
* :func:`load_newest_valid` loads the checkpoint Lightning or xlm-core picked automatically
  (``last.ckpt``, ``on_exception.ckpt``, ``best.ckpt``) and, if it is unreadable, holds non-finite
  weights (raw or EMA: resuming restores both) or was written at a NaN/Inf stop, the newest valid
  ``*.ckpt`` beside it instead, logging the one skipped. A checkpoint named explicitly is refused
  for non-finite raw weights; its EMA weights are checked where they are used.
* :class:`SafeAtomicCheckpointIO` is the Lightning ``CheckpointIO`` plugin doing all of this for
  every checkpoint the Trainer writes or reads (periodic, best, last, on-exception, resume, eval).
"""

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from arlm.checkpoints.checks import check_resumable
from arlm.checkpoints.read import CheckpointError, checkpoints_in, read_checkpoint
from arlm.runtime.atomic_files import AtomicWriteError, is_no_space, underlying_os_error, write_file_atomically
from arlm.runtime.partial_files import remove_dead_writers_temporaries

log = logging.getLogger(__name__)

AUTOMATIC_NAMES = ("last.ckpt", "on_exception.ckpt", "best.ckpt")
RESUME_NAMES = ("last.ckpt", "on_exception.ckpt")


def _write_fix(error: BaseException, path: Path) -> str:
    if is_no_space(error):
        return (
            f"The partial file was removed and the checkpoints already in {path.parent} are intact. Fix: "
            f"free space in (or point LOG_DIR / paths.log_dir to) a filesystem with room, then re-run "
            f"the same command to resume"
        )
    if underlying_os_error(error) is not None:
        return f"Fix: make {path.parent} a writable directory (LOG_DIR / paths.log_dir / checkpointing_dir)"
    return f"The partial file was removed and the checkpoints already in {path.parent} are intact"


def save_atomically(checkpoint: Dict[str, Any], path: _PATH) -> None:
    """``torch.save`` through :func:`arlm.runtime.atomic_files.write_file_atomically`: never a partial ``path``.

    Raises:
        CheckpointError: the write failed (full disk, no permission); it names ``path`` and the fix.
        arlm.runtime.atomic_files.WriteInterrupted: Ctrl+C / SIGINT stopped the write (a
            ``KeyboardInterrupt``, so Lightning shuts down as for any Ctrl+C); ``path`` is as it was.
    """
    path = Path(path)
    try:
        write_file_atomically(path, lambda handle: torch.save(checkpoint, handle))
    except (AtomicWriteError, RuntimeError) as error:
        reason = error.reason if isinstance(error, AtomicWriteError) else error
        raise CheckpointError(f"Could not write checkpoint {path}: {reason}. {_write_fix(error, path)}") from error


def _candidates(path: Path) -> List[Path]:
    """``path`` first, then the other ``*.ckpt`` files beside it, newest first. For a resume point
    (:data:`RESUME_NAMES`) a newer ``last.ckpt``/``on_exception.ckpt`` goes before it: xlm-core
    always asks for ``on_exception.ckpt`` first, even when a later run has written a newer ``last.ckpt``."""
    others = [p for p in checkpoints_in(path.parent) if p.is_file() and p.name != path.name]
    others.sort(key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    if path.name in RESUME_NAMES and path.exists():
        newer = [p for p in others if p.name in RESUME_NAMES and p.stat().st_mtime > path.stat().st_mtime]
        return [*newer, path, *[p for p in others if p not in newer]]
    return [path, *others]


def load_newest_valid(path: _PATH, map_location: Any = "cpu") -> Tuple[Path, Dict[str, Any]]:
    """Load ``path``; if it is an automatically chosen name and unusable, the newest usable ``*.ckpt`` beside it.

    Returns the path actually loaded and its contents. A checkpoint named explicitly (any other
    file name) is never replaced: its :class:`CheckpointError` is raised as it is.
    """
    path = Path(path)
    remove_dead_writers_temporaries(path.parent)
    if path.name not in AUTOMATIC_NAMES:
        checkpoint = read_checkpoint(path, map_location).contents
        check_resumable(path, checkpoint, include_ema=False)
        return path, checkpoint
    skipped = []
    for candidate in _candidates(path):
        try:
            checkpoint = read_checkpoint(candidate, map_location).contents
            check_resumable(candidate, checkpoint)
        except CheckpointError as error:
            skipped.append(str(error))
            log.warning(f"Skipping checkpoint: {error}")
            continue
        if candidate != path:
            reason = f"which was skipped: {skipped[0]}" if skipped else "which is older"
            message = f"Using {candidate} (global step {checkpoint.get('global_step')}) instead of {path}, {reason}"
            log.warning(message)
        return candidate, checkpoint
    raise CheckpointError(
        f"No usable checkpoint in {path.parent}: " + "; ".join(skipped)
        + f". Fix: delete the broken files (or the directory {path.parent}) to start afresh"
    )


class SafeAtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO``: atomic writes beside the target, ``weights_only`` reads with fallback."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: _PATH, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_atomically(checkpoint, path)

    def load_checkpoint(self, path: _PATH, map_location: Optional[Any] = lambda storage, loc: storage, weights_only: Optional[bool] = None) -> Dict[str, Any]:
        return load_newest_valid(path, map_location)[1]
