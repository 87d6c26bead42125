"""LOG_DIR / DATA_DIR that cannot be used stop the real ``xlm`` before Hydra creates anything, with
one line naming the variable and the fix (before: raw ``NotADirectoryError`` / ``FileExistsError``
tracebacks from Hydra's run directory, or a failure part-way through the job). Read-only and full
directories are real tmpfs mounts (root ignores ``chmod``); a prepared read-only DATA_DIR still trains."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.faults import tmpfs
from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, offline_env, run_xlm

pytestmark = pytest.mark.slow
TRAIN = ["job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL, "trainer.max_steps=2",
         "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1"]
PREPARE = ["job_type=prepare_data", "experiment=star_easy_arlm", *STAR_SIZES]


def _refused(args, data_dir, log_dir, expected):
    env = offline_env(Path(data_dir), Path(log_dir), extra={"LOG_DIR": str(log_dir)})
    proc = run_xlm(args, cwd=REPO_ROOT, env=env, check=False, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("DirectoryError: ") and expected in last and "Fix:" in last, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout
    return last


def test_log_dir_under_a_file_or_a_dangling_link_or_empty(star_data_dir, tmp_path):
    (tmp_path / "afile").write_text("x")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    _refused(TRAIN, star_data_dir, tmp_path / "afile" / "logs", f"LOG_DIR (paths.log_dir)={tmp_path / 'afile' / 'logs'}: {tmp_path / 'afile'} is a file")
    _refused(TRAIN, star_data_dir, tmp_path / "dangling", "is a symbolic link to")
    _refused(TRAIN, star_data_dir, "", "LOG_DIR (paths.log_dir) is empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "dangling"]


def test_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    _refused(PREPARE, tmp_path / "afile", tmp_path / "logs", f"DATA_DIR (paths.data_dir)={tmp_path / 'afile'}: {tmp_path / 'afile'} is a file, not a directory")


def test_read_only_log_dir_and_data_dir(star_data_dir, tmp_path):
    with tmpfs(tmp_path / "ro", "1m") as ro:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        _refused(TRAIN, star_data_dir, ro / "logs", "is not writable (permissions, or a read-only filesystem)")
        _refused(PREPARE, ro / "data", tmp_path / "logs", "DATA_DIR (paths.data_dir)")


def test_full_log_dir_and_data_dir(star_data_dir, tmp_path):
    with tmpfs(tmp_path / "full", "1m") as full:
        with open(full / "fill", "wb") as handle:
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError:
                pass
        _refused(TRAIN, star_data_dir, full / "logs", "is full")
        _refused(PREPARE, full / "data", tmp_path / "logs", "DATA_DIR (paths.data_dir)")


def test_a_prepared_read_only_data_dir_still_trains(star_data_dir, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(star_data_dir, copy)
    (tmp_path / "ro").mkdir()
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(copy), str(tmp_path / "ro")], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.strip()}")
    try:
        run_xlm(TRAIN, cwd=REPO_ROOT, env=offline_env(tmp_path / "ro", tmp_path / "logs"))
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "ro")], check=False)
