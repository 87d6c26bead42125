"""A checkpoint written before the package was laid out by layer (commit c4c0ecd: a 4-step
STAR-easy run of the tiny e2e model) still drives every job that reads checkpoints."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, TINY_TRAIN, offline_env, run_xlm

pytestmark = pytest.mark.slow
OLD_CHECKPOINT = Path(__file__).resolve().parents[1] / "fixtures" / "star_easy_tiny_c4c0ecd.ckpt"
STAR = ["experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL]


def test_eval_reads_the_old_checkpoint(star_data_dir, tmp_path):
    env = offline_env(star_data_dir, tmp_path / "logs")
    proc = run_xlm(
        ["job_type=eval", *STAR, f"+eval.ckpt_path={OLD_CHECKPOINT}", "+trainer.limit_val_batches=1"],
        cwd=REPO_ROOT, env=env,
    )
    assert "val/prediction/exact_m" in proc.stdout and "val/lm/accumulated_loss" in proc.stdout


def test_generate_arlm_reads_the_old_checkpoint(star_data_dir, tmp_path):
    env = offline_env(star_data_dir, tmp_path / "logs")
    out_dir = tmp_path / "gen"
    run_xlm(
        ["job_type=generate_arlm", *STAR, "+generation.device=cpu", f"+generation.output_dir={out_dir}",
         f"+generation.ckpt_path={OLD_CHECKPOINT}"],
        cwd=REPO_ROOT, env=env,
    )
    rows = [json.loads(line) for line in open(out_dir / "prediction.jsonl")]
    assert len(rows) == 32 and all("generated_text" in r for r in rows)


def test_training_resumes_from_the_old_checkpoint(star_data_dir, tmp_path):
    log_dir = tmp_path / "logs"
    env = offline_env(star_data_dir, log_dir)
    job = "old_checkpoint_resume"
    ckpt_dir = log_dir / job / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    shutil.copy(OLD_CHECKPOINT, ckpt_dir / "last.ckpt")
    proc = run_xlm(["job_type=train", *STAR, *TINY_TRAIN, f"job_name={job}", "trainer.max_steps=6"], cwd=REPO_ROOT, env=env)
    assert f"Restored all states from the checkpoint at {ckpt_dir / 'last.ckpt'}" in proc.stdout
    steps = {p.name: torch.load(p, map_location="cpu", weights_only=False)["global_step"] for p in ckpt_dir.glob("*.ckpt")}
    assert steps["last.ckpt"] == 4 and 6 in steps.values(), steps  # resumed at 4, trained on to 6


def test_export_hf_reads_the_old_checkpoint(star_data_dir, tmp_path):
    env = offline_env(star_data_dir, tmp_path / "logs")
    out_dir = tmp_path / "hf_model"
    run_xlm(
        ["job_type=export_hf", *STAR, f"+export_hf.checkpoint_path={OLD_CHECKPOINT}", f"+export_hf.output_dir={out_dir}"],
        cwd=REPO_ROOT, env=env,
    )
    assert (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file()
