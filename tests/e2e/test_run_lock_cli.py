"""Two train runs with one job_name: the second refuses to start; a killed run's lock does not block."""

import signal
import sys
import subprocess
import time

import pytest

from arlm.checkpoints.read import read_checkpoint
from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, TINY_TRAIN, XLM, offline_env, run_xlm

pytestmark = pytest.mark.slow

EXPERIMENT = ["job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL]
ENDLESS = ["per_device_batch_size=16", "global_batch_size=16", "trainer.max_steps=100000",
           "trainer.val_check_interval=100000", "callbacks.checkpoint_every_n_steps.every_n_train_steps=100000"]


def test_second_run_of_a_job_name_refuses_and_a_killed_runs_lock_does_not_block(star_data_dir, tmp_path):
    logs = tmp_path / "logs"
    env = offline_env(star_data_dir, logs)
    first = subprocess.Popen([str(XLM), *EXPERIMENT, *ENDLESS], cwd=REPO_ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not any(f"pid {first.pid}," in p.read_text() for p in logs.glob("*/run.lock")):
            assert first.poll() is None and time.time() < deadline, "the first run never took its lock"
            time.sleep(0.2)
        second = run_xlm([*EXPERIMENT, *TINY_TRAIN], cwd=REPO_ROOT, env=env, check=False)
        assert second.returncode != 0
        assert "Another run with job_name=star_easy__arlm_seq2seq" in second.stdout
        assert f"is running (pid {first.pid}, started" in second.stdout
        assert not list(logs.glob("*/checkpoints/*.ckpt")), "the refused run wrote checkpoints"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)

    run_xlm([*EXPERIMENT, *TINY_TRAIN], cwd=REPO_ROOT, env=env)
    (last,) = list(logs.glob("*/checkpoints/last.ckpt"))
    assert read_checkpoint(last).contents["global_step"] == 4


HOLD_LOCK = (
    "import sys, time; from pathlib import Path; from arlm.runtime.run_lock import RunLock; "
    "lock = RunLock(Path(sys.argv[1])); lock.acquire(); print('held', flush=True); time.sleep(600)"
)


def test_a_refused_run_writes_nothing_a_held_lock_or_a_bad_job_name(tmp_path):
    """Round 4, case 7: the job_name check and the lock come before Hydra writes runs/<time>/."""
    logs = tmp_path / "logs"
    env = offline_env(tmp_path / "data", logs)
    output_dir = logs / "held"
    output_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(output_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        proc = run_xlm([*EXPERIMENT, "job_name=held"], cwd=REPO_ROOT, env=env, check=False)
        assert proc.returncode != 0 and f"is running (pid {holder.pid}," in proc.stdout, proc.stdout[-3000:]
        assert sorted(p.name for p in output_dir.iterdir()) == ["run.lock"]
    finally:
        holder.kill()
        holder.wait(timeout=60)
    for job_name in ["..", "../escape", "x\n## Install"]:  # the last one quoted, as Hydra then takes it
        proc = run_xlm([*EXPERIMENT, f"job_name='{job_name}'"], cwd=REPO_ROOT, env=env, check=False)
        assert proc.returncode != 0 and f"job_name={job_name!r} must be a non-empty name without '/'" in proc.stdout
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["logs", "logs/held", "logs/held/run.lock"]
