"""One training run per ``job_name`` at a time.

Two ``train`` commands with one ``job_name`` share ``logs/<job_name>/``: their checkpoints,
``config_tree.txt``, predictions and the next resume would mix. :class:`RunLockCallback` (a Hydra
callback, so it runs before the job writes anything) takes ``<paths.output_dir>/run.lock`` with
``filelock`` (an exclusive ``flock``, tried once) and keeps it until the process ends. The kernel
drops the lock when its holder dies, however it dies, so a lock left by a killed run never
blocks. The file stays in place (``preserve_lock_file``) and holds only who holds it (pid, start
time, command), written by the holder once it has the lock and read for the message of the run
refused; a contender opens it without truncating it.
"""

import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from filelock import FileLock, Timeout
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from arlm.runtime.preflight import JobRefused

LOCK_NAME = "run.lock"
LOCKED_JOB_TYPES = ("train",)
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def is_rank_zero_process() -> bool:
    """False in the worker processes of a distributed run (DDP re-runs the command per device)."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


class RunInProgressError(RuntimeError):
    """Another live process holds the lock of this ``job_name``."""


def holder_description() -> str:
    """``"pid <pid>, started <time>, command: <argv>"`` of this process."""
    return f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}, command: {' '.join(sys.argv)}"


def _record_holder(fd: int) -> None:
    """Replace the lock file's contents with :func:`holder_description` (``fd`` is locked by us)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{holder_description()}\n".encode(), 0)


class RunLock:
    """``<directory>/run.lock`` held by one process; :meth:`acquire` raises if another one holds it."""

    def __init__(self, directory: Path, job_name: str = ""):
        self.path = Path(directory) / LOCK_NAME
        self.job_name = job_name
        self._lock = FileLock(self.path, blocking=False, preserve_lock_file=True, on_acquired=_record_holder)

    def acquire(self) -> None:
        """Take the lock and record this process in it; :class:`RunInProgressError` naming the
        holder when another process has it, ``OSError`` when the file cannot be opened or locked."""
        try:
            self._lock.acquire()
        except Timeout:
            holder = self.path.read_text(errors="replace").strip() or "unknown process"
            raise RunInProgressError(
                f"Another run with job_name={self.job_name} is running ({holder}); it holds {self.path}. "
                f"Fix: wait for it to finish or stop it, or give this run another job_name=..."
            ) from None

    def release(self) -> None:
        self._lock.release()


class RunLockCallback(Callback):
    """Hydra callback: hold :class:`RunLock` on ``paths.output_dir`` for ``job_type=train`` jobs
    (in the rank-0 process only: the other processes of a distributed run are its own).

    A single run takes it in ``on_run_start``, before Hydra makes ``runs/<time>/`` and writes its
    ``.hydra/*.yaml`` and ``job.log`` there, so a refused run writes nothing (two runs started in
    the same second would otherwise share one ``runs/<time>/``); each job of a sweep takes its own
    in ``on_job_start`` (its ``job_name`` is set per job). ``job_name`` itself is checked before
    (:class:`~arlm.runtime.preflight.Preflight`, listed first in ``hydra.callbacks``)."""

    def __init__(self) -> None:
        self.lock: Optional[RunLock] = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._acquire(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.lock is None:
            self._acquire(config)

    def _acquire(self, config: DictConfig) -> None:
        if OmegaConf.select(config, "job_type", default=None) not in LOCKED_JOB_TYPES or not is_rank_zero_process():
            return
        output_dir = OmegaConf.select(config, "paths.output_dir", default=None)
        if output_dir is None:
            return
        lock = RunLock(Path(output_dir), str(OmegaConf.select(config, "job_name", default="")))
        try:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except RunInProgressError as error:
            raise JobRefused(f"{type(error).__name__}: {error}") from None
        except OSError as error:
            raise JobRefused(
                f"Cannot take the run lock {lock.path} of job_name={config.job_name}: {error}. "
                f"Fix: make {output_dir} a writable directory and {LOCK_NAME} in it a file (or remove it)"
            ) from None
        self.lock = lock

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.on_job_end(config)
