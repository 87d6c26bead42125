"""Shared fixtures of the end-to-end tests: one prepared STAR-easy cache for the whole session."""

from pathlib import Path

import pytest

from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, offline_env, run_xlm


@pytest.fixture(scope="session")
def star_data_dir(tmp_path_factory) -> Path:
    """DATA_DIR holding STAR-easy (train 256 / validation 32 / test 32), made by ``prepare_data``."""
    root = tmp_path_factory.mktemp("star_data")
    data_dir = root / "data"
    env = offline_env(data_dir, root / "logs")
    run_xlm(["job_type=prepare_data", "experiment=star_easy_arlm", *STAR_SIZES], cwd=REPO_ROOT, env=env)
    for split in ("train", "validation", "test"):
        assert (data_dir / "dhruveshpatel" / "star-small" / split / "dataset_info.json").is_file()
    return data_dir
