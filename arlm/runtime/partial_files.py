"""The temporaries atomic writes leave beside their targets, and the removal of those whose writer died.

Every atomic write (:mod:`arlm.runtime.atomic_files`) goes through a temporary beside its target
named ``.<target name>.partial-<pid>-<token>@<host>``. A hard kill (SIGKILL, power loss) can leave
one behind; the pid and host in its name tell a dead writer's leftover from a live one, and every
write (and :func:`remove_dead_writers_temporaries`) deletes those of dead processes of this host
in its directory. Those of other hosts (a shared filesystem) are kept, whose processes cannot be
seen from here, and named in the log.
"""

import logging
import os
import re
import shutil
import socket
import uuid
from pathlib import Path
from typing import List

log = logging.getLogger(__name__)

TEMPORARY_MARKER = ".partial-"
TEMPORARY_NAME = re.compile(
    r"^\.(?P<target>.+)\.partial-(?P<pid>\d{1,7})-(?P<token>[0-9a-zA-Z]+)(@(?P<host>[0-9A-Za-z_-]+))?$"
)
HOST = re.sub(r"[^0-9A-Za-z_-]", "_", socket.gethostname().split(".")[0]) or "localhost"


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists on this machine (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary_path(target: Path) -> Path:
    """A new ``.<name>.partial-<pid>-<token>@<host>`` path beside ``target``."""
    return target.with_name(f".{target.name}{TEMPORARY_MARKER}{os.getpid()}-{uuid.uuid4().hex[:12]}@{HOST}")


def remove_dead_writers_temporaries(directory: Path) -> List[Path]:
    """Delete the temporaries in ``directory`` of dead processes of this host (a name without a
    host is taken as this host's) and return them; log them, and those of other hosts, once."""
    directory = Path(directory)
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    removed, other_hosts = [], []
    for path in entries:
        match = TEMPORARY_NAME.match(path.name)
        if match is None:
            continue
        if match["host"] not in (None, HOST):
            other_hosts.append(path)
        elif not pid_alive(int(match["pid"])):
            discard(path)
            if not (path.exists() or path.is_symlink()):
                removed.append(path)
    if removed:
        log.warning(
            f"Removed {len(removed)} temporaries left in {directory} by writers that died: "
            + ", ".join(p.name for p in removed)
        )
    if other_hosts:
        log.info(
            f"Kept {len(other_hosts)} temporaries in {directory} of writers on other hosts (this is {HOST}); "
            f"delete them if those writers are gone: " + ", ".join(p.name for p in other_hosts)
        )
    return removed


def discard(path: Path) -> None:
    """Remove ``path`` (a file, a link or a directory tree) if it is there; never raise."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass
