"""Checks of the composed config that run before a job starts, each naming the key and the value.

Without them ``global_batch_size=-16`` trains as if it were 16, ``per_device_batch_size=0`` ends
in a ``ZeroDivisionError`` inside a resolver, ``trainer.max_steps=abc`` in a ``TypeError`` inside
Lightning, ``+generation.max_batches=-1`` writes an empty file, ``+export_hf.overwrite=no``
replaces a directory (the string ``"no"`` is true in Python), and a checkpoint path that is a
directory is reported by xlm-core as not existing.

The keys checked are stated once, as a typed schema: :class:`ConfigSchema` and the dataclasses
under it follow the config's nesting, and each field's type says what its value must be
(the kinds of :mod:`arlm.runtime.config_kinds`: :data:`PositiveInt`, :data:`Flag`,
:data:`CheckpointFile`, ...; ``Optional`` allows null). Keys arlm passes on to xlm-core and
Lightning are here too: ``seed`` out of numpy's range became 0 with a warning, ``callbacks.ema.decay=1.5``
failed inside ``torch_ema``, ``star_seed=abc`` inside ``int()``. Only
these keys are described: every other key of xlm-core's config is left alone, and a key the
config lacks (or whose interpolation cannot be resolved yet) is not checked.
:func:`config_problems` is the validator; :class:`ConfigCheckCallback` (a Hydra callback,
registered by ``model_type/arlm``) runs :func:`check_config` before every job.
"""

import os
from dataclasses import dataclass, fields, is_dataclass
from typing import Annotated, Any, Iterator, List, Optional, Tuple, Union, get_args, get_origin, get_type_hints

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from arlm.runtime.config_kinds import (
    CheckpointFile,
    Device,
    EmaDecay,
    EvalSplit,
    Flag,
    Integer,
    JobName,
    NonNegativeInt,
    NonNegativeNumber,
    PositiveInt,
    PositiveNumber,
    PreparedDataDir,
    SchedulerName,
    Seed,
    StarSeed,
    Temperature,
    TopP,
    ValCheckInterval,
)
from arlm.runtime.config_sizes import length_problems, memory_problems
from arlm.runtime.directory_checks import directory_problems
from arlm.runtime.resume import fresh_start_problem

MISSING = object()


class ConfigValueError(ValueError):
    """A config key holds a value of the wrong kind or range."""


# --- The schema: the keys arlm checks, nested as in the composed config ---


@dataclass
class TrainerKeys:
    max_steps: Optional[PositiveInt]
    num_nodes: Optional[PositiveInt]
    log_every_n_steps: Optional[PositiveInt]
    num_sanity_val_steps: Optional[NonNegativeInt]
    accumulate_grad_batches: Optional[PositiveInt]
    gradient_clip_val: Optional[NonNegativeNumber]
    val_check_interval: Optional[ValCheckInterval]


@dataclass
class OptimizerKeys:
    lr: Optional[PositiveNumber]
    weight_decay: Optional[NonNegativeNumber]


@dataclass
class LrSchedulerKeys:
    name: Optional[SchedulerName]
    num_warmup_steps: Optional[NonNegativeInt]


@dataclass
class PeriodicCheckpointKeys:
    every_n_train_steps: Optional[PositiveInt]


@dataclass
class EmaKeys:
    decay: Optional[EmaDecay]
    use_num_updates: Optional[Flag]
    apply_ema_at_train_end: Optional[Flag]


@dataclass
class CallbackKeys:
    checkpoint_every_n_steps: PeriodicCheckpointKeys
    ema: EmaKeys


@dataclass
class DatamoduleKeys:
    manual_cache_dir: Optional[PreparedDataDir]
    rewrite_manual_cache: Optional[Flag]


@dataclass
class ModelKeys:
    force_flash_attn: Optional[Flag]
    final_layer_without_normalization: Optional[Flag]


@dataclass
class PredictorKeys:
    max_steps: Optional[PositiveInt]
    max_length: Optional[Annotated[int, Integer(minimum=2)]]
    top: Optional[PositiveInt]
    p: Optional[TopP]
    temperature: Optional[Temperature]


@dataclass
class StarSplitSizeKeys:
    """STAR experiments: rows per split (numpy seeds the generator with ``star_seed + split index``)."""

    train: Optional[PositiveInt]
    validation: Optional[PositiveInt]
    test: Optional[PositiveInt]


@dataclass
class EvalKeys:
    split: Optional[EvalSplit]
    ckpt_path: Optional[CheckpointFile]
    checkpoint_path: Optional[CheckpointFile]
    model_only_checkpoint_path: Optional[CheckpointFile]


@dataclass
class GenerationKeys:
    """``job_type=generate_arlm``."""

    max_batches: Optional[PositiveInt]
    device: Optional[Device]
    use_ema: Optional[Flag]
    ckpt_path: Optional[CheckpointFile]
    checkpoint_path: Optional[CheckpointFile]
    model_only_checkpoint_path: Optional[CheckpointFile]


@dataclass
class ExportHfKeys:
    """``job_type=export_hf`` (``apply_ema`` null: use the EMA weights when the checkpoint has them)."""

    overwrite: Optional[Flag]
    apply_ema: Optional[Flag]


@dataclass
class PostTrainingKeys:
    """xlm-core's ``job_type=extract_checkpoint``."""

    apply_ema: Optional[Flag]


@dataclass
class ConfigSchema:
    """The keys of a composed arlm config that :func:`config_problems` checks."""

    job_name: JobName
    seed: Optional[Seed]
    star_seed: Optional[StarSeed]
    star_split_sizes: StarSplitSizeKeys
    global_batch_size: Optional[PositiveInt]
    per_device_batch_size: Optional[PositiveInt]
    per_device_val_batch_size: Optional[PositiveInt]
    block_size: Optional[PositiveInt]
    input_block_size: Optional[NonNegativeInt]
    num_dataloader_workers: Optional[NonNegativeInt]
    dataloader_prefetch_factor: Optional[PositiveInt]
    dataloader_pin_memory: Optional[Flag]
    dataloader_persistent_workers: Optional[Flag]
    compile: Optional[Flag]
    resume_from_checkpoint: Optional[Flag]
    resume_checkpoint_path: Optional[CheckpointFile]
    model_only_checkpoint_path: Optional[CheckpointFile]
    strict_model_only_load: Optional[Flag]
    skip_init_weights: Optional[Flag]
    trainer: TrainerKeys
    optimizer: OptimizerKeys
    lr_scheduler: LrSchedulerKeys
    callbacks: CallbackKeys
    datamodule: DatamoduleKeys
    model: ModelKeys
    predictor: PredictorKeys
    eval: EvalKeys
    generation: GenerationKeys
    export_hf: ExportHfKeys
    post_training: PostTrainingKeys


# --- The validator ---


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=MISSING, throw_on_missing=False)
    except Exception:
        return MISSING


def _kind_of(hint: Any) -> Tuple[bool, Any]:
    """``(null allowed, value kind)`` of a leaf annotation ``[Optional[]Annotated[T, kind]]``."""
    nullable = get_origin(hint) is Union and type(None) in get_args(hint)
    if nullable:
        (hint,) = [arg for arg in get_args(hint) if arg is not type(None)]
    return nullable, hint.__metadata__[0]


def _schema_problems(cfg: DictConfig, schema: type, prefix: str) -> Iterator[str]:
    hints = get_type_hints(schema, include_extras=True)
    for field in fields(schema):
        key, hint = prefix + field.name, hints[field.name]
        if is_dataclass(hint):
            yield from _schema_problems(cfg, hint, f"{key}.")
            continue
        value = _select(cfg, key)
        nullable, kind = _kind_of(hint)
        if value is MISSING or (value is None and nullable):
            continue
        problem = kind.problem(key, value)
        if problem is not None:
            yield problem


def config_problems(cfg: DictConfig) -> List[str]:
    """Every value of ``cfg`` that breaks :class:`ConfigSchema`, in the schema's order, one message
    each; when they are valid, the sizes that cannot work (:mod:`arlm.runtime.config_sizes`)."""
    problems = list(_schema_problems(cfg, ConfigSchema, ""))
    return problems if problems else length_problems(cfg) + memory_problems(cfg)


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigValueError` listing every value of ``cfg`` that breaks :class:`ConfigSchema`."""
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
    """Hydra callback: :func:`arlm.runtime.directory_checks.directory_problems` before Hydra makes
    the run directory (``on_run_start`` / ``on_multirun_start``); :func:`check_config` and
    :func:`arlm.runtime.resume.fresh_start_problem` before every job."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_unusable_directories(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_unusable_directories(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_config(config)
        except ConfigValueError as error:
            raise ConfigRefused(f"{type(error).__name__}: {error}") from None
        checkpoints = _select(config, "checkpointing_dir")
        problem = fresh_start_problem(
            _select(config, "job_type"), _select(config, "resume_from_checkpoint"),
            None if checkpoints is MISSING else checkpoints,
        )
        if problem is not None:
            raise ConfigRefused(f"CheckpointsWouldBeOverwritten: {problem}")


def _refuse_unusable_directories(config: DictConfig) -> None:
    problems = directory_problems(config)
    if problems:
        raise ConfigRefused("DirectoryError: " + "; ".join(problems))
