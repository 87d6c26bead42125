"""``JobTimer``: a Lightning callback that records when each phase of an ``xlm`` job starts and
ends, for the benchmarks that run the real CLI (``cli_step_time.py``; ``gpu_suite.py``).

Added to a run with ``+callbacks.job_timer._target_=job_timer.JobTimer
+callbacks.job_timer.path=<file.json>`` and this folder on ``PYTHONPATH``. It writes one JSON
object at the end of the job (and after every validation, so that a stopped run leaves one):

- ``events``: ``[name, wall seconds, CPU seconds of the process]`` for ``train_batch_start`` /
  ``train_batch_end`` (every step), ``validation_start`` / ``validation_end``, ``test_start`` /
  ``test_end``, ``save_checkpoint``, ``fit_start`` / ``fit_end``, all relative to the process start;
- ``losses``: the training loss of every step, in order;
- ``process_start_unix``: when the process started (from ``/proc``), so that start-up is counted.
"""

import json
import os
import time
from pathlib import Path
from typing import Any, List

from lightning.pytorch import Callback


def _process_start_wall() -> float:
    """Seconds of ``time.time()`` when this process started (Linux ``/proc``; now elsewhere)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return time.time()


class JobTimer(Callback):
    """Timestamps of the phases of a job and the loss of every step, written to ``path``."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.start_unix = _process_start_wall()
        self.offset = time.time() - time.perf_counter() - self.start_unix
        self.events: List[list] = []
        self.losses: List[float] = []

    def _mark(self, name: str) -> None:
        self.events.append([name, time.perf_counter() + self.offset, time.process_time()])

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"process_start_unix": self.start_unix, "events": self.events, "losses": self.losses}))
        tmp.replace(self.path)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._mark("fit_start")

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._mark("train_batch_start")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._mark("train_batch_end")
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss) if loss is not None else float("nan"))

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._mark("validation_start")

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._mark("validation_end")
        self._write()

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: Any) -> None:
        self._mark("save_checkpoint")

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._mark("fit_end")
        self._write()

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._mark("test_start")

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self._mark("test_end")
        self._write()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._mark(f"teardown_{stage}")
        self._write()
