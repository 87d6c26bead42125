"""A NaN stop does not become the resume point, and a resumed run uses the command's learning rate;
a resume point past the command's ``trainer.max_steps`` is refused, so is a fresh start
(``resume_from_checkpoint=false``) over a run's checkpoints, and one with NaN EMA weights is
skipped (and named where a job is told to use it).

The first test: run 1 trains 4 steps. Run 2 resumes it with ``optimizer.lr=1e30``: the change is reported (and
applied: before, the checkpoint's rate silently won) and the loss becomes NaN; the error names
the step and the settings to change. Run 3, the corrected command, skips the ``on_exception.ckpt``
written at the NaN stop, resumes from ``last.ckpt`` and finishes.
"""

import shutil

import pytest
import torch

from arlm.checkpoints.read import read_checkpoint
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
    assert read_checkpoint(checkpoints / "last.ckpt").contents["global_step"] == 8


VALIDATING = [arg if not arg.startswith("trainer.val_check_interval=") else "trainer.val_check_interval=2" for arg in RUN]


def test_a_finished_run_is_neither_resumed_past_max_steps_nor_overwritten(star_data_dir, tmp_path):
    """Before, fewer max_steps restored the step-4 ``last.ckpt``, trained nothing and tested the
    step-4 model as this 2-step run's; ``resume_from_checkpoint=false`` trained from step 0 and
    overwrote the finished run's checkpoints."""
    logs = tmp_path / "logs"
    env = offline_env(star_data_dir, logs)
    run_xlm([*VALIDATING, "trainer.max_steps=4"], cwd=REPO_ROOT, env=env)
    (checkpoints,) = list(logs.glob("*/checkpoints"))
    before = {p.name: p.stat().st_mtime_ns for p in checkpoints.glob("*.ckpt")}

    def refused(*overrides: str) -> str:
        proc = run_xlm([*VALIDATING, *overrides], cwd=REPO_ROOT, env=env, check=False)
        assert proc.returncode != 0
        assert "test/lm/accumulated_loss" not in proc.stdout
        assert {p.name: p.stat().st_mtime_ns for p in checkpoints.glob("*.ckpt")} == before
        return proc.stdout

    out = refused("trainer.max_steps=2")
    assert (f"ResumePastMaxStepsError: {checkpoints / 'last.ckpt'} is at global step 4, past trainer.max_steps=2 "
            "of this command: resuming it would train nothing") in out
    assert "Fix: raise trainer.max_steps above 4 to train on from it, or start a new run under another job_name=" in out

    out = refused("trainer.max_steps=4", "resume_from_checkpoint=false")
    assert (f"CheckpointsWouldBeOverwritten: checkpointing_dir={checkpoints} already holds checkpoints of an "
            "earlier run (") in out
    assert "resume_from_checkpoint=false starts at step 0 and would overwrite them. Fix:" in out
    assert "Loading model" not in out

def _poison_ema(path):
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["ema"]["shadow_params"][0].fill_(float("nan"))
    torch.save(checkpoint, path)


def test_nan_ema_checkpoint_is_skipped_on_resume_and_named_where_it_is_used(star_data_dir, tmp_path):
    """Before, resume restored the NaN EMA weights of ``last.ckpt`` and every re-run crashed
    with xlm-core's bare ``NaN loss encountered in training step 6``."""
    logs = tmp_path / "logs"
    env = offline_env(star_data_dir, logs)
    run_xlm([*VALIDATING, "trainer.max_steps=4"], cwd=REPO_ROOT, env=env)
    (checkpoints,) = list(logs.glob("*/checkpoints"))
    last, diverged = checkpoints / "last.ckpt", tmp_path / "diverged.ckpt"
    _poison_ema(last)
    shutil.copy(last, diverged)

    out = run_xlm([*VALIDATING, "trainer.max_steps=6"], cwd=REPO_ROOT, env=env).stdout
    assert f"{last} holds NaN/Inf EMA weights (ema.shadow_params[0]); a run that diverged wrote it" in out
    assert f"(global step 4) instead of {last}, which was skipped" in out
    resumed = read_checkpoint(last).contents
    assert resumed["global_step"] == 6 and all(bool(torch.isfinite(p).all()) for p in resumed["ema"]["shadow_params"])

    star = ["experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL]
    generate = ["job_type=generate_arlm", *star, "+generation.device=cpu", "+generation.max_batches=1",
                f"+generation.ckpt_path={diverged}", f"+generation.output_dir={tmp_path / 'gen'}"]
    proc = run_xlm(generate, cwd=REPO_ROOT, env=env, check=False)
    assert proc.returncode != 0
    assert (f"the EMA weights of {diverged} hold NaN/Inf (ema.shadow_params[0]); a run that diverged wrote them. "
            "Fix: use its raw weights with +generation.use_ema=false, or pass another checkpoint") in proc.stdout
    run_xlm([*generate, "+generation.use_ema=false"], cwd=REPO_ROOT, env=env)
    assert (tmp_path / "gen" / "prediction.jsonl").is_file()

    proc = run_xlm(["job_type=eval", *star, f"+eval.ckpt_path={diverged}", "+trainer.limit_val_batches=1"],
                   cwd=REPO_ROOT, env=env, check=False)
    assert proc.returncode != 0
    assert f"{diverged} holds NaN/Inf EMA weights (ema.shadow_params[0]), which the EMA callback would evaluate" in proc.stdout
    assert "Fix: evaluate its raw weights with callbacks.ema=null, or pass another checkpoint" in proc.stdout
