"""A STAR-easy training run killed after a checkpoint resumes, with the same command, where it was.

Both ways of stopping are covered: SIGKILL (resume from ``last.ckpt``, the last periodic
checkpoint) and SIGTERM (Lightning stops at the next step and xlm-core's OnExceptionCheckpoint
writes ``on_exception.ckpt``, which resuming prefers). The proof is a comparison with an uninterrupted run of the same command: after resuming, the
final weights, optimizer moments and step counter must equal the reference bit for bit, which
holds only if the step counter, optimizer, LR schedule, EMA and the train loader's position
(sampler order and offset within the epoch) were all restored from the checkpoint.
"""

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, XLM, offline_env, run_xlm

pytestmark = pytest.mark.slow
MAX_STEPS = 40
RUN = [
    "job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL,
    "per_device_batch_size=16", "global_batch_size=16",  # 16 batches per epoch: resume lands mid-epoch
    f"trainer.max_steps={MAX_STEPS}", "trainer.val_check_interval=1000", "trainer.log_every_n_steps=1",
    "callbacks.checkpoint_every_n_steps.every_n_train_steps=5", "+trainer.limit_test_batches=1",
]


def _load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _wait_for_checkpoint(proc: subprocess.Popen, last: Path, timeout: float = 600) -> int:
    """Poll until ``last`` holds a readable checkpoint; return its global step."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        if last.is_file():
            try:
                return _load(last)["global_step"]
            except Exception:  # being written
                pass
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint at {last} after {timeout}s")


@pytest.fixture(scope="module")
def reference(star_data_dir, tmp_path_factory):
    """The last checkpoint of the uninterrupted run and its job-name directory."""
    ref_logs = tmp_path_factory.mktemp("reference") / "logs"
    run_xlm(RUN, cwd=REPO_ROOT, env=offline_env(star_data_dir, ref_logs))
    (job_dir,) = list(ref_logs.iterdir())
    return _load(job_dir / "checkpoints" / "last.ckpt"), job_dir.name


def _assert_same_training_state(reference, resumed):
    assert resumed["global_step"] == reference["global_step"] == MAX_STEPS
    for key, value in reference["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), f"weights differ at {key}"
    ref_opt, res_opt = reference["optimizer_states"][0]["state"], resumed["optimizer_states"][0]["state"]
    for idx, state in ref_opt.items():
        assert int(state["step"]) == int(res_opt[idx]["step"]) == MAX_STEPS
        assert torch.equal(state["exp_avg"], res_opt[idx]["exp_avg"])


def test_sigkilled_run_resumes_from_last_checkpoint_and_matches_uninterrupted_run(reference, star_data_dir, tmp_path):
    reference_ckpt, job_name = reference
    logs = tmp_path / "logs"
    env = offline_env(star_data_dir, logs)
    proc = subprocess.Popen([str(XLM), *RUN], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        last = logs / job_name / "checkpoints" / "last.ckpt"
        step_at_kill = _wait_for_checkpoint(proc, last)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert 0 < step_at_kill < MAX_STEPS
    resumed_from = _load(last)["global_step"]

    out = run_xlm(RUN, cwd=REPO_ROOT, env=env).stdout
    assert f"Restoring states from the checkpoint path at {last}" in out
    assert resumed_from % 5 == 0 and resumed_from < MAX_STEPS

    _assert_same_training_state(reference_ckpt, _load(last))


def test_sigtermed_run_saves_where_it_stopped_and_resumes_from_there(reference, star_data_dir, tmp_path):
    reference_ckpt, job_name = reference
    logs = tmp_path / "logs"
    env = offline_env(star_data_dir, logs)
    checkpoints = logs / job_name / "checkpoints"
    proc = subprocess.Popen([str(XLM), *RUN], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_checkpoint(proc, checkpoints / "last.ckpt")
        proc.send_signal(signal.SIGTERM)
    finally:
        proc.wait(timeout=120)
    on_exception = checkpoints / "on_exception.ckpt"
    assert on_exception.is_file(), "SIGTERM did not leave on_exception.ckpt"
    stopped_at = _load(on_exception)["global_step"]
    assert 0 < stopped_at < MAX_STEPS

    out = run_xlm(RUN, cwd=REPO_ROOT, env=env).stdout
    assert f"Restoring states from the checkpoint path at {on_exception}" in out
    _assert_same_training_state(reference_ckpt, _load(checkpoints / "last.ckpt"))
