"""``input_block_size`` smaller than the STAR prompts: before, every prediction prompt was cut to
its last tokens (the graph lost) and exact match was computed on the cut prompts, silently. Now
the first prediction batch stops the job naming both sizes and the fix, and cutting that is asked
for (the prediction collator's ``on_overflow=truncate``) says how many prompts it cut and leaves
them out of the planning-choice metric (null in the predictions JSONL)."""

import json
from pathlib import Path

import pytest

from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, offline_env, run_xlm

pytestmark = pytest.mark.slow
OLD_CHECKPOINT = Path(__file__).resolve().parents[1] / "fixtures" / "star_easy_tiny_c4c0ecd.ckpt"
STAR = ["experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL, "input_block_size=5"]
REFUSAL = ("input_block_size=5 is too small for", "their first tokens would be cut",
           "Fix: set input_block_size to at least")


@pytest.mark.parametrize("job", [
    ["job_type=eval", f"+eval.ckpt_path={OLD_CHECKPOINT}", "+trainer.limit_val_batches=1"],
    ["job_type=generate_arlm", f"+generation.ckpt_path={OLD_CHECKPOINT}", "+generation.device=cpu", "+generation.max_batches=1"],
])
def test_prompts_longer_than_input_block_size_stop_the_job(star_data_dir, tmp_path, job):
    env = offline_env(star_data_dir, tmp_path / "logs")
    proc = run_xlm([*job, *STAR, f"+generation.output_dir={tmp_path / 'gen'}"], cwd=REPO_ROOT, env=env, check=False)
    assert proc.returncode != 0
    for text in REFUSAL:
        assert text in proc.stdout
    assert not (tmp_path / "gen").exists()


def test_cutting_prompts_when_asked_says_how_many_were_cut(star_data_dir, tmp_path):
    env = offline_env(star_data_dir, tmp_path / "logs")
    proc = run_xlm(
        ["job_type=eval", *STAR, f"+eval.ckpt_path={OLD_CHECKPOINT}", "+trainer.limit_val_batches=1",
         "datamodule.dataset_managers.val.prediction.collator.on_overflow=truncate"],
        cwd=REPO_ROOT, env=env,
    )
    assert "of the 32 prompts of this batch" in proc.stdout
    assert "prompts keep only their last 5 tokens (on_overflow=truncate)" in proc.stdout
    # A cut prompt has lost its graph: xlm-core's metric leaves it out and the JSONL says null.
    rows = [json.loads(line) for p in (tmp_path / "logs").glob("*/runs/*/predictions/val/prediction/*.jsonl") for line in open(p)]
    assert len(rows) == 32 and all(row["metric_planning_choice_accuracy"] is None for row in rows)
    assert all(isinstance(row["metric_exact_match"], float) for row in rows)
