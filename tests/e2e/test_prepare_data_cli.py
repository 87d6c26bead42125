"""``xlm job_type=prepare_data`` for STAR never leaves a half-written cache, and re-running recovers."""

import signal
import subprocess
import sys
import time

import datasets
import pytest

from tests.e2e.xlm_cli import REPO_ROOT, XLM, offline_env, run_xlm

pytestmark = pytest.mark.slow
SIZES = ["star_split_sizes.train=20000", "star_split_sizes.validation=32", "star_split_sizes.test=32"]
PREPARE = ["job_type=prepare_data", "experiment=star_easy_arlm", *SIZES]
SPLITS = ("train", "validation", "test")


def test_prepare_data_killed_while_writing_then_rerun(tmp_path):
    data = tmp_path / "data"
    star = data / "dhruveshpatel" / "star-small"
    star.mkdir(parents=True)
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = star / f".train.partial-{dead_pid}-0000"  # what a SIGKILL inside save_to_disk leaves behind
    stale.mkdir()
    (stale / "data-00000-of-00001.arrow").write_bytes(b"truncated")

    env = offline_env(data, tmp_path / "logs")
    proc = subprocess.Popen([str(XLM), *PREPARE], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # kill it the moment it starts writing a split (best effort: it may also finish first)
        while proc.poll() is None and not [p for p in star.glob(".*.partial-*") if p != stale]:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    for split in SPLITS:  # each split is either absent or complete
        if (star / split).exists():
            assert len(datasets.load_from_disk(str(star / split))) > 0

    run_xlm(PREPARE, cwd=REPO_ROOT, env=env)
    assert [len(datasets.load_from_disk(str(star / s))) for s in SPLITS] == [20000, 32, 32]
    assert not list(star.glob(".*.partial-*")), "partial directories were left behind"


def test_prepare_data_rebuilds_a_truncated_cache_and_says_so(tmp_path):
    data = tmp_path / "data"
    env = offline_env(data, tmp_path / "logs")
    small = ["job_type=prepare_data", "experiment=star_easy_arlm", "star_split_sizes.train=256",
             "star_split_sizes.validation=32", "star_split_sizes.test=32"]
    run_xlm(small, cwd=REPO_ROOT, env=env)
    train = data / "dhruveshpatel" / "star-small" / "train"
    arrow = train / "data-00000-of-00001.arrow"
    with open(arrow, "r+b") as f:
        f.truncate(arrow.stat().st_size // 2)

    out = run_xlm(small, cwd=REPO_ROOT, env=env).stdout
    assert f"the prepared-data cache {train.resolve()} is corrupt (data-00000-of-00001.arrow has" in out
    assert len(datasets.load_from_disk(str(train))) == 256


def test_a_truncated_datasets_map_cache_is_deleted_and_rebuilt(star_data_dir, tmp_path):
    import shutil

    from tests.e2e.xlm_cli import STAR_SIZES, TINY_MODEL, TINY_TRAIN

    data = tmp_path / "data"
    shutil.copytree(star_data_dir, data)
    train = ["job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL, *TINY_TRAIN]
    run_xlm(train, cwd=REPO_ROOT, env=offline_env(data, tmp_path / "logs1"))
    train_cache = data / "dhruveshpatel" / "star-small" / "train"
    (map_cache, *_) = sorted(train_cache.glob("cache-*.arrow"))
    with open(map_cache, "r+b") as f:
        f.truncate(1000)

    out = run_xlm(train, cwd=REPO_ROOT, env=offline_env(data, tmp_path / "logs2")).stdout
    assert f"deleted unreadable datasets map caches ['{map_cache.name}'] in {train_cache.resolve()}; rebuilding them" in out
