"""``arlm.runtime.run_lock`` on ``filelock``: the holder is named, a contender leaves the record
alone, a killed holder never blocks, and a forked child (a DataLoader worker) cannot release it."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from arlm.runtime.run_lock import RunInProgressError, RunLock


def test_a_contender_is_refused_with_the_holder_and_leaves_its_record(tmp_path):
    holder = RunLock(tmp_path, "job")
    holder.acquire()
    record = (tmp_path / "run.lock").read_text()
    assert record.startswith(f"pid {os.getpid()}, started ") and "command: " in record
    for _ in range(2):
        with pytest.raises(RunInProgressError, match=f"job_name=job is running \\(pid {os.getpid()}, started"):
            RunLock(tmp_path, "job").acquire()
    assert (tmp_path / "run.lock").read_text() == record
    holder.release()
    assert (tmp_path / "run.lock").read_text() == record, "release must keep the file (and its record)"


def test_a_killed_holder_does_not_block_and_the_next_run_records_itself(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from arlm.runtime.run_lock import RunLock
        lock = RunLock({str(tmp_path)!r}, "job")
        lock.acquire()
        print("held", flush=True)
        time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(RunInProgressError, match=f"\\(pid {child.pid}, started"):
            RunLock(tmp_path, "job").acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    RunLock(tmp_path, "job").acquire()
    assert (tmp_path / "run.lock").read_text().startswith(f"pid {os.getpid()}, ")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_exiting_keeps_the_parents_lock(tmp_path):
    holder = RunLock(tmp_path, "job")
    holder.acquire()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    with pytest.raises(RunInProgressError):
        RunLock(tmp_path, "job").acquire()
    holder.release()
