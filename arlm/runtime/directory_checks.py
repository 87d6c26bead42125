"""The directories a job writes (``LOG_DIR``, ``DATA_DIR``), checked before Hydra creates anything.

Hydra makes the run directory (``<LOG_DIR>/<job_name>/runs/<time>``) before any job callback
runs, so a ``LOG_DIR`` that is a file, lies under a file or is a dangling symbolic link ended in a
raw ``NotADirectoryError`` / ``FileExistsError`` naming neither the variable nor the fix, and a
read-only or full one failed later, part-way. :func:`directory_problems` runs from
:meth:`arlm.runtime.config_checks.ConfigCheckCallback.on_run_start` (and ``on_multirun_start``),
before that. ``DATA_DIR`` must be writable and have room only for ``job_type=prepare_data``:
other jobs may read a prepared cache from a read-only place.
"""

import os
from typing import Any, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

MIN_FREE_BYTES = 1 << 20
"""Less free space than this on the filesystem of a directory to write is taken as full."""
DIRECTORIES = (("paths.log_dir", "LOG_DIR"), ("paths.data_dir", "DATA_DIR"))


def _existing_ancestor(path: str) -> Tuple[str, Optional[str]]:
    """The deepest existing ancestor of ``path`` (or ``path``), and the problem on the way there:
    a dangling symbolic link, or a file where a directory has to be made."""
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        current = os.path.dirname(current)
    if os.path.islink(current) and not os.path.exists(current):
        return current, f"{current} is a symbolic link to {os.readlink(current)}, which does not exist"
    if not os.path.isdir(current):
        if current == os.path.abspath(path):
            return current, f"{current} is a file, not a directory"
        return current, f"{current} is a file, so {path} cannot be created under it"
    return current, None


def directory_problem(path: Any, name: str, must_write: bool) -> Optional[str]:
    """What keeps the job from using ``path`` (the value of ``name``) as a directory, or None."""
    text = str(path)
    if not text.strip():
        return f"{name} is empty. Fix: set it to a directory path (unset it for the default)"
    if text.startswith("~"):
        return f"{name}={text} starts with '~', which is not expanded here. Fix: use an absolute path ($HOME/...)"
    ancestor, problem = _existing_ancestor(text)
    if problem is not None:
        return f"{name}={text}: {problem}. Fix: point {name} at a directory (new or existing)"
    if not must_write:
        return None
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return (
            f"{name}={text}: {ancestor} is not writable (permissions, or a read-only filesystem). "
            f"Fix: point {name} at a writable directory"
        )
    stats = os.statvfs(ancestor)
    free = stats.f_bavail * stats.f_frsize
    if free < MIN_FREE_BYTES:
        return f"{name}={text}: the filesystem of {ancestor} is full ({free} bytes free). Fix: free space, or point {name} at another filesystem"
    return None


def directory_problems(cfg: DictConfig) -> List[str]:
    """One message per directory of :data:`DIRECTORIES` the job cannot use."""
    problems = []
    for key, variable in DIRECTORIES:
        try:
            path = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        except Exception:
            continue
        if path is None:
            continue
        must_write = key == "paths.log_dir" or cfg.get("job_type") == "prepare_data"
        problem = directory_problem(path, f"{variable} ({key})", must_write)
        if problem is not None:
            problems.append(problem)
    return problems
