"""One training run per ``job_name`` at a time.

Two ``train`` commands with one ``job_name`` share ``logs/<job_name>/``: their checkpoints,
``config_tree.txt``, predictions and the next resume would mix. :class:`RunLockCallback` (a Hydra
callback, so it runs before the job writes anything) takes an exclusive ``fcntl.flock`` on
``<paths.output_dir>/run.lock`` and keeps it until the process ends. The kernel drops the lock
when its holder dies, however it dies, so a lock left by a killed run never blocks; the file
itself only records who holds it (pid, start time, command) for the message of the run refused.
"""

import fcntl
import os
import sys
import time
from pathlib import Path
from typing import IO, Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

LOCK_NAME = "run.lock"
LOCKED_JOB_TYPES = ("train",)
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def is_rank_zero_process() -> bool:
    """False in the worker processes of a distributed run (DDP re-runs the command per device)."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


class RunInProgressError(RuntimeError):
    """Another live process holds the lock of this ``job_name``."""


class RunRefused(SystemExit):
    """Exit status 1 with :class:`RunInProgressError`'s message. Hydra turns an ``Exception`` raised
    by a callback into a warning and goes on, so the refusal must be a ``SystemExit``."""


class RunLock:
    """Exclusive, non-blocking ``flock`` on ``<directory>/run.lock``; :meth:`acquire` raises if taken."""

    def __init__(self, directory: Path, job_name: str = ""):
        self.path = Path(directory) / LOCK_NAME
        self.job_name = job_name
        self._file: Optional[IO[str]] = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            handle.close()
            raise RunInProgressError(
                f"Another run with job_name={self.job_name} is running ({holder}); it holds {self.path}. "
                f"Fix: wait for it to finish or stop it, or give this run another job_name=..."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}, command: {' '.join(sys.argv)}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class RunLockCallback(Callback):
    """Hydra callback: hold :class:`RunLock` on ``paths.output_dir`` for ``job_type=train`` jobs
    (in the rank-0 process only: the other processes of a distributed run are its own)."""

    def __init__(self) -> None:
        self.lock: Optional[RunLock] = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if OmegaConf.select(config, "job_type", default=None) not in LOCKED_JOB_TYPES or not is_rank_zero_process():
            return
        output_dir = OmegaConf.select(config, "paths.output_dir", default=None)
        if output_dir is None:
            return
        self.lock = RunLock(Path(output_dir), str(OmegaConf.select(config, "job_name", default="")))
        try:
            self.lock.acquire()
        except RunInProgressError as error:
            self.lock = None
            raise RunRefused(f"{type(error).__name__}: {error}") from None
        except OSError as error:
            self.lock = None
            raise RunRefused(
                f"Cannot take the run lock {Path(output_dir) / LOCK_NAME} of job_name={config.job_name}: {error}. "
                f"Fix: make {output_dir} a writable directory and {LOCK_NAME} in it a file (or remove it)"
            ) from None

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
