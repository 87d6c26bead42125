"""Run the real ``xlm`` console script in a subprocess, offline, with everything under a tmp dir."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
XLM = Path(sys.executable).parent / "xlm"

# A STAR-easy run small enough for a test: 1-layer model, 4 steps, one val/test batch.
STAR_SIZES = ["star_split_sizes.train=256", "star_split_sizes.validation=32", "star_split_sizes.test=32"]
TINY_MODEL = ["model.d_model=32", "model.num_layers=1", "model.nhead=2", "model.rotary_emb_dim=16"]
TINY_TRAIN = [
    "per_device_batch_size=16", "global_batch_size=16",
    "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1",
    "callbacks.checkpoint_every_n_steps.every_n_train_steps=2",
    "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1",
]


def offline_env(data_dir: Path, log_dir: Path, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The calling environment, offline (HF hub, datasets, wandb), with DATA_DIR and LOG_DIR set."""
    env = dict(os.environ)
    for key in ("XLM_MODELS_PATH", "XLM_MODELS_PACKAGES", "PYTHONPATH"):
        env.pop(key, None)
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false",
        DATA_DIR=str(data_dir), LOG_DIR=str(log_dir), OMP_NUM_THREADS="1",
    )
    env.update(extra or {})
    return env


def run_xlm(
    args: Sequence[str], cwd: Path, env: Dict[str, str], timeout: int = 600,
    xlm: Sequence[str] = (str(XLM),), check: bool = True,
) -> subprocess.CompletedProcess:
    """``xlm <args>`` in ``cwd``; with ``check`` a non-zero exit fails showing the output's tail."""
    proc = subprocess.run(
        [*xlm, *args], cwd=cwd, env=env, timeout=timeout,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"xlm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc


def checkpoint_dir(log_dir: Path) -> Path:
    """``<log_dir>/<job_name>/checkpoints`` of the only run under ``log_dir``."""
    found: List[Path] = sorted(log_dir.glob("*/checkpoints"))
    assert len(found) == 1, f"expected one checkpoints dir under {log_dir}, found {found}"
    return found[0]
