"""Every experiment composes, and STAR medium/hard train end to end (tiny settings, offline)."""

import pytest
import torch

from tests.e2e.xlm_cli import REPO_ROOT, TINY_MODEL, TINY_TRAIN, checkpoint_dir, offline_env, run_xlm

pytestmark = pytest.mark.slow
EXPERIMENTS = ["star_easy_arlm", "star_medium_arlm", "star_hard_arlm", "tinygsm_arlm", "owt_arlm", "lm1b_arlm"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_with_its_job_name(experiment, tmp_path):
    out = run_xlm(["job_type=name", f"experiment={experiment}"], cwd=REPO_ROOT,
                  env=offline_env(tmp_path / "data", tmp_path / "logs")).stdout
    dataset = experiment.removesuffix("_arlm")
    assert f"job_name: \t{dataset}__arlm" in out


@pytest.mark.parametrize("experiment", ["star_medium_arlm", "star_hard_arlm"])
def test_star_level_trains_with_its_generated_data(experiment, tmp_path):
    logs = tmp_path / "logs"
    out = run_xlm(
        ["job_type=train", f"experiment={experiment}", "star_split_sizes.train=64", "star_split_sizes.validation=16",
         "star_split_sizes.test=16", *TINY_MODEL, *TINY_TRAIN],
        cwd=REPO_ROOT, env=offline_env(tmp_path / "data", logs),
    ).stdout
    assert "test/prediction/exact_" in out
    assert "test/prediction/planni" in out  # planning_choice_accuracy, read from this level's graphs
    assert torch.load(checkpoint_dir(logs) / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 4


def test_long_star_medium_experiment_composes_as_documented(tmp_path):
    """star_medium_arlm_long: star_medium_arlm's model and optimizer for 12000 steps, validated
    every 500, under its own job name (a train command must not resume star_medium_arlm's run)."""
    env = offline_env(tmp_path / "data", tmp_path / "logs")
    out = run_xlm(["job_type=name", "experiment=star_medium_arlm_long"], cwd=REPO_ROOT, env=env).stdout
    default = run_xlm(["job_type=name", "experiment=star_medium_arlm"], cwd=REPO_ROOT, env=env).stdout
    assert "job_name: \tstar_medium_long__arlm_seq2seq__rotary_transformer_tiny_arlm" in out

    def settings(text):
        lines = (line.strip("│├└─ \t") for line in text.splitlines())  # the printed config tree
        keys = ("max_steps", "val_check_interval", "lr", "name", "num_layers", "d_model", "weight_decay", "decay")
        return {line for line in lines if line.split(":")[0] in keys}

    assert settings(out) - settings(default) == {"max_steps: 12000", "val_check_interval: 500"}
    assert "planning_choice_accuracy" in out


def test_paper_recipe_trains_two_steps_on_the_cpu(tmp_path):
    """star_hard_arlm_paper as shipped (85M network, bf16-mixed: CPU autocast here) runs two
    training steps and the post-fit test through the real CLI; only the data and batch shrink."""
    out = run_xlm(
        ["job_type=train", "experiment=star_hard_arlm_paper", "star_split_sizes.train=16",
         "star_split_sizes.validation=2", "star_split_sizes.test=2", "per_device_batch_size=2",
         "global_batch_size=2", "trainer.max_steps=2", "+trainer.limit_test_batches=1"],
        cwd=REPO_ROOT, env=offline_env(tmp_path / "data", tmp_path / "logs"),
    ).stdout
    assert "Using bfloat16 Automatic Mixed Precision" in out
    assert "`Trainer.fit` stopped: `max_steps=2` reached." in out
    assert "test/prediction/exact_" in out and "test/lm/token_nll" in out
    runs = [path.name for path in (tmp_path / "logs").iterdir()]
    assert runs == ["star_hard_paper__arlm_seq2seq__rotary_transformer_small_arlm__debug-False"]
