"""``xlm job_type=export_hf``: write a Hugging Face directory from an xLM ``arlm`` checkpoint.

The export itself is :func:`arlm.export.exporter.export_checkpoint_to_hf` (which needs neither
xlm-core nor Hydra); this job reads its arguments from the Hydra config and builds the run's tokenizer::

    xlm job_type=export_hf experiment=star_easy_arlm \
        +export_hf.checkpoint_path=<run>/checkpoints/last.ckpt +export_hf.output_dir=<dir> \
        [+export_hf.architecture=auto|native|arlow] [+export_hf.overwrite=true] [+export_hf.apply_ema=true|false]
        [+export_hf.format=hf|gguf] [+export_hf.gguf_dtype=f32|f16|q8_0]

``format=hf`` (default) writes the Hugging Face directory; ``format=gguf`` a directory holding one
GGUF file for llama.cpp (:func:`arlm.export.gguf_export.export_checkpoint_to_gguf`), as
``gguf_dtype`` (default ``f32``). ``overwrite`` and ``apply_ema`` are booleans (``true``/``false``),
``format`` and ``gguf_dtype`` one of their choices: :mod:`arlm.runtime.preflight` refuses anything
else (``no``, ``0``, ...) before the job starts.
"""

import logging

from omegaconf import DictConfig, OmegaConf

from arlm.export.exporter import describe_architecture, export_checkpoint_to_hf
from arlm.export.gguf_export import export_checkpoint_to_gguf
from arlm.export.paths import data_cache_dirs
from arlm.jobs.run_components import run_components

log = logging.getLogger(__name__)
EXPORT_FORMATS = ("hf", "gguf")
"""``export_hf.format`` (checked before the job by :mod:`arlm.runtime.config_schema`)."""


def export_hf_job(cfg: DictConfig) -> None:
    """xLM custom job ``export_hf``: ``cfg.export_hf.{checkpoint_path, output_dir[, apply_ema,
    architecture, overwrite, format, gguf_dtype]}``; the tokenizer is
    ``cfg.global_components.tokenizer`` and, for model-only weights, the network is ``cfg.model``."""
    options = cfg.get("export_hf")
    if options is None or options.get("checkpoint_path") is None or options.get("output_dir") is None:
        raise ValueError(
            "export_hf needs +export_hf.checkpoint_path=<.ckpt or weights> and "
            "+export_hf.output_dir=<directory> (optional: +export_hf.architecture=auto|native|arlow, "
            "+export_hf.overwrite=true, +export_hf.apply_ema=true|false, +export_hf.format=hf|gguf, "
            "+export_hf.gguf_dtype=f32|f16|q8_0)"
        )
    export_format = _format_of(options)
    tokenizer, _ = run_components(cfg, with_datamodule=False)
    shared = dict(
        tokenizer=tokenizer,
        model_config=OmegaConf.to_container(cfg.model, resolve=True),
        apply_ema=options.get("apply_ema"),
        overwrite=options.get("overwrite", False),
        protected_dirs=data_cache_dirs(cfg),
    )
    if export_format == "gguf":
        dtype = options.get("gguf_dtype", "f32")
        path = export_checkpoint_to_gguf(options.checkpoint_path, options.output_dir, dtype=dtype, **shared)
        log.info(f"Exported {options.checkpoint_path} to {path} (GGUF, llama.cpp's llama architecture)")
        return
    architecture = options.get("architecture", "auto")
    model = export_checkpoint_to_hf(options.checkpoint_path, options.output_dir, architecture=architecture, **shared)
    log.info(f"Exported {options.checkpoint_path} to {options.output_dir} as {describe_architecture(model)}")


def _format_of(options: DictConfig) -> str:
    """``options.format``, refusing keys that belong to the other format."""
    export_format = options.get("format", "hf")
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"export_hf.format={export_format!r} must be one of {list(EXPORT_FORMATS)}")
    if export_format == "gguf" and options.get("architecture", "auto") not in ("auto", "native"):
        raise ValueError(
            f"export_hf.architecture={options.architecture!r} is for format=hf; format=gguf always writes "
            "llama.cpp's llama architecture"
        )
    if export_format == "hf" and options.get("gguf_dtype") is not None:
        raise ValueError("export_hf.gguf_dtype is for format=gguf; add +export_hf.format=gguf")
    return export_format

