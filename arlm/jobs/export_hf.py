"""``xlm job_type=export_hf``: write a Hugging Face directory from an xLM ``arlm`` checkpoint.

The export itself is :func:`arlm.hf.export.export_checkpoint_to_hf` (which needs neither xlm-core
nor Hydra); this job reads its arguments from the Hydra config and builds the run's tokenizer::

    xlm job_type=export_hf experiment=star_easy_arlm \
        +export_hf.checkpoint_path=<run>/checkpoints/last.ckpt +export_hf.output_dir=<dir> \
        [+export_hf.architecture=auto|native|arlow] [+export_hf.overwrite=true] [+export_hf.apply_ema=true|false]

``overwrite`` and ``apply_ema`` are booleans (``true``/``false``): :mod:`arlm.runtime.config_checks`
refuses anything else (``no``, ``0``, ...) before the job starts.
"""

import logging
from typing import List

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from arlm.hf.export import describe_architecture, export_checkpoint_to_hf

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
    tokenizer = hydra.utils.instantiate(cfg.global_components)["tokenizer"]
    OmegaConf.clear_resolver("tokenizer")
    OmegaConf.register_new_resolver("tokenizer", lambda name: getattr(tokenizer, name))
    model = export_checkpoint_to_hf(
        options.checkpoint_path,
        options.output_dir,
        tokenizer=tokenizer,
        model_config=OmegaConf.to_container(cfg.model, resolve=True),
        apply_ema=options.get("apply_ema"),
        architecture=options.get("architecture", "auto"),
        overwrite=options.get("overwrite", False),
        protected_dirs=_data_caches(cfg),
    )
    log.info(f"Exported {options.checkpoint_path} to {options.output_dir} as {describe_architecture(model)}")


def _data_caches(cfg: DictConfig) -> List[str]:
    """The configured data cache directories (``paths.data_dir``, ``datamodule.manual_cache_dir``),
    which the export must not be written over or into."""
    found = []
    for key in ("paths.data_dir", "datamodule.manual_cache_dir"):
        try:
            value = OmegaConf.select(cfg, key, default=None)
        except OmegaConfBaseException:  # an interpolation that cannot be resolved names no directory
            value = None
        if isinstance(value, str) and value:
            found.append(value)
    return found
