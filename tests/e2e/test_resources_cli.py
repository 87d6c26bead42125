"""Sizes that cannot fit in memory stop the real ``xlm`` early, naming the key (before: prepare_data
grew until the kernel killed it, and the model failed inside the allocator naming nothing)."""

import time

import pytest

from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, offline_env, run_xlm

pytestmark = pytest.mark.slow


def test_prepare_data_of_a_billion_star_graphs_is_refused_within_seconds(tmp_path):
    start = time.time()
    proc = run_xlm(
        ["job_type=prepare_data", "experiment=star_easy_arlm", "star_split_sizes.train=1000000000"],
        cwd=REPO_ROOT, env=offline_env(tmp_path / "data", tmp_path / "logs"), timeout=180, check=False,
    )
    assert proc.returncode != 0
    assert "MemoryBudgetError: star_split_sizes.train=1000000000" in proc.stdout
    assert "Fix: lower star_split_sizes.train" in proc.stdout
    assert time.time() - start < 180
    assert not list((tmp_path / "data").rglob("dataset_info.json")), "a cache was written"


@pytest.mark.parametrize(
    "override, key",
    [("model.max_length=1000000000", "model.max_length=1000000000"),
     ("model.d_model=200000", "model.d_model=200000"),
     ("block_size=100000000", "per_device_batch_size=64 x block_size=100000000")],
)
def test_train_with_a_size_that_cannot_fit_is_refused_before_the_job_naming_the_key(star_data_dir, tmp_path, override, key):
    proc = run_xlm(
        ["job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, override],
        cwd=REPO_ROOT, env=offline_env(star_data_dir, tmp_path / "logs"), check=False,
    )
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "ConfigValueError" in proc.stdout and key in proc.stdout and "more than the" in proc.stdout
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").rglob("*.ckpt"))
