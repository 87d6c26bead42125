"""TinyGSM through the real ``xlm`` CLI on a small offline fixture in TinyGSM/GSM8K format.

prepare_data fills the four caches (train, holdout, GSM8K shared by the prediction loaders),
training runs a few steps, validation generates programs for GSM8K questions, and the post-hoc
Gsm8kCodeEval executes them and logs ``val/code_exec_accuracy``.
"""

import json

import pytest

from tests.e2e.fixtures_data import train_tokenizer, write_tinygsm_fixture
from tests.e2e.xlm_cli import TINY_MODEL, offline_env, run_xlm

pytestmark = pytest.mark.slow


def _tinygsm_args(tokenizer_dir):
    return [
        "experiment=tinygsm_arlm", f"global_components.tokenizer.pretrained_model_name_or_path={tokenizer_dir}",
        "model=rotary_transformer_tiny_arlm", *TINY_MODEL, "block_size=128",
        "per_device_batch_size=4", "global_batch_size=4", "num_dataloader_workers=0", "num_dataset_workers=1",
        "dataloader_prefetch_factor=null",
    ]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinygsm")
    texts = write_tinygsm_fixture(root)
    return root, train_tokenizer(texts, root / "tokenizer")


def test_prepare_train_and_code_execution_accuracy(project):
    root, tokenizer_dir = project
    env = offline_env(root / "data", root / "logs")
    args = _tinygsm_args(tokenizer_dir)
    run_xlm(["job_type=prepare_data", *args], cwd=root, env=env)
    data = root / "data"
    for cache in ("TinyGSM/TinyGSM/train", "TinyGSM/TinyGSM_val_holdout/train", "openai/gsm8k/main/test"):
        assert (data / cache / "dataset_info.json").is_file(), cache
    assert not list(data.rglob(".*.partial-*"))

    out = run_xlm(
        ["job_type=train", *args, "trainer.max_steps=4", "trainer.val_check_interval=2",
         "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0"],
        cwd=root, env=env,
    ).stdout
    assert "Could not run test" not in out
    results = sorted((root / "logs").glob("*/runs/*/predictions/val/prediction/results_*.json"))
    assert results, "the post-hoc evaluator wrote no results"
    report = json.loads(results[-1].read_text())
    metrics = report["aggregated_metrics"]
    assert metrics["n_total"] == 8 and 0.0 <= metrics["code_exec_accuracy"] <= 1.0
    assert all("generated_text" in row and row["answer"] for row in report["predictions"])


def test_missing_data_without_network_says_where_it_looked(project, tmp_path):
    _, tokenizer_dir = project
    env = offline_env(tmp_path / "empty_data", tmp_path / "logs")
    proc = run_xlm(["job_type=prepare_data", *_tinygsm_args(tokenizer_dir)], cwd=tmp_path, env=env, check=False)
    assert proc.returncode != 0
    assert "DataNotPreparedError" in proc.stdout
    assert f"is not in the prepared-data cache ({tmp_path / 'empty_data' / 'TinyGSM' / 'TinyGSM' / 'train'})" in proc.stdout
    assert "set DATA_DIR" in proc.stdout
