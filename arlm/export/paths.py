"""Where an export may not be written: over what is there without ``overwrite``, or onto, over
or into what the run owns.

:func:`check_output_dir` refuses an existing file, link or non-empty directory unless
``overwrite``. An export replaces its ``output_dir`` when asked to, so an ``output_dir`` that is
the checkpoint being exported, or a directory holding checkpoints or the data cache, would delete
them. :func:`refuse_unsafe_output_dir` refuses, before anything is written, an ``output_dir`` that

* is, contains or lies inside the input checkpoint;
* is or contains a checkpoint directory: a directory holding ``*.ckpt`` files (below
  ``output_dir`` looked for only when it would be replaced). A new directory inside or beside a
  checkpoint directory is allowed: writing it deletes nothing, and exports usually go there;
* is, contains or lies inside a data cache directory (``DATA_DIR``,
  ``datamodule.manual_cache_dir``: :func:`data_cache_dirs` of the run's or the checkpoint's
  config), which a later ``prepare_data`` may rebuild.

Paths are compared after resolving symbolic links, so another spelling of the same place is caught.
"""

import os
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional

from arlm.checkpoints.read import CHECKPOINT_SUFFIX
from arlm.runtime.atomic_files import occupant

DATA_CACHE_KEYS = (("paths", "data_dir"), ("datamodule", "manual_cache_dir"))


def data_cache_dirs(config: Mapping[str, Any]) -> List[Path]:
    """The data cache directories a run's config names (a plain dict, such as the one a
    checkpoint records, or an OmegaConf node); an unset or unresolvable value names none."""
    found = []
    for section, key in DATA_CACHE_KEYS:
        try:
            value = (config.get(section) or {}).get(key)
        except Exception:  # an interpolation that cannot be resolved names no directory
            continue
        if isinstance(value, str) and value and not value.startswith("${"):
            found.append(Path(value))
    return found


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Raise ``ValueError`` if ``output_dir`` is taken (a file, a link, a non-empty directory) and
    ``overwrite`` is False."""
    kind = None if overwrite else occupant(output_dir)
    if kind is not None:
        raise output_dir_taken(output_dir, kind)


def output_dir_taken(output_dir: Path, kind: str) -> ValueError:
    """The refusal of an ``output_dir`` that ``kind`` (``"is an existing file"``...) describes."""
    return ValueError(
        f"output_dir {output_dir} {kind}; choose a new directory or pass overwrite=True "
        "(+export_hf.overwrite=true) to replace it"
    )


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
