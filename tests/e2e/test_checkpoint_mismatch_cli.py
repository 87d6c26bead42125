"""A checkpoint of another model size fails early in every job, naming the first mismatch and the fix."""

import pytest

from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, TINY_TRAIN, offline_env, run_xlm

pytestmark = pytest.mark.slow

WIDER = [arg if not arg.startswith("model.d_model=") else "model.d_model=64" for arg in TINY_MODEL]
EXPECTED = ("The checkpoint is for another model size: model.", "in the checkpoint but",
            "model.d_model: checkpoint 32, configured 64", "model.d_model=32")


@pytest.fixture(scope="module")
def env(star_data_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("mismatch") / "logs"
    environment = offline_env(star_data_dir, logs)
    run_xlm(["job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL, *TINY_TRAIN], cwd=REPO_ROOT, env=environment)
    return environment


@pytest.mark.parametrize("job", [
    ["job_type=eval", "+trainer.limit_val_batches=1"],
    ["job_type=generate_arlm", "+generation.device=cpu", "+generation.max_batches=1"],
    ["job_type=train", *TINY_TRAIN],
])
def test_other_model_size_is_named_with_the_fix(env, job):
    proc = run_xlm([*job, "experiment=star_easy_arlm", *STAR_SIZES, *WIDER], cwd=REPO_ROOT, env=env, check=False)
    assert proc.returncode != 0
    for text in EXPECTED:
        assert text in proc.stdout
    assert proc.stdout.count("size mismatch for") == 0
