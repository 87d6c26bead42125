"""A NaN stop does not become the resume point, and a resumed run uses the command's learning rate.

Run 1 trains 4 steps. Run 2 resumes it with ``optimizer.lr=1e30``: the change is reported (and
applied: before, the checkpoint's rate silently won) and the loss becomes NaN; the error names
the step and the settings to change. Run 3, the corrected command, skips the ``on_exception.ckpt``
written at the NaN stop, resumes from ``last.ckpt`` and finishes.
"""

import pytest

from arlm.runtime.checkpoint_io import load_safely
from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, offline_env, run_xlm

pytestmark = pytest.mark.slow

RUN = ["job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL,
       "per_device_batch_size=16", "global_batch_size=16", "trainer.val_check_interval=1000",
       "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1",
       "callbacks.checkpoint_every_n_steps.every_n_train_steps=2"]


def test_nan_stop_is_skipped_on_resume_and_changed_lr_is_reported(star_data_dir, tmp_path):
    logs = tmp_path / "logs"
    env = offline_env(star_data_dir, logs)
    run_xlm([*RUN, "trainer.max_steps=4"], cwd=REPO_ROOT, env=env)
    (checkpoints,) = list(logs.glob("*/checkpoints"))

    diverged = run_xlm([*RUN, "trainer.max_steps=8", "optimizer.lr=1e30"], cwd=REPO_ROOT, env=env, check=False)
    assert diverged.returncode != 0
    out = diverged.stdout
    assert "the checkpoint's optimizer was configured with lr=0.003, this command sets optimizer.lr=1e+30" in out
    assert "NonFiniteLossError: NaN loss encountered in training step" in out
    assert "Fix: lower optimizer.lr (now 1e+30), raise lr_scheduler.num_warmup_steps" in out
    on_exception = checkpoints / "on_exception.ckpt"

    out = run_xlm([*RUN, "trainer.max_steps=8"], cwd=REPO_ROOT, env=env).stdout
    if on_exception.exists():
        assert f"instead of {on_exception}, which was skipped" in out
        assert "written when training stopped on a non-finite loss" in out
    assert "(global step 4)" in out or f"Restoring states from the checkpoint path at {checkpoints / 'last.ckpt'}" in out
    assert load_safely(checkpoints / "last.ckpt")["global_step"] == 8
