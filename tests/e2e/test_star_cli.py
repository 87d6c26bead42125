"""STAR-easy through the real ``xlm`` CLI: train, eval, generate_arlm, and their bad inputs."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.e2e.faults import tmpfs
from tests.e2e.xlm_cli import (
    REPO_ROOT, STAR_SIZES, TINY_MODEL, TINY_TRAIN, checkpoint_dir, offline_env, run_xlm,
)

pytestmark = pytest.mark.slow
STAR = ["experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL]


@pytest.fixture(scope="module")
def trained(star_data_dir, tmp_path_factory):
    """A finished tiny STAR-easy training run: (env, log_dir, train output)."""
    log_dir = tmp_path_factory.mktemp("star_run") / "logs"
    env = offline_env(star_data_dir, log_dir)
    proc = run_xlm(["job_type=train", *STAR, *TINY_TRAIN], cwd=REPO_ROOT, env=env)
    return env, log_dir, proc.stdout


def test_train_logs_metrics_writes_checkpoints_and_predictions(trained):
    _, log_dir, out = trained
    ckpts = checkpoint_dir(log_dir)
    assert (ckpts / "best.ckpt").is_file() and (ckpts / "last.ckpt").is_file()
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 4
    for metric in ("test/prediction/exact_", "test/prediction/token_", "test/lm/accumulated_lo"):
        assert metric in out, f"{metric} missing from the post-fit test table"
    rows = [json.loads(line) for p in log_dir.glob("*/runs/*/predictions/val/prediction/*.jsonl") for line in open(p)]
    assert rows and {"generated_text", "truth", "metric_exact_match", "metric_planning_choice_accuracy"} <= set(rows[0])


def logged_scalars(log_dir):
    """``{tag: [(step, value), ...]}`` of every scalar the run's TensorBoard logger wrote."""
    (events,) = log_dir.glob("*/tensorboard/version_0")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_validation_and_test_log_the_planning_choice_beside_exact_match(trained):
    """Every validation (steps 2 and 4) and the post-fit test log planning_choice_accuracy."""
    _, log_dir, out = trained
    scalars = logged_scalars(log_dir)
    for split, steps in (("val", [1, 3]), ("test", [4])):
        for name in ("exact_match", "planning_choice_accuracy"):
            values = scalars[f"{split}/prediction/{name}"]
            assert [step for step, _ in values] == steps, f"{split}/prediction/{name}: {values}"
            assert all(0.0 <= value <= 1.0 for _, value in values)
    assert "test/prediction/planni" in out  # the post-fit table (names cut at its column width)


def test_eval_finds_the_checkpoint_and_reports_validation_metrics(trained):
    env, log_dir, _ = trained
    proc = run_xlm(["job_type=eval", *STAR, "+trainer.limit_val_batches=1"], cwd=REPO_ROOT, env=env)
    assert "Using fallback checkpoint" in proc.stdout and "best.ckpt" in proc.stdout
    assert "val/prediction/exact_m" in proc.stdout and "val/lm/accumulated_loss" in proc.stdout


def test_generate_arlm_writes_jsonl_on_cpu(trained, tmp_path):
    env, log_dir, _ = trained
    out_dir = tmp_path / "gen"
    proc = run_xlm(
        ["job_type=generate_arlm", *STAR, "+generation.device=cpu", f"+generation.output_dir={out_dir}",
         f"+generation.ckpt_path={checkpoint_dir(log_dir) / 'last.ckpt'}"],
        cwd=REPO_ROOT, env=env,
    )
    rows = [json.loads(line) for line in open(out_dir / "prediction.jsonl")]
    assert len(rows) == 32  # the whole (32-row) test split, no batch dropped
    assert all(r["prompt"] and "generated_text" in r and r["truth"] for r in rows)
    assert "exact match" in proc.stdout


def test_generate_arlm_on_a_full_disk_leaves_nothing_and_says_what_was_lost(trained, tmp_path):
    env, log_dir, _ = trained
    with tmpfs(tmp_path / "gen", "4k") as out_dir:
        proc = run_xlm(
            ["job_type=generate_arlm", *STAR, "+generation.device=cpu", f"+generation.output_dir={out_dir}",
             f"+generation.ckpt_path={checkpoint_dir(log_dir) / 'last.ckpt'}"],
            cwd=REPO_ROOT, env=env, check=False,
        )
        assert proc.returncode != 0
        assert f"Could not write the 32 generated rows to {out_dir / 'prediction.jsonl'}: [Errno 28] No space left on device" in proc.stdout
        assert "Fix: free space on that filesystem or pass another +generation.output_dir=" in proc.stdout
        assert list(out_dir.iterdir()) == [], "a temporary file was left on the full disk"


def test_eval_with_missing_checkpoint_names_the_path(trained):
    env, _, _ = trained
    proc = run_xlm(["job_type=eval", *STAR, "+eval.ckpt_path=/nonexistent/best.ckpt"], cwd=REPO_ROOT, env=env, check=False)
    assert proc.returncode != 0
    assert "Checkpoint path does not exist: /nonexistent/best.ckpt" in proc.stdout


def test_generate_with_missing_checkpoint_names_the_path_and_the_fix(trained):
    env, _, _ = trained
    proc = run_xlm(
        ["job_type=generate_arlm", *STAR, "+generation.ckpt_path=/nonexistent/last.ckpt"],
        cwd=REPO_ROOT, env=env, check=False,
    )
    assert proc.returncode != 0
    assert "generation.ckpt_path=/nonexistent/last.ckpt does not exist" in proc.stdout
    assert "best.ckpt or last.ckpt" in proc.stdout


def test_checkpoint_with_another_vocabulary_is_refused_clearly(trained):
    env, _, _ = trained
    proc = run_xlm(
        ["job_type=eval", *STAR, "global_components.tokenizer.vocab_size=30"], cwd=REPO_ROOT, env=env, check=False,
    )
    assert proc.returncode != 0
    assert "The checkpoint was trained with a vocabulary of 27 ids, but the configured model has 37" in proc.stdout


def test_model_smaller_than_tokenizer_is_refused_clearly(star_data_dir, tmp_path):
    env = offline_env(star_data_dir, tmp_path / "logs")
    proc = run_xlm(["job_type=train", *STAR, *TINY_TRAIN, "model.num_embeddings=10"], cwd=REPO_ROOT, env=env, check=False)
    assert proc.returncode != 0
    assert "model.num_embeddings=10 is smaller than the vocabulary of the tokenizer" in proc.stdout


def test_wrong_experiment_name_lists_the_available_ones(tmp_path):
    env = offline_env(tmp_path / "data", tmp_path / "logs")
    proc = run_xlm(["job_type=train", "experiment=star_eazy_arlm"], cwd=tmp_path, env=env, check=False)
    assert proc.returncode != 0
    assert "Could not find 'experiment/star_eazy_arlm'" in proc.stdout
    assert "star_easy_arlm" in proc.stdout.split("Could not find 'experiment/star_eazy_arlm'")[1]
