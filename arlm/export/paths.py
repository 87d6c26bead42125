"""Where an export may not be written: over what is there without ``overwrite``, over anything
but an earlier export with it, or onto, over or into what the run owns.

:func:`check_output_dir` refuses an existing file, link or non-empty directory unless
``overwrite``; with ``overwrite``, :func:`refuse_unsafe_output_dir` still refuses all but an
earlier export: a directory holding ``config.json`` and nothing but plain files of the names an
export writes (:func:`not_an_export`), so a project, a git repository or a home directory is never
deleted. An export replaces its ``output_dir`` when asked to, so an ``output_dir`` that is
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
import re
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional, Union

from arlm.checkpoints.read import CHECKPOINT_SUFFIX
from arlm.export.remote_code import BUNDLE
from arlm.runtime.atomic_files import occupant

EXPORT_FILE_NAMES = frozenset({
    "config.json", "generation_config.json", "README.md",
    "model.safetensors", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "chat_template.jinja",
    *(f"{name}.py" for name in BUNDLE.values()),
})
"""The file names an export writes (with :data:`SHARDED_WEIGHTS`): what recognises an earlier one."""
SHARDED_WEIGHTS = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
GGUF_FILE = re.compile(r"model-[A-Za-z0-9_]+\.gguf")
"""The file of a ``format=gguf`` export (:func:`arlm.export.gguf_export.gguf_file_name`)."""

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


def export_directory(output_dir: Union[str, Path]) -> Path:
    """``output_dir`` as a ``Path``; ``.`` or ``..`` made absolute, so that the temporary written
    beside it and the card's name for it are those of the directory it names."""
    output_dir = Path(output_dir)
    return Path(os.path.abspath(output_dir)) if output_dir.name in ("", ".", "..") else output_dir


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Raise ``ValueError`` if ``output_dir`` is taken (a file, a link, a non-empty directory) and
    ``overwrite`` is False."""
    kind = None if overwrite else occupant(output_dir)
    if kind is not None:
        raise output_dir_taken(output_dir, kind)


def not_an_export(target: Path) -> Optional[str]:
    """None when ``target`` is a directory an export wrote (``config.json``, or a GGUF export's
    ``model-<dtype>.gguf``, and only plain files named as an export names them), else what was
    found instead (``"it holds .git"``)."""
    if target.is_symlink():
        return "it is a symbolic link"
    if not target.is_dir():
        return "it is a file"
    with os.scandir(target) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name not in EXPORT_FILE_NAMES and not (SHARDED_WEIGHTS.fullmatch(entry.name) or GGUF_FILE.fullmatch(entry.name)):
                return f"it holds {entry.name}, which an export does not write"
            if entry.is_symlink() or not entry.is_file():
                return f"it holds {entry.name}, which is not a plain file"
    if not (target / "config.json").is_file() and not any(GGUF_FILE.fullmatch(p.name) for p in target.iterdir()):
        return "it has neither config.json nor a model-<dtype>.gguf"
    return None


def output_dir_taken(output_dir: Path, kind: str) -> ValueError:
    """The refusal of an ``output_dir`` that ``kind`` (``"is an existing file"``...) describes."""
    return ValueError(
        f"output_dir {output_dir} {kind}; choose a new directory or pass overwrite=True "
        "(+export_hf.overwrite=true) to replace it"
    )


def refuse_unsafe_output_dir(
    output_dir: Path, checkpoint: Path, data_dirs: Iterable[Path], overwrite: bool
) -> None:
    """Raise ``ValueError`` naming ``output_dir``, the path it would harm and the fix; with
    ``overwrite``, also when ``output_dir`` is taken by anything but an earlier export."""
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
    foreign = not_an_export(output_dir) if overwrite and occupant(output_dir) is not None else None
    if foreign is not None:
        raise ValueError(
            f"output_dir {output_dir} is not an earlier export ({foreign}); overwrite=True replaces "
            f"only a directory an export wrote, never other files. Fix: choose a new or empty "
            f"directory, or remove {output_dir} yourself if nothing in it is needed"
        )


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
