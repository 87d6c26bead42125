"""A Lightning callback for the signal tests: it holds a run at a chosen point until a signal comes.

``+callbacks.hold._target_=tests.e2e.signal_points.HoldUntilSignal +callbacks.hold.stage=validation
+callbacks.hold.step=8 +callbacks.hold.marker=<file>`` makes the run write ``<file>`` (holding the
global step) at the first batch of that stage at or after that step, then wait there, for at most
``timeout`` seconds, until SIGTERM is received (Lightning's handler sets ``trainer.received_sigterm``)
or SIGINT raises ``KeyboardInterrupt``. The test sends the real signal from outside once the file
appears, so the signal lands in that stage every time.
"""

import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, Trainer


class HoldUntilSignal(Callback):
    def __init__(self, stage: str, marker: str, step: int = 0, timeout: float = 300.0):
        self.stage, self.marker, self.step, self.timeout = stage, Path(marker), int(step), float(timeout)

    def _hold(self, trainer: Trainer, stage: str) -> None:
        if stage != self.stage or self.marker.exists() or trainer.global_step < self.step or trainer.sanity_checking:
            return
        self.marker.write_text(str(trainer.global_step))
        deadline = time.time() + self.timeout
        while time.time() < deadline and not trainer.received_sigterm:
            time.sleep(0.02)

    def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
        self._hold(trainer, "train")

    def on_validation_batch_start(self, trainer: Trainer, *args: Any) -> None:
        self._hold(trainer, "validation")

    def on_test_batch_start(self, trainer: Trainer, *args: Any) -> None:
        self._hold(trainer, "test")
