"""Checks of the composed config that run before a job starts, each naming the key and the value.

Without them ``global_batch_size=-16`` trains as if it were 16, ``per_device_batch_size=0`` ends
in a ``ZeroDivisionError`` inside a resolver, ``trainer.max_steps=abc`` in a ``TypeError`` inside
Lightning, ``+generation.max_batches=-1`` writes an empty file, and a checkpoint path that is a
directory is reported by xlm-core as not existing. :class:`ConfigCheckCallback`
(a Hydra callback, registered by ``model_type/arlm``) runs :func:`check_config` before the job.
"""

import os
from typing import Any, List, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from arlm.network.value_checks import is_finite_number, is_int

POSITIVE_INT_KEYS = (
    "global_batch_size", "per_device_batch_size", "per_device_val_batch_size", "block_size",
    "trainer.max_steps", "trainer.num_nodes", "trainer.log_every_n_steps", "generation.max_batches",
    "callbacks.checkpoint_every_n_steps.every_n_train_steps",
)
NON_NEGATIVE_INT_KEYS = (
    "num_dataloader_workers", "trainer.num_sanity_val_steps", "lr_scheduler.num_warmup_steps",
    "input_block_size", "seed",
)
NON_NEGATIVE_NUMBER_KEYS = ("trainer.gradient_clip_val", "optimizer.weight_decay")
BOOL_KEYS = ("generation.use_ema", "resume_from_checkpoint", "compile")
EVAL_SPLITS = ("validation", "test")
CHECKPOINT_KEYS = (
    "eval.ckpt_path", "eval.checkpoint_path", "eval.model_only_checkpoint_path",
    "generation.ckpt_path", "generation.checkpoint_path", "generation.model_only_checkpoint_path",
    "resume_checkpoint_path", "model_only_checkpoint_path",
)
MISSING = object()


class ConfigValueError(ValueError):
    """A config key holds a value of the wrong kind or range."""


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=MISSING, throw_on_missing=False)
    except Exception:
        return MISSING


def check_positive_int(value: Any, key: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer >= ``minimum``; else raise :class:`ConfigValueError`."""
    if not is_int(value) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigValueError(f"{key}={value!r} ({type(value).__name__}) must be {kind}, e.g. {key}=16")
    return value


def _check_val_check_interval(value: Any) -> Optional[str]:
    if is_int(value) and value > 0:
        return None
    if isinstance(value, float) and 0.0 < value <= 1.0:
        return None
    return (
        f"trainer.val_check_interval={value!r} must be a positive integer (validate every that many "
        f"training steps) or a fraction in (0, 1] of an epoch"
    )


def _checkpoint_path_problem(path: str) -> Optional[str]:
    """A directory given as a checkpoint file (xlm-core would say it does not exist); a missing
    path is left to the jobs, whose messages name the fix."""
    if os.path.isdir(path) and not any(name.endswith(".distcp") for name in os.listdir(path)):
        ckpts = sorted(name for name in os.listdir(path) if name.endswith(".ckpt"))
        pick = "last.ckpt" if "last.ckpt" in ckpts else (ckpts[0] if ckpts else "")
        hint = f"; it holds {ckpts[:4]}, e.g. pass {os.path.join(path, pick)}" if ckpts else ""
        return f"is a directory, not a checkpoint file{hint}"
    return None


def config_problems(cfg: DictConfig) -> List[str]:
    """Every problem :func:`check_config` would raise for, in key order."""
    problems = []
    for key in POSITIVE_INT_KEYS:
        value = _select(cfg, key)
        if value is MISSING or value is None:
            continue
        try:
            check_positive_int(value, key)
        except ConfigValueError as error:
            problems.append(str(error))
    for key in NON_NEGATIVE_INT_KEYS:
        value = _select(cfg, key)
        if value is not MISSING and value is not None:
            try:
                check_positive_int(value, key, minimum=0)
            except ConfigValueError as error:
                problems.append(str(error))
    for key in NON_NEGATIVE_NUMBER_KEYS:
        value = _select(cfg, key)
        if value is MISSING or value is None:
            continue
        if not is_finite_number(value) or value < 0:
            problems.append(f"{key}={value!r} must be a finite number >= 0 (or null)")
    data_dir = _select(cfg, "datamodule.manual_cache_dir")
    if isinstance(data_dir, str) and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        problems.append(f"the prepared-data directory (DATA_DIR / datamodule.manual_cache_dir) {data_dir} is a file, not a directory")
    interval = _select(cfg, "trainer.val_check_interval")
    if interval is not MISSING and interval is not None and _check_val_check_interval(interval):
        problems.append(_check_val_check_interval(interval))
    for key in CHECKPOINT_KEYS:
        value = _select(cfg, key)
        if value is MISSING or value is None or str(value).lower() in ("", "none", "null"):
            continue
        problem = _checkpoint_path_problem(str(value))
        if problem:
            problems.append(f"{key}={value} {problem}")
    for key in BOOL_KEYS:
        value = _select(cfg, key)
        if value is not MISSING and value is not None and not isinstance(value, bool):
            problems.append(f"{key}={value!r} must be true or false")
    job_name = _select(cfg, "job_name")
    if job_name is not MISSING and (not isinstance(job_name, str) or not job_name.strip() or "/" in job_name or job_name in (".", "..")):
        problems.append(f"job_name={job_name!r} must be a non-empty name without '/' (it names logs/<job_name>/)")
    split = _select(cfg, "eval.split")
    if split is not MISSING and split is not None and split not in EVAL_SPLITS:
        problems.append(f"eval.split={split!r} must be one of {list(EVAL_SPLITS)}")
    lr = _select(cfg, "optimizer.lr")
    if lr is not MISSING and lr is not None and (not is_finite_number(lr) or lr <= 0):
        problems.append(f"optimizer.lr={lr!r} must be a positive finite number, e.g. optimizer.lr=0.001")
    return problems


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigValueError` listing every bad value of :data:`POSITIVE_INT_KEYS` and co."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigValueError("Invalid configuration: " + "; ".join(problems))


def check_output_dir(path: Any, key: str = "generation.output_dir") -> None:
    """Raise :class:`ConfigValueError` if ``path`` exists and is not a directory (checked before work)."""
    if path is None:
        return
    if os.path.exists(str(path)) and not os.path.isdir(str(path)):
        raise ConfigValueError(f"{key}={path} is an existing file, not a directory. Fix: pass a directory path (new or existing)")
    ancestor = os.path.dirname(os.path.abspath(str(path)))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ConfigValueError(f"{key}={path} cannot be created: {ancestor} is a file. Fix: pass a directory path")


class ConfigRefused(SystemExit):
    """Exit status 1 with the problems. Hydra turns an ``Exception`` raised by a callback into a
    warning and goes on, so the refusal must be a ``SystemExit``."""


class ConfigCheckCallback(Callback):
    """Hydra callback: :func:`check_config` before every job."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_config(config)
        except ConfigValueError as error:
            raise ConfigRefused(f"{type(error).__name__}: {error}") from None
