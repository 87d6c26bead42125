"""A checkpoint carrying code does not run it: eval, generate_arlm and resume load with weights_only.

The crafted file is a real checkpoint of a tiny run plus one pickled object whose unpickling
creates a marker file (the test first proves that ``torch.load(weights_only=False)`` does run it).
"""

from pathlib import Path

import pytest
import torch

from arlm.checkpoints.read import read_checkpoint
from tests.e2e.faults import write_crafted_checkpoint
from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, TINY_TRAIN, offline_env, run_xlm

pytestmark = pytest.mark.slow

EXPERIMENT = ["experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL]
RESUME_TRAIN = [arg if not arg.startswith("trainer.max_steps=") else "trainer.max_steps=6" for arg in TINY_TRAIN]
REFUSAL = "asks to run or build Python objects that arlm does not load from checkpoints"


@pytest.fixture(scope="module")
def trained(star_data_dir, tmp_path_factory):
    """(env, checkpoints dir) of a finished 4-step run."""
    logs = tmp_path_factory.mktemp("security") / "logs"
    env = offline_env(star_data_dir, logs)
    run_xlm(["job_type=train", *EXPERIMENT, *TINY_TRAIN], cwd=REPO_ROOT, env=env)
    (checkpoints,) = list(logs.glob("*/checkpoints"))
    return env, checkpoints


def test_the_crafted_payload_is_live(trained, tmp_path):
    _, checkpoints = trained
    marker = tmp_path / "ran"
    crafted = write_crafted_checkpoint(checkpoints / "last.ckpt", tmp_path / "crafted.ckpt", marker)
    torch.load(crafted, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("job", [
    ["job_type=eval", "+trainer.limit_val_batches=1"],
    ["job_type=generate_arlm", "+generation.device=cpu", "+generation.max_batches=1"],
])
def test_eval_and_generate_refuse_a_checkpoint_that_runs_code(trained, tmp_path, job):
    env, checkpoints = trained
    marker = tmp_path / "ran"
    crafted = write_crafted_checkpoint(checkpoints / "last.ckpt", tmp_path / "crafted.ckpt", marker)
    key = "eval" if job[0] == "job_type=eval" else "generation"
    proc = run_xlm([*job, *EXPERIMENT, f"+{key}.ckpt_path={crafted}"], cwd=REPO_ROOT, env=env, check=False)
    assert proc.returncode != 0
    assert f"{crafted} {REFUSAL}" in proc.stdout
    assert not marker.exists(), "loading the checkpoint ran its code"


def test_resume_skips_a_last_checkpoint_that_runs_code(star_data_dir, tmp_path):
    logs = tmp_path / "logs"
    env = offline_env(star_data_dir, logs)
    run_xlm(["job_type=train", *EXPERIMENT, *TINY_TRAIN], cwd=REPO_ROOT, env=env)
    (checkpoints,) = list(logs.glob("*/checkpoints"))
    last, marker = checkpoints / "last.ckpt", tmp_path / "ran"
    write_crafted_checkpoint(last, last, marker)

    out = run_xlm(["job_type=train", *EXPERIMENT, *RESUME_TRAIN], cwd=REPO_ROOT, env=env).stdout
    assert f"instead of {last}, which was skipped: {last} {REFUSAL} (io.open)" in out
    assert "(global step 4)" in out
    assert not marker.exists(), "resuming ran the checkpoint's code"
    assert read_checkpoint(Path(last)).contents["global_step"] == 6

    explicit = write_crafted_checkpoint(checkpoints / "best.ckpt", tmp_path / "explicit.ckpt", marker)
    # under a new job_name: resuming another directory's checkpoint into this job, which holds its
    # own checkpoints, is refused before the file is read (CheckpointsWouldMix)
    proc = run_xlm(["job_type=train", *EXPERIMENT, *TINY_TRAIN, "job_name=from_explicit", f"resume_checkpoint_path={explicit}"],
                   cwd=REPO_ROOT, env=env, check=False)
    assert proc.returncode != 0 and f"{explicit} {REFUSAL}" in proc.stdout
    assert not marker.exists()
