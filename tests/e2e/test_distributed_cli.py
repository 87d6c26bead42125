"""Beyond one process, through the real ``xlm`` CLI on CPU ranks (gloo, sockets on 127.0.0.1 only).

Four 20-step STAR-easy runs of the same global batch (16 rows) and seed: one process, DDP on 2
ranks, FSDP2 (``trainer_strategy=fsdp2``) on 2 ranks, and DDP over two torchrun node agents. Each
records the loss of the whole global batch at every step (:mod:`tests.e2e.loss_recorder`); the
runs must agree step by step. The DDP run starts with no prepared data (its 2 ranks prepare it
once); the FSDP2 run's sharded checkpoint directory is what eval, generate_arlm, export_hf, the
consolidation and resume read. Every run is bounded in time and killed as a process group.

Tolerance: in float32 the runs differ only in the order of sums (the gradient all-reduce or
reduce-scatter, each rank's matmuls over half the rows), about 1e-7 relative; Adam turns them
into parameter differences of the same relative size, which 20 steps compound. Measured here
(1 layer, batch 16): at most 1.5e-7 over the 20 losses; with the experiment's 8-layer model and
batch 64, 5e-5 (docs/distributed.md). Step 1 (same weights, same rows) must agree to 1e-6 and
every step to ``RTOL`` = 1e-4, while a wrong batch differs by about 2e-3 from step 1 and a lost
or double-counted gradient shard changes the trajectory from step 2.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import pytest
import torch

from arlm.checkpoints.read import read_checkpoint
from arlm.runtime.resume import WORLD_SIZE_KEY
from tests.e2e.test_export_hf_cli import xlm_model_from
from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, XLM, checkpoint_dir, offline_env
from tests.hf_without_arlm import load_without_arlm

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]
STEPS = 20
RTOL = 1e-4
STAR = ["experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL]
RUN = [
    "global_batch_size=16", f"trainer.max_steps={STEPS}", f"trainer.val_check_interval={STEPS}",
    f"callbacks.checkpoint_every_n_steps.every_n_train_steps={STEPS}", "trainer.log_every_n_steps=1",
    "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1",
    "+callbacks.global_loss._target_=tests.e2e.loss_recorder.GlobalLossRecorder",
]
TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_group(commands: Sequence[Sequence[str]], env: Dict[str, str], out: Path, timeout: float = TIMEOUT_S) -> str:
    """Run ``commands`` side by side, each in its own process group with its output in a file;
    past ``timeout`` every group is killed and the test fails. Returns the outputs, joined."""
    out.parent.mkdir(parents=True, exist_ok=True)
    logs = [out.with_suffix(f".{index}.log") for index in range(len(commands))]
    procs = [
        subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                         start_new_session=True)
        for command, log in zip(commands, logs)
    ]
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = "\n".join(log.read_text() for log in logs)
    failed = [proc.returncode for proc in procs if proc.returncode != 0]
    assert not failed, f"exit statuses {[p.returncode for p in procs]} (killed after {timeout}s?):\n{text[-6000:]}"
    return text


class Run:
    """One training run: its log directory, output, recorded global losses and wall time."""

    def __init__(self, root: Path, name: str, data_dir: Path, flags: Sequence[str], launcher: Sequence[Sequence[str]] = ((),)):
        self.log_dir = root / name / "logs"
        self.losses_path = root / name / "losses.jsonl"
        self.env = offline_env(data_dir, self.log_dir, {
            "PYTHONPATH": str(REPO_ROOT), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
        })
        args = ["job_type=train", *STAR, *RUN, f"+callbacks.global_loss.path={self.losses_path}", *flags]
        start = time.monotonic()
        self.out = run_group([[*prefix, str(XLM), *args] for prefix in launcher], self.env, root / name / "run")
        self.wall_s = time.monotonic() - start

    @property
    def rows(self) -> List[dict]:
        return [json.loads(line) for line in self.losses_path.read_text().splitlines()]

    @property
    def losses(self) -> List[float]:
        return [row["loss"] for row in self.rows]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="module")
def one_process(star_data_dir, runs_root) -> Run:
    return Run(runs_root, "one", star_data_dir, [])


@pytest.fixture(scope="module")
def ddp(runs_root) -> Run:
    """DDP on 2 ranks, starting with an empty DATA_DIR: the ranks prepare STAR-easy themselves."""
    return Run(runs_root, "ddp", runs_root / "fresh_data", ["trainer_strategy=ddp", "trainer.devices=2"])


@pytest.fixture(scope="module")
def fsdp2(star_data_dir, runs_root) -> Run:
    return Run(runs_root, "fsdp2", star_data_dir, ["trainer_strategy=fsdp2", "trainer.devices=2", "trainer.accelerator=cpu"])


@pytest.fixture(scope="module")
def two_nodes(star_data_dir, runs_root) -> Run:
    """DDP over two torchrun node agents (one rank each) meeting at a c10d rendezvous on 127.0.0.1."""
    endpoint = f"127.0.0.1:{free_port()}"
    agent = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
             f"--rdzv-endpoint={endpoint}", "--rdzv-id=arlm-two-nodes", "--local-addr=127.0.0.1"]
    return Run(runs_root, "two_nodes", star_data_dir, ["trainer_strategy=ddp", "trainer.devices=1", "trainer.num_nodes=2"],
               launcher=(agent, agent))


def assert_agree(run: Run, reference: Run) -> None:
    """Step 1 (same weights, same rows) to float32's rounding, all 20 steps to ``RTOL``."""
    losses, expected = torch.tensor(run.losses, dtype=torch.float64), torch.tensor(reference.losses, dtype=torch.float64)
    assert len(losses) == len(expected) == STEPS
    print(f"largest relative difference: {((losses - expected).abs() / expected).max().item():.2e}")
    torch.testing.assert_close(losses[0], expected[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(losses, expected, rtol=RTOL, atol=0)


def test_fsdp2_and_ddp_on_two_ranks_train_as_one_process(one_process, ddp, fsdp2):
    for run in (ddp, fsdp2):
        assert "distributed_backend=gloo" in run.out
        rows = run.rows
        assert all(row["tokens"] == 2 * row["rank_tokens"] for row in rows)  # both ranks had half the targets
        assert [row["tokens"] for row in rows] == [row["tokens"] for row in one_process.rows]
        assert_agree(run, one_process)
    assert one_process.losses[-1] < one_process.losses[0] - 0.1  # it learned: agreeing is not trivial
    reference = read_checkpoint(checkpoint_dir(one_process.log_dir) / "last.ckpt").contents
    sharded = read_checkpoint(checkpoint_dir(fsdp2.log_dir) / "last.ckpt").contents
    for name, weight in reference["state_dict"].items():  # the weights and the EMA sharded like them
        torch.testing.assert_close(sharded["state_dict"][name], weight, rtol=RTOL, atol=1e-6)
    for shadow, expected in zip(sharded["ema"]["shadow_params"], reference["ema"]["shadow_params"], strict=True):
        torch.testing.assert_close(shadow, expected, rtol=RTOL, atol=1e-6)
    print({name: round(run.wall_s, 1) for name, run in (("one", one_process), ("ddp", ddp), ("fsdp2", fsdp2))})


def test_two_torchrun_node_agents_train_as_one_process(one_process, two_nodes):
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in two_nodes.out and "GLOBAL_RANK: 1, MEMBER: 2/2" in two_nodes.out
    assert_agree(two_nodes, one_process)


def test_two_ranks_starting_without_data_prepare_it_once(ddp, runs_root):
    """Rank 0 prepares each split (xlm-core's prepare_data_per_node=False), the other waits at
    Lightning's barrier: one save per split, and no half-written cache left."""
    assert ddp.out.count("Saving the dataset (0/1 shards):   0%") == 3  # each save's first progress line
    prepared = runs_root / "fresh_data" / "dhruveshpatel" / "star-small"
    assert sorted(path.name for path in prepared.iterdir()) == ["test", "train", "validation"]


def test_the_sharded_checkpoint_is_a_directory_every_reader_takes(fsdp2, tmp_path):
    last = checkpoint_dir(fsdp2.log_dir) / "last.ckpt"
    assert last.is_dir()
    assert sorted(path.name for path in last.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]
    contents = read_checkpoint(last).contents
    assert contents["global_step"] == STEPS and contents[WORLD_SIZE_KEY] == 2
    assert len(contents["ema"]["shadow_params"]) == len([k for k in contents["state_dict"] if k.startswith("model.")])
    consolidated = tmp_path / "one_file.ckpt"
    subprocess.run([sys.executable, "-m", "arlm.runtime.consolidate", str(last), str(consolidated)], check=True, timeout=120)
    single = torch.load(consolidated, map_location="cpu", weights_only=True)
    assert single.keys() == contents.keys()
    assert all(torch.equal(single["state_dict"][k], v) for k, v in contents["state_dict"].items())


def xlm(args: Sequence[str], run: Run, out: Path) -> str:
    return run_group([[str(XLM), *STAR, *args]], run.env, out, timeout=120)


def test_eval_generate_and_export_read_the_sharded_directory(fsdp2, tmp_path):
    last = checkpoint_dir(fsdp2.log_dir) / "last.ckpt"
    out = xlm(["job_type=eval", f"+eval.ckpt_path={last / 'meta.pt'}", "+trainer.limit_val_batches=1"], fsdp2, tmp_path / "eval")
    assert "val/lm/accumulated_loss" in out
    xlm(["job_type=generate_arlm", "+generation.device=cpu", f"+generation.output_dir={tmp_path / 'gen'}",
         f"+generation.ckpt_path={last / 'meta.pt'}"], fsdp2, tmp_path / "gen")
    assert len((tmp_path / "gen" / "prediction.jsonl").read_text().splitlines()) == 32
    exported = tmp_path / "hf"
    xlm(["job_type=export_hf", f"+export_hf.checkpoint_path={last}", f"+export_hf.output_dir={exported}"], fsdp2, tmp_path / "export")
    ids = torch.randint(7, 27, (2, 20), generator=torch.Generator().manual_seed(0))
    result = load_without_arlm(exported, tmp_path / "child", ids, ["1 2 3 [BOS]"], new_tokens=4)
    reference = xlm_model_from(read_checkpoint(last).contents, use_ema=True)
    with torch.no_grad():
        torch.testing.assert_close(result["logits"], reference(ids), atol=1e-5, rtol=0)


def test_a_sharded_run_resumes_on_its_ranks_and_another_count_is_refused(fsdp2, tmp_path):
    """Last in this file: it moves the FSDP2 run on to step 24, in place, as a user resumes (the
    same command with a higher ``trainer.max_steps``; no checkpoint falls due by step 24)."""
    env = {**fsdp2.env, "MASTER_PORT": str(free_port())}
    run = [flag for flag in RUN if not flag.startswith("trainer.max_steps=")]
    args = ["job_type=train", *STAR, *run, f"+callbacks.global_loss.path={tmp_path / 'losses.jsonl'}",
            "trainer_strategy=fsdp2", "trainer.accelerator=cpu", "trainer.max_steps=24"]
    refused = subprocess.run([str(XLM), *args, "trainer.devices=1"], cwd=REPO_ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert refused.returncode != 0
    assert "was written by a run of 2 rank(s) and this run has 1" in refused.stdout
    assert not (tmp_path / "losses.jsonl").exists()  # refused before training
    out = run_group([[str(XLM), *args, "trainer.devices=2"]], env, tmp_path / "resume")
    assert "Restored all states from the checkpoint" in out
    rows = [json.loads(line) for line in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [21, 22, 23, 24]
    assert rows[0]["loss"] < fsdp2.losses[0]  # from the trained weights, not a fresh start
