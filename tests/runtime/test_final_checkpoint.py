"""FinalCheckpoint: a training run ends with ``last.ckpt`` of its last step, written once."""

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from omegaconf import OmegaConf

from arlm.runtime.final_checkpoint import FinalCheckpoint
from arlm.runtime.preflight import sharded_fallback_problems


class CountingCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that counts the checkpoints its trainer writes."""

    saves = 0

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        CountingCheckpoint.saves += 1


def train(tmp_path, max_steps: int, every_n: int):
    CountingCheckpoint.saves = 0
    periodic = CountingCheckpoint(dirpath=tmp_path, every_n_train_steps=every_n, save_last=True, save_top_k=-1)
    trainer = Trainer(
        max_steps=max_steps, callbacks=[periodic, FinalCheckpoint()], accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )
    trainer.fit(BoringModel())
    return torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"]


def test_a_run_ending_between_periodic_checkpoints_leaves_last_ckpt_of_its_last_step(tmp_path):
    assert train(tmp_path, max_steps=3, every_n=1000) == 3
    assert CountingCheckpoint.saves == 1


def test_a_run_ending_on_a_periodic_checkpoint_is_not_written_twice(tmp_path):
    assert train(tmp_path, max_steps=4, every_n=2) == 4
    assert CountingCheckpoint.saves == 4  # steps 2 and 4, each its own file and last.ckpt; nothing more


def eval_config(directory, **keys):
    return OmegaConf.create({"job_type": "eval", "checkpointing_dir": str(directory), "eval": keys})


def test_eval_without_a_checkpoint_over_a_sharded_run_is_told_the_meta_pt_path(tmp_path):
    (tmp_path / "last.ckpt").mkdir()
    (tmp_path / "last.ckpt" / "meta.pt").write_bytes(b"")
    (tmp_path / "last.ckpt" / ".metadata").write_bytes(b"")  # what DCP writes beside the shards
    [problem] = sharded_fallback_problems(eval_config(tmp_path))
    assert f"+eval.ckpt_path={tmp_path / 'last.ckpt' / 'meta.pt'}" in problem
    assert sharded_fallback_problems(eval_config(tmp_path, ckpt_path="x.ckpt")) == []
    (tmp_path / "best.ckpt").write_bytes(b"")
    assert sharded_fallback_problems(eval_config(tmp_path)) == []
