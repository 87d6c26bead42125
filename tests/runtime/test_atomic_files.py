"""Atomic file and directory writes: whole or nothing, on a real full filesystem too; racing
writers; umask permissions; dead writers' temporaries (a real SIGKILL) removed and logged once."""

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from arlm.runtime import atomic_files, partial_files
from arlm.runtime.partial_files import remove_dead_writers_temporaries, temporary_path
from arlm.runtime.atomic_files import (
    AtomicWriteError,
    TargetExistsError,
    write_directory_atomically,
    write_file_atomically,
)
from tests.e2e.faults import tmpfs


def dead_pid() -> int:
    """The pid of a process that has exited."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)


def temporaries(directory: Path):
    return sorted(p.name for p in directory.iterdir() if partial_files.TEMPORARY_NAME.match(p.name))


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def fill_directory(files: dict):
    def write(staging: Path) -> None:
        for name, text in files.items():
            (staging / name).write_text(text)

    return write


def test_file_write_takes_bytes_text_or_a_callback(tmp_path):
    write_file_atomically(tmp_path / "a.bin", b"\x00\x01")
    write_file_atomically(tmp_path / "sub" / "b.txt", "héllo")
    write_file_atomically(tmp_path / "c.txt", lambda handle: handle.write(b"from a callback"))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "c.txt").read_text() == "from a callback"
    assert temporaries(tmp_path) == [] and temporaries(tmp_path / "sub") == []


def test_failing_callback_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"old")

    def half_write(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_file_atomically(target, half_write)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_full_filesystem_keeps_the_old_file_removes_the_temporary_and_names_path_and_fix(tmp_path):
    with tmpfs(tmp_path / "small", "16k") as small:
        target = small / "prediction.jsonl"
        write_file_atomically(target, b"old rows\n")
        with pytest.raises(AtomicWriteError) as caught:
            write_file_atomically(target, b"x" * 64_000)
        assert caught.value.no_space and caught.value.path == target
        assert str(target) in str(caught.value) and "No space left" in str(caught.value)
        assert "Fix: free space" in str(caught.value)
        assert target.read_bytes() == b"old rows\n" and [p.name for p in small.iterdir()] == ["prediction.jsonl"]

        with pytest.raises(AtomicWriteError, match=f"Could not write {small / 'hf'}: .*No space left"):
            write_directory_atomically(small / "hf", fill_directory({"model.safetensors": "x" * 64_000}))
        assert [p.name for p in small.iterdir()] == ["prediction.jsonl"]


def test_file_in_an_unwritable_place_names_it(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(AtomicWriteError, match=f"Could not write {tmp_path / 'a_file' / 'x.ckpt'}: .*Fix: make"):
        write_file_atomically(tmp_path / "a_file" / "x.ckpt", b"")


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_created_files_and_directories_get_the_umask_permissions_of_a_plain_open_and_mkdir(tmp_path, mask):
    with umask(mask):
        plain_file = tmp_path / "plain.txt"
        plain_file.write_text("")
        plain_dir = tmp_path / "plain_dir"
        plain_dir.mkdir()
        write_file_atomically(tmp_path / "atomic.txt", "x")
        write_directory_atomically(tmp_path / "atomic_dir", fill_directory({"f.txt": "x"}))
    file_mode, dir_mode = plain_file.stat().st_mode & 0o777, plain_dir.stat().st_mode & 0o777
    assert file_mode == 0o666 & ~mask and dir_mode == 0o777 & ~mask
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "atomic_dir").stat().st_mode & 0o777 == dir_mode
    assert (tmp_path / "atomic_dir" / "f.txt").stat().st_mode & 0o777 == file_mode


def test_directory_goes_into_a_new_or_empty_place_and_refuses_anything_else_before_writing(tmp_path):
    write_directory_atomically(tmp_path / "new" / "out", fill_directory({"a": "1"}))
    assert (tmp_path / "new" / "out" / "a").read_text() == "1"
    (tmp_path / "empty").mkdir()
    write_directory_atomically(tmp_path / "empty", fill_directory({"a": "2"}))
    assert (tmp_path / "empty" / "a").read_text() == "2"

    (tmp_path / "file").write_text("keep")
    (tmp_path / "link").symlink_to(tmp_path / "new")
    calls = []
    for name, kind in [("empty", "directory is not empty"), ("file", "is an existing file"), ("link", "is a symbolic link")]:
        with pytest.raises(TargetExistsError, match=kind) as caught:
            write_directory_atomically(tmp_path / name, calls.append)
        assert not caught.value.while_writing
    assert calls == [] and (tmp_path / "file").read_text() == "keep" and (tmp_path / "new" / "out").is_dir()
    assert temporaries(tmp_path) == []


def test_of_two_writers_racing_into_one_new_directory_exactly_one_succeeds(tmp_path):
    target = tmp_path / "hf"
    both_writing = threading.Barrier(2)
    results = {}

    def writer(name):
        def write(staging):
            fill_directory({"who": name})(staging)
            both_writing.wait(timeout=30)  # both have passed the start check and staged their copy

        try:
            write_directory_atomically(target, write)
            results[name] = "ok"
        except TargetExistsError as error:
            results[name] = error

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [name for name, result in results.items() if result == "ok"]
    (loser,) = [result for result in results.values() if result != "ok"]
    assert len(winners) == 1 and (target / "who").read_text() == winners[0]
    assert loser.while_writing and str(target) in str(loser) and "directory is not empty" in str(loser)
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_replace_swaps_out_only_the_target(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic_files, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    write_directory_atomically(out, fill_directory({"stale.json": "old", "config.json": "old"}))
    write_directory_atomically(out, fill_directory({"config.json": "new"}), replace=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.json"] and (out / "config.json").read_text() == "new"

    was_file = tmp_path / "was_file"
    was_file.write_text("old")
    write_directory_atomically(was_file, fill_directory({"config.json": "new"}), replace=True)
    assert (was_file / "config.json").is_file()

    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "keep.txt").write_text("not ours")
    link = tmp_path / "link"
    link.symlink_to(linked)
    write_directory_atomically(link, fill_directory({"config.json": "new"}), replace=True)
    assert not link.is_symlink() and (link / "config.json").is_file()
    assert (linked / "keep.txt").read_text() == "not ours"
    assert temporaries(tmp_path) == []


def test_files_a_writer_makes_private_get_the_umask_permissions_too(tmp_path):
    def private_writer(staging):  # what safetensors 0.8 does to model.safetensors
        os.mkdir(staging / "sub", 0o700)
        for path, mode in [(staging / "model.safetensors", 0o600), (staging / "sub" / "run.sh", 0o700)]:
            path.write_text("")
            path.chmod(mode)

    with umask(0o022):
        write_directory_atomically(tmp_path / "out", private_writer)
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in sorted(tmp_path.rglob("*"))}
    assert modes == {"out": 0o755, "out/model.safetensors": 0o644, "out/sub": 0o755, "out/sub/run.sh": 0o755}


def test_dead_writers_temporaries_are_removed_once_logged_and_nothing_else(tmp_path, caplog, capsys):
    dead, live, host = dead_pid(), os.getpid(), partial_files.HOST
    (tmp_path / f".hf.partial-{dead}-ab12@{host}").mkdir()
    (tmp_path / f".hf.partial-{dead}-ab12@{host}" / "model.safetensors").write_bytes(b"x")
    (tmp_path / f".last.ckpt.partial-{dead}-cd34").write_bytes(b"x")  # no host: taken as this one's
    other_host = f".train.partial-{dead}-9f8e@another-node"  # its process cannot be seen from here
    kept = [f".prediction.jsonl.partial-{live}-ef56@{host}", other_host, ".notes.partial-abc-1", "last.ckpt", ".hidden"]
    for name in kept:
        (tmp_path / name).write_bytes(b"x")
    with caplog.at_level(logging.INFO, logger="arlm.runtime.partial_files"):
        write_file_atomically(tmp_path / "best.ckpt", b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "best.ckpt"])
    removed, kept_elsewhere = caplog.records
    assert removed.levelname == "WARNING" and str(tmp_path) in removed.getMessage()
    assert f".hf.partial-{dead}-ab12@{host}" in removed.getMessage() and f".last.ckpt.partial-{dead}-cd34" in removed.getMessage()
    assert f"of writers on other hosts (this is {host}); delete them if those writers are gone: {other_host}" in kept_elsewhere.getMessage()
    assert capsys.readouterr().out == ""
    assert remove_dead_writers_temporaries(tmp_path) == []


KILLED_WRITER = """
import sys, time
from pathlib import Path
from arlm.runtime.atomic_files import write_directory_atomically

def write(staging):
    (staging / "model.safetensors").write_bytes(b"x" * 100_000)
    print(staging, flush=True)
    time.sleep(600)

write_directory_atomically(Path(sys.argv[1]), write)
"""


def test_a_live_writers_temporary_is_kept_and_a_sigkilled_ones_removed_by_the_next_write(tmp_path):
    target = tmp_path / "hf"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        staging = Path(proc.stdout.readline().strip())
        write_file_atomically(tmp_path / "best.ckpt", b"written while the other writer runs")
        assert staging.is_dir(), "a live writer's staging directory was removed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert staging.parent == tmp_path and staging.name.startswith(f".hf.partial-{proc.pid}-")
    assert staging.name.endswith(f"@{partial_files.HOST}")
    assert (staging / "model.safetensors").is_file() and not target.exists()

    write_file_atomically(tmp_path / "last.ckpt", b"a checkpoint save in the same directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_temporary_names_carry_the_pid_and_differ(tmp_path):
    first, second = temporary_path(tmp_path / "hf"), temporary_path(tmp_path / "hf")
    assert first != second and first.parent == tmp_path
    assert partial_files.TEMPORARY_NAME.match(first.name)["pid"] == str(os.getpid())


def test_module_imports_without_lightning_hydra_or_xlm():
    code = "import sys, arlm.runtime.atomic_files; print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'hydra', 'omegaconf', 'xlm'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class _InterruptingWriter:
    """A binary file that receives a real SIGINT after its first ``write`` (mid-``torch.save``)."""

    def __init__(self, handle):
        self.handle, self.calls = handle, 0

    def write(self, data):
        self.calls += 1
        if self.calls == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return self.handle.write(data)

    def flush(self):
        self.handle.flush()


@pytest.mark.parametrize("via_torch", [False, True])
def test_a_write_stopped_by_sigint_says_so_and_keeps_the_old_file(tmp_path, via_torch):
    """torch.save turns the KeyboardInterrupt raised inside its write into a RuntimeError; before,
    that read 'Could not write ... Fix: make <dir> a writable directory'."""
    import torch

    from arlm.runtime.atomic_files import WriteInterrupted
    from arlm.runtime.checkpoint_io import save_atomically

    target = tmp_path / "last.ckpt"
    save_atomically({"step": 1}, target)

    def content(handle):
        writer = _InterruptingWriter(handle)
        if via_torch:
            torch.save({"weights": [torch.zeros(1000) for _ in range(8)]}, writer)
        else:
            for _ in range(4):
                writer.write(b"x" * 1024)

    with pytest.raises(WriteInterrupted, match=r"was interrupted \(Ctrl\+C / SIGINT\): the partial copy was removed") as caught:
        write_file_atomically(target, content)
    assert isinstance(caught.value, KeyboardInterrupt)
    assert "writable" not in str(caught.value)
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert temporaries(tmp_path) == []


def test_a_directory_write_stopped_by_sigint_leaves_no_staging_directory(tmp_path):
    from arlm.runtime.atomic_files import WriteInterrupted

    def write(staging: Path):
        (staging / "a").write_text("a")
        os.kill(os.getpid(), signal.SIGINT)
        (staging / "b").write_text("b")

    with pytest.raises(WriteInterrupted):
        write_directory_atomically(tmp_path / "out", write)
    assert list(tmp_path.iterdir()) == []
