"""A run stopped by a signal exits non-zero after its checkpoint is written, and the re-run finishes it.

Real ``xlm`` processes get real signals from outside. To land a signal in a chosen stage (training,
the validation of step 8, the test pass) the run is held there by
:class:`tests.e2e.signal_points.HoldUntilSignal` until the signal arrives. Checked: the exit status
(143 for SIGTERM, 1 for Ctrl+C), that the test pass does not run after a stop, that
``on_exception.ckpt`` holds the training weights (not the EMA ones swapped in for validation),
that re-running the same command redoes an interrupted validation (its metric and ``best.ckpt``)
and ends bit for bit where an uninterrupted run ends, and that two Ctrl+C during a checkpoint
write say the write was interrupted, keep the previous checkpoint and leave no temporary.
"""

import re
import signal
import subprocess
import time
from pathlib import Path
from typing import List, Tuple

import pytest
import torch

from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, XLM, offline_env, run_xlm

pytestmark = pytest.mark.slow
MAX_STEPS = 12


def _train(max_steps: int) -> List[str]:
    return [
        "job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL,
        "per_device_batch_size=16", "global_batch_size=16", f"trainer.max_steps={max_steps}",
        "trainer.val_check_interval=4", "trainer.log_every_n_steps=1",
        "callbacks.checkpoint_every_n_steps.every_n_train_steps=4",
        "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2",
    ]


RUN = _train(MAX_STEPS)
VAL_LOSS = re.compile(r"global step (\d+): 'val/lm/accumulated_loss' reached ([0-9.]+)")


def _load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _env(data_dir: Path, logs: Path):
    return offline_env(data_dir, logs, extra={"PYTHONPATH": str(REPO_ROOT)})


def _hold(stage: str, step: int, marker: Path) -> List[str]:
    return [
        "+callbacks.hold._target_=tests.e2e.signal_points.HoldUntilSignal",
        f"+callbacks.hold.stage={stage}", f"+callbacks.hold.step={step}", f"+callbacks.hold.marker={marker}",
    ]


def _signal_when(args: List[str], env, marker: Path, signum: int, timeout: float = 600) -> Tuple[int, str]:
    """Start ``xlm <args>``, send ``signum`` once ``marker`` appears; return (exit status, output).

    The output goes to a file beside ``marker``: a pipe nobody reads while the run goes on would
    block the run once it holds 64 KiB."""
    output = marker.with_name(marker.name + ".out")
    with open(output, "w") as sink:
        proc = subprocess.Popen([str(XLM), *args], cwd=REPO_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + timeout
        while not marker.exists():
            assert proc.poll() is None, f"the run ended before it reached the hold point:\n{output.read_text()[-4000:]}"
            assert time.time() < deadline, "the run never reached the hold point"
            time.sleep(0.05)
        proc.send_signal(signum)
        proc.wait(timeout=300)
    return proc.returncode, output.read_text()


@pytest.fixture(scope="module")
def reference(star_data_dir, tmp_path_factory):
    """The uninterrupted run: its last checkpoint, its validation losses by step, its job name."""
    logs = tmp_path_factory.mktemp("reference") / "logs"
    out = run_xlm(RUN, cwd=REPO_ROOT, env=_env(star_data_dir, logs)).stdout
    (job_dir,) = list(logs.iterdir())
    return _load(job_dir / "checkpoints" / "last.ckpt"), dict(VAL_LOSS.findall(out)), job_dir.name


def _assert_same_final_state(reference_ckpt, resumed):
    assert resumed["global_step"] == reference_ckpt["global_step"] == MAX_STEPS
    for key, value in reference_ckpt["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), f"weights differ at {key}"
    for idx, state in reference_ckpt["optimizer_states"][0]["state"].items():
        assert torch.equal(state["exp_avg"], resumed["optimizer_states"][0]["state"][idx]["exp_avg"])


def test_sigterm_during_training_exits_143_without_testing_and_the_rerun_finishes(reference, star_data_dir, tmp_path):
    reference_ckpt, _, job_name = reference
    logs, marker = tmp_path / "logs", tmp_path / "held"
    env = _env(star_data_dir, logs)
    status, out = _signal_when([*RUN, *_hold("train", 6, marker)], env, marker, signal.SIGTERM)
    on_exception = logs / job_name / "checkpoints" / "on_exception.ckpt"
    assert status == 143, out[-3000:]
    assert "Stopped by SIGTERM during training at step" in out and "Exit status 143" in out
    assert "Testing with checkpoint" not in out, "a stopped run went on to the test pass"
    assert _load(on_exception)["global_step"] >= 6

    resumed = run_xlm(RUN, cwd=REPO_ROOT, env=env).stdout
    assert f"Restoring states from the checkpoint path at {on_exception}" in resumed
    _assert_same_final_state(reference_ckpt, _load(logs / job_name / "checkpoints" / "last.ckpt"))


def test_sigterm_during_validation_keeps_training_weights_and_the_rerun_redoes_that_validation(reference, star_data_dir, tmp_path):
    reference_ckpt, reference_val, job_name = reference
    logs, marker = tmp_path / "logs", tmp_path / "held"
    env = _env(star_data_dir, logs)
    status, out = _signal_when([*RUN, *_hold("validation", 8, marker)], env, marker, signal.SIGTERM)
    checkpoints = logs / job_name / "checkpoints"
    assert status == 143, out[-3000:]
    assert "Stopped by SIGTERM during validation at step 8" in out
    assert "8" not in dict(VAL_LOSS.findall(out)), "the interrupted validation was reported as done"
    stopped, periodic = _load(checkpoints / "on_exception.ckpt"), _load(checkpoints / "0-8.ckpt")
    assert stopped["global_step"] == periodic["global_step"] == 8
    for key, value in periodic["state_dict"].items():
        assert torch.equal(value, stopped["state_dict"][key]), f"on_exception.ckpt holds EMA weights at {key}"

    resumed = run_xlm(RUN, cwd=REPO_ROOT, env=env).stdout
    assert "Resuming at step 8, whose validation was interrupted" in resumed
    assert dict(VAL_LOSS.findall(resumed)).get("8") == reference_val["8"], "the validation of step 8 was not redone"
    _assert_same_final_state(reference_ckpt, _load(checkpoints / "last.ckpt"))


def test_sigterm_during_test_exits_143_and_the_rerun_tests(reference, star_data_dir, tmp_path):
    _, _, job_name = reference
    logs, marker = tmp_path / "logs", tmp_path / "held"
    env = _env(star_data_dir, logs)
    status, out = _signal_when([*RUN, *_hold("test", 0, marker)], env, marker, signal.SIGTERM)
    assert status == 143, out[-3000:]
    assert f"Stopped by SIGTERM during test at step {MAX_STEPS}" in out

    rerun = run_xlm(RUN, cwd=REPO_ROOT, env=env).stdout
    assert "test/lm/perplexity" in rerun.split("Testing with checkpoint")[-1]


def test_ctrl_c_during_validation_exits_1_naming_the_checkpoint(reference, star_data_dir, tmp_path):
    _, _, job_name = reference
    logs, marker = tmp_path / "logs", tmp_path / "held"
    status, out = _signal_when([*RUN, *_hold("validation", 4, marker)], _env(star_data_dir, logs), marker, signal.SIGINT)
    assert status == 1, out[-3000:]
    assert "Stopped by SIGINT during validation at step 4" in out and "on_exception.ckpt" in out
    assert _load(logs / job_name / "checkpoints" / "on_exception.ckpt")["global_step"] == 4


@pytest.fixture(scope="module")
def trained(star_data_dir, tmp_path_factory):
    """The env and checkpoints directory of a finished 4-step run."""
    logs = tmp_path_factory.mktemp("trained") / "logs"
    env = _env(star_data_dir, logs)
    run_xlm(_train(4), cwd=REPO_ROOT, env=env)
    (checkpoints,) = list(logs.glob("*/checkpoints"))
    return env, checkpoints


def test_sigterm_during_eval_exits_143_and_writes_no_checkpoint(trained, tmp_path):
    env, checkpoints = trained
    marker = tmp_path / "held"
    before = sorted(p.name for p in checkpoints.iterdir())
    args = ["job_type=eval", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL, f"+eval.ckpt_path={checkpoints / 'last.ckpt'}"]
    status, out = _signal_when([*args, *_hold("validation", 0, marker)], env, marker, signal.SIGTERM)
    assert status == 143, out[-3000:]
    assert "Stopped by SIGTERM during validation" in out
    assert sorted(p.name for p in checkpoints.iterdir()) == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_generate_arlm_stopped_by_a_signal_exits_non_zero_and_writes_nothing(trained, tmp_path, signum):
    env, _ = trained
    output_dir = tmp_path / "generations"
    args = ["job_type=generate_arlm", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL, f"+generation.output_dir={output_dir}"]
    proc = subprocess.Popen([str(XLM), *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "Found manual cache" in line:
            break
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out[-3000:]
    assert not output_dir.exists() or not any(output_dir.iterdir())


def test_two_ctrl_c_during_a_checkpoint_write_say_interrupted_and_keep_the_previous_checkpoint(star_data_dir, tmp_path):
    """A model big enough (about 100 MB of checkpoint) that the write can be caught in the act."""
    logs = tmp_path / "logs"
    args = [
        "job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, "model.d_model=256", "model.num_layers=8",
        "model.nhead=4", "model.rotary_emb_dim=16", "per_device_batch_size=16", "global_batch_size=16",
        "trainer.max_steps=40", "trainer.val_check_interval=1000", "callbacks.checkpoint_every_n_steps.every_n_train_steps=2",
    ]
    output = tmp_path / "run.out"  # a file, not a pipe nobody reads while the run goes on
    with open(output, "w") as sink:
        proc = subprocess.Popen([str(XLM), *args], cwd=REPO_ROOT, env=_env(star_data_dir, logs), stdout=sink, stderr=subprocess.STDOUT, text=True)
        caught = None
        while proc.poll() is None and caught is None:
            partial = list(logs.glob("*/checkpoints/.*.partial-*"))
            if partial and (partial[0].parent / "last.ckpt").exists():  # a write after the first last.ckpt
                proc.send_signal(signal.SIGINT)
                time.sleep(0.02)
                proc.send_signal(signal.SIGINT)
                caught = partial[0]
            time.sleep(0.002)
        proc.wait(timeout=300)
    out = output.read_text()
    assert caught is not None, "the run ended before a second checkpoint write"
    checkpoints = caught.parent
    assert proc.returncode == 1, out[-3000:]
    assert "was interrupted (Ctrl+C / SIGINT): the partial copy was removed" in out, out[-3000:]
    assert "writable directory" not in out
    assert not list(checkpoints.glob(".*.partial-*")), "a temporary was left"
    assert _load(checkpoints / "last.ckpt")["global_step"] == 2
    assert _load(checkpoints / "on_exception.ckpt")["global_step"] == 4
