"""The writers built on :mod:`arlm.runtime.atomic_files` (checkpoint saves, prepared-data caches,
``generate_arlm``'s JSONL) on a real full filesystem and beside a dead writer's temporaries."""

import os
import subprocess
import sys

import pytest
import torch

from arlm.dataprep.cache import write_cache_atomically
from arlm.jobs.generate import write_jsonl
from arlm.runtime.atomic_files import AtomicWriteError
from arlm.runtime.checkpoint_io import SafeAtomicCheckpointIO
from arlm.checkpoints.read import CheckpointError
from tests.e2e.faults import tmpfs


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)


def test_checkpoint_save_removes_every_kind_of_dead_writer_leftover_in_its_directory(tmp_path):
    dead = dead_pid()
    (tmp_path / f".hf.partial-{dead}-0a1b").mkdir()  # a killed export into the checkpoint directory
    (tmp_path / f".last.ckpt.partial-{dead}-2c3d").write_bytes(b"half a checkpoint")
    SafeAtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, tmp_path / "last.ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert torch.equal(torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]["w"], torch.ones(2))


def test_checkpoint_save_on_a_full_filesystem_keeps_the_last_checkpoint(tmp_path):
    with tmpfs(tmp_path / "logs", "64k") as logs:
        io = SafeAtomicCheckpointIO()
        io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, logs / "last.ckpt")
        with pytest.raises(CheckpointError, match=f"Could not write checkpoint {logs / 'last.ckpt'}: .*No space left on device.*Fix: free space"):
            io.save_checkpoint({"state_dict": {"w": torch.ones(100_000)}}, logs / "last.ckpt")
        assert [p.name for p in logs.iterdir()] == ["last.ckpt"]
        assert torch.equal(torch.load(logs / "last.ckpt", weights_only=True)["state_dict"]["w"], torch.ones(2))


def test_cache_completed_by_another_process_meanwhile_is_kept(tmp_path):
    cache = tmp_path / "train"

    def other_process_finishes_first(tmp):
        (tmp / "ours").write_text("ours")
        cache.mkdir()
        (cache / "theirs").write_text("theirs")

    write_cache_atomically(cache, other_process_finishes_first)
    assert [p.name for p in cache.iterdir()] == ["theirs"] and [p.name for p in tmp_path.iterdir()] == ["train"]


def test_generated_rows_that_do_not_fit_leave_nothing_and_the_error_counts_them(tmp_path):
    rows = [{"generated_text": "7 8 9 " * 50, "text_with_spl_tokens": "dropped"} for _ in range(40)]
    with tmpfs(tmp_path / "gen", "4k") as out:
        target = out / "prediction.jsonl"
        with pytest.raises(AtomicWriteError) as caught:
            write_jsonl(target, rows)
        message = str(caught.value)
        assert f"Could not write the 40 generated rows to {target}" in message and "No space left" in message
        assert "Fix: free space on that filesystem or pass another +generation.output_dir=" in message
        assert list(out.iterdir()) == []


def test_generated_rows_are_written_without_dropped_fields(tmp_path):
    write_jsonl(tmp_path / "prediction.jsonl", [{"generated_text": "1 2", "text_with_spl_tokens": "x"}])
    assert (tmp_path / "prediction.jsonl").read_text() == '{"generated_text": "1 2"}\n'
    assert (tmp_path / "prediction.jsonl").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
