"""A training run always ends with a checkpoint of its last step.

xlm-core's periodic checkpoint (``callbacks.checkpoint_every_n_steps``) writes ``last.ckpt`` every
``every_n_train_steps`` steps only, so a run whose ``trainer.max_steps`` is not a multiple of it
(``trainer.max_steps=20`` against the STAR experiments' 1000) trained and tested, then left nothing
for ``eval``, ``generate_arlm``, ``export_hf`` or a resume to read. :class:`FinalCheckpoint`
writes that callback's ``last.ckpt`` once more when training ends at a step no checkpoint was
written at, through ``Trainer.save_checkpoint`` (so the strategy's format: one file, or a sharded
directory under FSDP2; every rank takes part). A run stopped by an exception never gets here: that
is ``on_exception.ckpt``'s job (:mod:`arlm.runtime.stopped_run`).
"""

from pathlib import Path
from typing import Any, Dict, Optional

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class FinalCheckpoint(Callback):
    """Writes ``<dirpath>/last.ckpt`` of the first ``save_last`` ``ModelCheckpoint`` at the end of
    training, unless a checkpoint was written at the final step already or no step was trained."""

    def __init__(self) -> None:
        self.saved_at_step: Optional[int] = None

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: Dict[str, Any]) -> None:
        self.saved_at_step = trainer.global_step

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_step == 0 or self.saved_at_step == trainer.global_step:
            return
        keeping_last = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.save_last and c.dirpath]
        if keeping_last:
            name = ModelCheckpoint.CHECKPOINT_NAME_LAST + ModelCheckpoint.FILE_EXTENSION
            trainer.save_checkpoint(str(Path(keeping_last[0].dirpath) / name))
