"""LOG_DIR / DATA_DIR problems found before Hydra makes the run directory (the CLI, real
read-only and full tmpfs mounts: tests/e2e/test_bad_dirs_cli.py)."""

import os

from omegaconf import OmegaConf

from arlm.runtime.preflight import directory_problem, directory_problems


def test_each_unusable_directory_is_named_with_the_fix(tmp_path):
    (tmp_path / "afile").write_text("x")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    cases = {
        tmp_path / "afile": "is a file, not a directory",
        tmp_path / "afile" / "logs": "is a file, so",
        tmp_path / "dangling" / "logs": "is a symbolic link to",
        "": "is empty",
        "~/logs": "starts with '~'",
    }
    for path, expected in cases.items():
        problem = directory_problem(path, "LOG_DIR (paths.log_dir)", must_write=True)
        assert problem is not None and expected in problem and "Fix:" in problem, (path, problem)
    assert directory_problem(tmp_path / "new" / "logs", "LOG_DIR", must_write=True) is None
    assert not (tmp_path / "new").exists(), "the check created a directory"


def test_data_dir_that_is_a_file_is_refused_for_every_job(tmp_path):
    (tmp_path / "afile").write_text("x")
    cfg = {"paths": {"log_dir": str(tmp_path / "logs"), "data_dir": str(tmp_path / "afile")}}
    for job_type in ("train", "prepare_data", "eval"):
        (problem,) = directory_problems(OmegaConf.create({**cfg, "job_type": job_type}))
        assert problem.startswith(f"DATA_DIR (paths.data_dir)={tmp_path / 'afile'}: ")
