"""Checkpoints survive faults: a SIGKILL during a write, a full disk, a truncated ``last.ckpt``.

The log directory is a real tmpfs (another filesystem than ``$TMPDIR``, where Lightning's own
writer would have copied a half-written file into place). After each fault every ``*.ckpt`` left
must load, and re-running the same command must resume from the newest valid checkpoint and
finish at ``max_steps``.
"""

import signal
import subprocess
import time
from pathlib import Path

import pytest

from arlm.checkpoints.read import read_checkpoint
from tests.e2e.faults import resize_tmpfs, tmpfs
from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, XLM, offline_env, run_xlm

pytestmark = pytest.mark.slow

BASE = ["job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, "per_device_batch_size=16", "global_batch_size=16",
        "trainer.val_check_interval=2", "+trainer.limit_test_batches=1", "+trainer.limit_val_batches=1",
        "callbacks.checkpoint_every_n_steps.every_n_train_steps=2"]
# Big enough (about 50 MB per checkpoint) for a write to take long enough to be caught.
WIDE_MODEL = ["model.d_model=256", "model.num_layers=4", "model.nhead=4", "model.rotary_emb_dim=32"]


def _assert_all_checkpoints_load(directory: Path) -> None:
    for path in directory.glob("*.ckpt"):
        read_checkpoint(path).contents


def _global_step(path: Path) -> int:
    return read_checkpoint(path).contents["global_step"]


def test_sigkill_during_a_checkpoint_write_on_tmpfs_leaves_no_partial_checkpoint(star_data_dir, tmp_path):
    with tmpfs(tmp_path / "logs", "1g") as logs:
        run = [*BASE, *WIDE_MODEL, "trainer.max_steps=8"]
        env = offline_env(star_data_dir, logs)
        proc = subprocess.Popen([str(XLM), *run], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        caught = None
        try:
            deadline = time.time() + 600
            while caught is None and time.time() < deadline and proc.poll() is None:
                if any(logs.glob("*/checkpoints/last.ckpt")):  # kill a later write, so there is one to resume
                    caught = next(iter(logs.glob("*/checkpoints/.*.partial-*")), None)
                if caught is None:
                    time.sleep(0.001)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
        assert caught is not None, "no checkpoint was written beside its target through a temporary file"
        checkpoints = caught.parent
        _assert_all_checkpoints_load(checkpoints)
        resumable = _global_step(checkpoints / "last.ckpt")
        assert 0 < resumable < 8

        out = run_xlm(run, cwd=REPO_ROOT, env=env).stdout
        assert not list(checkpoints.glob(".*.partial-*")), "the orphaned temporary file was not removed"
        assert "Restoring states from the checkpoint path" in out
        assert _global_step(checkpoints / "last.ckpt") == 8


def test_full_tmpfs_leaves_only_whole_checkpoints_and_the_same_command_resumes(star_data_dir, tmp_path):
    with tmpfs(tmp_path / "logs", "1m") as logs:
        run = [*BASE, *TINY_MODEL, "trainer.max_steps=6"]
        env = offline_env(star_data_dir, logs)
        failed = run_xlm(run, cwd=REPO_ROOT, env=env, check=False)
        assert failed.returncode != 0
        assert "Could not write checkpoint" in failed.stdout and "No space left on device" in failed.stdout
        (checkpoints,) = list(logs.glob("*/checkpoints"))
        assert not list(checkpoints.glob(".*.partial-*"))
        _assert_all_checkpoints_load(checkpoints)
        written = sorted(checkpoints.glob("*.ckpt"))
        assert written, "not even the first checkpoint fitted; the test's tmpfs is too small"
        newest = max(_global_step(p) for p in written)

        resize_tmpfs(logs, "64m")
        out = run_xlm(run, cwd=REPO_ROOT, env=env).stdout
        assert "Restoring states from the checkpoint path" in out
        assert newest < 6
        assert _global_step(checkpoints / "last.ckpt") == 6


def test_truncated_last_checkpoint_is_skipped_by_resume_and_eval(star_data_dir, tmp_path):
    logs = tmp_path / "logs"
    env = offline_env(star_data_dir, logs)
    run_xlm([*BASE, *TINY_MODEL, "trainer.max_steps=4"], cwd=REPO_ROOT, env=env)
    (checkpoints,) = list(logs.glob("*/checkpoints"))
    last = checkpoints / "last.ckpt"
    with open(last, "r+b") as f:
        f.truncate(last.stat().st_size // 3)

    out = run_xlm([*BASE, *TINY_MODEL, "trainer.max_steps=6"], cwd=REPO_ROOT, env=env).stdout
    assert f"instead of {last}, which was skipped: {last} is truncated or corrupt" in out
    assert "(global step 4)" in out
    assert _global_step(last) == 6

    best = checkpoints / "best.ckpt"
    best.write_bytes(b"")
    evaluated = run_xlm(["job_type=eval", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL,
                         "+trainer.limit_val_batches=1"], cwd=REPO_ROOT, env=env).stdout
    assert f"{best} is empty (0 bytes)" in evaluated
    assert "val/lm/accumulated_loss" in evaluated
