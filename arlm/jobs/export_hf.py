"""``xlm job_type=export_hf``: write a Hugging Face directory from an xLM ``arlm`` checkpoint.

The export itself is :func:`arlm.export.exporter.export_checkpoint_to_hf` (which needs neither
xlm-core nor Hydra); this job reads its arguments from the Hydra config and builds the run's tokenizer::

    xlm job_type=export_hf experiment=star_easy_arlm \
        +export_hf.checkpoint_path=<run>/checkpoints/last.ckpt +export_hf.output_dir=<dir> \
        [+export_hf.architecture=auto|native|arlow] [+export_hf.overwrite=true] [+export_hf.apply_ema=true|false]

``overwrite`` and ``apply_ema`` are booleans (``true``/``false``): :mod:`arlm.runtime.preflight`
refuses anything else (``no``, ``0``, ...) before the job starts.
"""

import logging

from omegaconf import DictConfig, OmegaConf

from arlm.export.exporter import describe_architecture, export_checkpoint_to_hf
from arlm.export.paths import data_cache_dirs
from arlm.jobs.run_components import run_components

log = logging.getLogger(__name__)


def export_hf_job(cfg: DictConfig) -> None:
    """xLM custom job ``export_hf``: ``cfg.export_hf.{checkpoint_path, output_dir[, apply_ema,
    architecture, overwrite]}``; the tokenizer is ``cfg.global_components.tokenizer`` and, for
    model-only weights, the network is ``cfg.model``."""
    options = cfg.get("export_hf")
    if options is None or options.get("checkpoint_path") is None or options.get("output_dir") is None:
        raise ValueError(
            "export_hf needs +export_hf.checkpoint_path=<.ckpt or weights> and "
            "+export_hf.output_dir=<directory> (optional: +export_hf.architecture=auto|native|arlow, "
            "+export_hf.overwrite=true, +export_hf.apply_ema=true|false)"
        )
    tokenizer, _ = run_components(cfg, with_datamodule=False)
    model = export_checkpoint_to_hf(
        options.checkpoint_path,
        options.output_dir,
        tokenizer=tokenizer,
        model_config=OmegaConf.to_container(cfg.model, resolve=True),
        apply_ema=options.get("apply_ema"),
        architecture=options.get("architecture", "auto"),
        overwrite=options.get("overwrite", False),
        protected_dirs=data_cache_dirs(cfg),
    )
    log.info(f"Exported {options.checkpoint_path} to {options.output_dir} as {describe_architecture(model)}")
