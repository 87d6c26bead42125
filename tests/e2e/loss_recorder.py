"""``GlobalLossRecorder``: a Lightning callback the distributed end-to-end tests add to a run
(``+callbacks.global_loss._target_=tests.e2e.loss_recorder.GlobalLossRecorder``).

xlm-core logs ``train/loss`` from rank 0 alone, i.e. the loss of rank 0's share of the batch.
This records the loss of the whole global batch at every optimizer step: each rank's mean loss
weighted by its number of target tokens, summed over ranks (one all-reduce), divided by the total
number of tokens: the loss a single process computes on the same rows. Rank 0 appends
``{"step", "loss", "tokens", "rank_tokens"}`` as a JSON line to ``path``.
"""

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from arlm.types_arlm import IGNORE_INDEX


class GlobalLossRecorder(Callback):
    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        tokens = (batch["target_ids"] != IGNORE_INDEX).sum().to(torch.float64)
        loss = outputs["loss"].detach().to(torch.float64)
        totals = trainer.strategy.reduce(torch.stack([loss * tokens, tokens]), reduce_op="sum")
        if trainer.is_global_zero:
            row = {"step": trainer.global_step, "loss": float(totals[0] / totals[1]), "tokens": int(totals[1]),
                   "rank_tokens": int(tokens)}
            with open(self.path, "a") as handle:
                handle.write(json.dumps(row) + "\n")
