"""``ParallelTextDataModule``: xlm-core's ``TextDataModule`` that also serves ``trainer_strategy=fsdp2``.

xlm-core 0.3.1 tells a distributed run by the strategy's class, Lightning's ``DDPStrategy`` or
``FSDPStrategy``, and refuses any other (``Dataloader does not support <class
'...ModelParallelStrategy'> strategy``). Lightning's ``ModelParallelStrategy`` (FSDP2, arlm's
:class:`arlm.runtime.fsdp2_strategy.FSDP2Strategy`) is distributed too: each rank reads its own
part of every training batch, through the same sampler as under DDP (xlm-core's
``StatefulDistributedSampler``, or ``split_dataset_by_node`` for an iterable dataset), so a global
batch holds the same rows under DDP and FSDP2. Every other choice is xlm-core's.
"""

from lightning.pytorch.strategies import ModelParallelStrategy
from xlm.datamodule import TextDataModule


class ParallelTextDataModule(TextDataModule):
    """``TextDataModule`` distributed under ``ModelParallelStrategy`` as under DDP (module docstring)."""

    def _is_distributed(self) -> bool:
        if self.trainer is not None and isinstance(self.trainer.strategy, ModelParallelStrategy):
            return True
        return super()._is_distributed()
