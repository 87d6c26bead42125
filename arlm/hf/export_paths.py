"""Where an export may not be written: onto, over or into what the run owns.

An export replaces its ``output_dir`` when asked to (``overwrite``), so an ``output_dir`` that is
the checkpoint being exported, or a directory holding checkpoints or the data cache, would delete
them. :func:`refuse_unsafe_output_dir` refuses, before anything is written, an ``output_dir`` that

* is, contains or lies inside the input checkpoint;
* is or contains a checkpoint directory: a directory holding ``*.ckpt`` files (below
  ``output_dir`` looked for only when it would be replaced). A new directory inside or beside a
  checkpoint directory is allowed: writing it deletes nothing, and exports usually go there;
* is, contains or lies inside a data cache directory (``DATA_DIR``,
  ``datamodule.manual_cache_dir``), which a later ``prepare_data`` may rebuild.

Paths are compared after resolving symbolic links, so another spelling of the same place is caught.
"""

import os
from pathlib import Path
from typing import Iterable, Optional

CHECKPOINT_SUFFIX = ".ckpt"


def refuse_unsafe_output_dir(
    output_dir: Path, checkpoint: Path, data_dirs: Iterable[Path], overwrite: bool
) -> None:
    """Raise ``ValueError`` naming ``output_dir``, the path it would harm and the fix."""
    out = output_dir.resolve()
    relation = _relation(out, checkpoint.resolve())
    if relation is not None:
        _refuse(output_dir, f"{relation} the checkpoint {checkpoint} being exported")
    for data_dir in data_dirs:
        relation = _relation(out, data_dir.resolve())
        if relation is not None:
            _refuse(output_dir, f"{relation} the data cache directory {data_dir}")
    held = _checkpoint_in(out)
    if held is not None:
        _refuse(output_dir, f"is a checkpoint directory (it holds {held.name})")
    if overwrite and out.is_dir() and not out.is_symlink():
        below = _checkpoint_below(out)
        if below is not None:
            _refuse(output_dir, f"contains the checkpoint directory {below.parent} (it holds {below.name})")


def _relation(out: Path, owned: Path) -> Optional[str]:
    if out == owned:
        return "is"
    if owned.is_relative_to(out):
        return "contains"
    if out.is_relative_to(owned):
        return "lies inside"
    return None


def _refuse(output_dir: Path, what: str) -> None:
    raise ValueError(
        f"output_dir {output_dir} {what}; exporting there could replace or mix with files the run "
        f"owns (with overwrite=True the directory is deleted). Fix: choose an output_dir outside "
        f"the run's checkpoint and data directories, e.g. a new directory beside the run"
    )


def _checkpoint_in(directory: Path) -> Optional[Path]:
    """A ``*.ckpt`` file directly in ``directory``, or None."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(CHECKPOINT_SUFFIX) and entry.is_file():
                    return Path(entry.path)
    except OSError:
        return None
    return None


def _checkpoint_below(root: Path) -> Optional[Path]:
    """The first ``*.ckpt`` file anywhere below ``root`` (symbolic links not followed), or None."""
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(CHECKPOINT_SUFFIX):
                return Path(directory) / name
    return None
