"""SIGTERM to rank 0 of a two-process CPU DDP run: every process exits within a bounded time, with
status 143, and ``on_exception.ckpt`` written once (round 4, case 3: both processes waited on a
futex forever in about a third of the runs, with no checkpoint). The stop is repeated over
resumed runs with the signal at different moments of a step, to catch an intermittent hang."""

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import List

import pytest
import torch

from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, XLM, checkpoint_dir, offline_env

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

RUN = [
    "job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL, "trainer_strategy=ddp",
    "trainer.devices=2", "per_device_batch_size=8", "global_batch_size=16", "trainer.max_steps=100000",
    "trainer.val_check_interval=100000", "callbacks.checkpoint_every_n_steps.every_n_train_steps=2",
]
BOUND_S = 120
DELAYS_S = (0.0, 0.15, 0.4)


def _children(pid: int) -> List[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the process tree from /proc")
def test_sigterm_to_rank_0_stops_every_rank_in_bounded_time_with_one_checkpoint(star_data_dir, tmp_path):
    logs = tmp_path / "logs"
    env = offline_env(star_data_dir, logs)
    checkpoints = None
    for round_number, delay in enumerate(DELAYS_S):
        output = tmp_path / f"round{round_number}.out"
        others: List[int] = []
        with open(output, "w") as sink:
            rank0 = subprocess.Popen([str(XLM), *RUN], cwd=REPO_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
            try:
                started = time.time()
                while True:  # wait for a periodic checkpoint newer than this round's start
                    assert rank0.poll() is None, output.read_text()[-4000:]
                    assert time.time() - started < 600, "no periodic checkpoint in 600 s"
                    found = list(logs.glob("*/checkpoints/*-*.ckpt"))
                    if any(p.stat().st_mtime > started for p in found):
                        break
                    time.sleep(0.05)
                time.sleep(delay)
                others = _children(rank0.pid)
                assert others, "rank 0 launched no other process"
                rank0.send_signal(signal.SIGTERM)
                try:
                    rank0.wait(timeout=BOUND_S)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"round {round_number}: rank 0 still runs {BOUND_S} s after SIGTERM (hung)")
                deadline = time.time() + 30
                while any(_alive(pid) for pid in others) and time.time() < deadline:
                    time.sleep(0.1)
                assert not any(_alive(pid) for pid in others), f"round {round_number}: rank 1 still runs"
            finally:
                for pid in ([rank0.pid] if rank0.poll() is None else []) + [p for p in others if _alive(p)]:
                    os.kill(pid, signal.SIGKILL)  # a hung run: end both ranks, the test has failed
                rank0.wait()
        text = output.read_text()
        assert rank0.returncode == 143, f"round {round_number}: exit {rank0.returncode}\n{text[-4000:]}"
        checkpoints = checkpoint_dir(logs)
        assert text.count("on_exception.ckpt holds the state of step") == 1, text[-4000:]
        stopped = torch.load(checkpoints / "on_exception.ckpt", map_location="cpu", weights_only=True)
        assert stopped["global_step"] >= 2
    assert os.listdir(checkpoints)
