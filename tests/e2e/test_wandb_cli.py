"""``loggers=[tensorboard,wandb]`` (xlm-core's logger group): a STAR training run logs offline to
wandb beside TensorBoard, and the offline run files hold the job's metrics, the planning choice
included, with the values TensorBoard got."""

import pytest

from tests.e2e.test_star_cli import logged_scalars
from tests.e2e.wandb_records import history
from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, TINY_TRAIN, offline_env, run_xlm

pytestmark = pytest.mark.slow
ONE_VALIDATION = ["trainer.max_steps=2", "trainer.val_check_interval=2"]
METRICS = (
    "train/loss", "val/lm/accumulated_loss", "val/prediction/exact_match",
    "val/prediction/planning_choice_accuracy", "test/prediction/exact_match",
    "test/prediction/planning_choice_accuracy",
)


def test_offline_wandb_run_holds_the_jobs_metrics_beside_tensorboard(star_data_dir, tmp_path):
    log_dir = tmp_path / "logs"
    env = offline_env(star_data_dir, log_dir)  # WANDB_MODE=offline
    proc = run_xlm(["job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL, *TINY_TRAIN,
                    *ONE_VALIDATION, "loggers=[tensorboard,wandb]"], cwd=REPO_ROOT, env=env)
    (run_file,) = log_dir.glob("*/wandb/offline-run-*/run-*.wandb")
    assert f"wandb sync {run_file.parent}" in proc.stdout  # wandb says how to upload it
    rows = history(run_file)
    logged = {key: [row[key] for row in rows if key in row] for key in METRICS}
    scalars = logged_scalars(log_dir)
    for metric in METRICS:
        assert logged[metric], f"{metric} is not in the offline wandb run"
        assert logged[metric] == pytest.approx([value for _, value in scalars[metric]]), metric
    assert len(logged["val/prediction/planning_choice_accuracy"]) == 1  # one validation
