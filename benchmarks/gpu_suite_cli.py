"""The real-CLI part of ``gpu_suite.py``: a short bf16-mixed training run of ``star_medium_arlm``
(the loss of every step recorded by :class:`job_timer.JobTimer`), then ``generate_arlm`` and
``export_hf`` of its checkpoint."""

import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Dict

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run_cli(xlm: str, work: Path, dry_run: bool, device: torch.device) -> dict:
    """200 (dry run: 10) real training steps, then generate_arlm and export_hf of the checkpoint."""
    steps = 10 if dry_run else 200
    job = "gpu_suite_star_medium"
    common = [
        "experiment=star_medium_arlm", f"job_name={job}",
        "star_split_sizes.train=2048" if dry_run else "star_split_sizes.train=16000",
        "star_split_sizes.validation=32", "star_split_sizes.test=64",
    ]
    train = [
        "job_type=train", *common, f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
        f"callbacks.checkpoint_every_n_steps.every_n_train_steps={steps}", "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1", "++trainer.precision=bf16-mixed",
        "+callbacks.job_timer._target_=job_timer.JobTimer", f"+callbacks.job_timer.path={work / 'timer.json'}",
    ]
    if dry_run:
        train += ["model.num_layers=2", "per_device_batch_size=16", "global_batch_size=16"]
        common += ["model.num_layers=2"]
    env = {
        **os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH", ""), str(ROOT), str(HERE)])),
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false",
        "DATA_DIR": str(work / "data"), "LOG_DIR": str(work / "logs"),
    }
    if device.type == "cpu":
        env["OMP_NUM_THREADS"] = "1"
    result: Dict[str, Any] = {}
    for name, args in (
        ("train", train),
        ("generate_arlm", ["job_type=generate_arlm", *common]),
        ("export_hf", [
            "job_type=export_hf", *common, f"+export_hf.checkpoint_path={work / 'logs' / job / 'checkpoints' / 'last.ckpt'}",
            f"+export_hf.output_dir={work / 'hf_export'}",
        ]),
    ):
        start = time.perf_counter()
        proc = subprocess.run([xlm, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        result[name] = {"exit": proc.returncode, "seconds": time.perf_counter() - start, "tail": proc.stdout[-1500:]}
        if proc.returncode != 0:
            break
    timer = work / "timer.json"
    if timer.exists():
        losses = json.loads(timer.read_text())["losses"]
        k = max(1, min(20, len(losses) // 4))
        first, last = statistics.mean(losses[:k]), statistics.mean(losses[-k:])
        result["train"].update({
            "steps": len(losses), "loss_first": first, "loss_last": last,
            "finite": all(x == x and abs(x) != float("inf") for x in losses), "falling": last < first,
        })
    exported = work / "hf_export" / "config.json"
    if exported.exists():
        result["export_hf"]["architecture"] = json.loads(exported.read_text()).get("architectures")
    return result
