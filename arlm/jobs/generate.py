"""``xlm job_type=generate_arlm``: generate from a checkpoint on any device and write JSONL.

xlm-core 0.3.1's ``job_type=generate`` moves the model and every batch to ``"cuda"``
unconditionally, so it fails on machines without a GPU. This job builds the same datamodule and
model (``xlm.utils.model_loading.load_model_for_inference``, then the checkpoint's EMA weights
applied with :meth:`arlm.harness_arlm.ARLMHarness.apply_checkpoint_ema`), runs the
predictor over the experiment's ``predict`` dataloaders on the chosen device under
``torch.no_grad()``, and writes one JSON object per example to
``<generation.output_dir>/<dataloader name>.jsonl`` with
:func:`arlm.runtime.atomic_files.write_file_atomically` (a file that cannot be written, e.g. on a
full disk, leaves nothing behind and the error names it, the rows lost and the fix).

Config keys (all optional; keys absent from the base config need a leading ``+`` on the CLI):
    generation.ckpt_path: Lightning checkpoint; default ``<checkpointing_dir>/best.ckpt``, then
        ``last.ckpt`` (also accepted: ``generation.model_only_checkpoint_path``, ``hub.repo_id``).
    generation.device: ``auto`` (CUDA when available, else CPU; the default), ``cpu``, ``cuda``, ``cuda:1``...
    generation.output_dir: default ``<paths.run_dir>/generations``.
    generation.max_batches: stop each dataloader after this many batches (default: all).
    generation.use_ema: apply the EMA weights of a Lightning checkpoint (default true; false: its
        raw weights). Model-only and hub weights are used as they are.

Rows are the predictor's ``to_dict`` rows (``text``, ``generated_text``, ``prompt``, ``truth`` when
the data has a reference, ``answer`` for TinyGSM/GSM8K, ...), with ``text_with_spl_tokens`` removed.
"""

import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from xlm.utils.model_loading import load_model_for_inference
from xlm.utils.rank_zero import RankedLogger

from arlm.jobs.run_components import run_components
from arlm.runtime.atomic_files import AtomicWriteError, write_file_atomically
from arlm.runtime.config_schema import device_problem, is_unset
from arlm.runtime.cpu_precision import exact_fp32_matmul_on_cpu
from arlm.runtime.preflight import check_output_dir

logger = RankedLogger(__name__, rank_zero_only=True)

DROPPED_FIELDS = ("text_with_spl_tokens",)


def resolve_device(name: Optional[str]) -> torch.device:
    """``auto``/None -> ``cuda`` if available else ``cpu``; anything else must be ``cpu`` or a CUDA
    device this machine has (:func:`arlm.runtime.config_schema.device_problem`)."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem("generation.device", name)
    if problem is not None:
        raise ValueError(problem)
    return torch.device(str(name))


def check_checkpoint_argument(cfg: DictConfig) -> None:
    """Fail with the path and the fix when an explicitly given checkpoint file does not exist."""
    for key in ("ckpt_path", "checkpoint_path", "model_only_checkpoint_path"):
        path = OmegaConf.select(cfg, f"generation.{key}", default=None)
        if not is_unset(path) and not os.path.isfile(str(path)):
            raise FileNotFoundError(
                f"generation.{key}={path} does not exist (or is not a file). Fix: pass the .ckpt "
                f"file written by training, e.g. {cfg.checkpointing_dir}/best.ckpt or last.ckpt, "
                f"or leave it out to use those automatically."
            )


def exact_match_summary(rows: List[Dict[str, Any]]) -> str:
    """``"; exact match k/n (p%)"`` of ``generated_text == truth`` when every row has a non-empty truth."""
    if not rows or not all(row.get("truth") for row in rows):
        return ""
    hits = sum(row["generated_text"].strip() == row["truth"].strip() for row in rows)
    return f"; exact match {hits}/{len(rows)} ({100.0 * hits / len(rows):.1f}%)"


def _to_device(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def write_jsonl(path: Path, rows: List[Dict[str, Any]]) -> None:
    """Write ``rows`` (without :data:`DROPPED_FIELDS`) to ``path``, one JSON object a line, atomically.

    Raises:
        AtomicWriteError: the file could not be written (nothing is left but the previous file, if
            any); it names the file, the number of rows lost and the fix.
    """

    def write(handle: BinaryIO) -> None:
        for row in rows:
            handle.write((json.dumps({k: v for k, v in row.items() if k not in DROPPED_FIELDS}) + "\n").encode("utf-8"))

    try:
        write_file_atomically(path, write)
    except AtomicWriteError as error:
        fix = "free space on that filesystem or" if error.no_space else f"make {path.parent} writable or"
        raise AtomicWriteError(
            f"Could not write the {len(rows)} generated rows to {path}: {error.reason}. They are lost: "
            f"the partial file was removed and {path} is as it was. Fix: {fix} pass another "
            f"+generation.output_dir=<directory>, then re-run",
            path,
            error.reason,
        ) from error.reason


def generate_arlm(cfg: DictConfig) -> List[Path]:
    """Run the job described in the module docstring; return the JSONL paths written."""
    if cfg.get("seed") is not None:
        torch.manual_seed(cfg.seed)
    check_checkpoint_argument(cfg)
    check_output_dir(OmegaConf.select(cfg, "generation.output_dir", default=None))
    device = resolve_device(OmegaConf.select(cfg, "generation.device", default="auto"))
    tokenizer, datamodule = run_components(cfg, with_datamodule=True)
    datamodule.no_trainer_mode = True
    datamodule.prepare_data()
    datamodule.setup("predict")
    if "generation" not in cfg:
        OmegaConf.update(cfg, "generation", {}, force_add=True)
    module, ckpt_path = load_model_for_inference(
        cfg,
        datamodule,
        tokenizer,
        config_prefix="generation",
        move_to_device=str(device),
        set_eval_mode=True,
        enable_hub_support=True,
        checkpoint_fallback_dir=cfg.checkpointing_dir,
        allow_random_init=False,
    )
    exact_fp32_matmul_on_cpu(device)
    if ckpt_path is not None and bool(OmegaConf.select(cfg, "generation.use_ema", default=True)):
        module.apply_checkpoint_ema(ckpt_path)
        logger.info(f"EMA weights of {ckpt_path} applied")
    output_dir = Path(OmegaConf.select(cfg, "generation.output_dir", default=None) or Path(cfg.paths.run_dir) / "generations")
    max_batches = OmegaConf.select(cfg, "generation.max_batches", default=None)
    loaders = datamodule.predict_dataloader()
    loaders = loaders if isinstance(loaders, list) else [loaders]
    if not loaders:
        raise ValueError("the experiment has no predict dataloaders (datamodule.dataset_managers.predict); nothing to generate")
    written = []
    for dl_idx, loader in enumerate(loaders):
        name = datamodule.dataloader_names["predict"][dl_idx]
        rows: List[Dict[str, Any]] = []
        with torch.no_grad():
            for batch_idx, batch in enumerate(loader):
                if max_batches is not None and batch_idx >= int(max_batches):
                    break
                batch = _to_device(batch, device)
                preds = module.predict_step(batch, batch_idx, dl_idx)
                rows.extend(module.predictor.to_dict(batch, preds))
        path = output_dir / f"{name}.jsonl"
        write_jsonl(path, rows)
        logger.info(f"generate_arlm: wrote {len(rows)} rows of {name} generated on {device} to {path}{exact_match_summary(rows)}")
        written.append(path)
    return written
