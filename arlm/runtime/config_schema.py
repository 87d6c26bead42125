"""The keys of the composed config that arlm checks, as one pydantic schema.

Without these checks ``global_batch_size=-16`` trains as if it were 16, ``per_device_batch_size=0``
ends in a ``ZeroDivisionError`` inside a resolver, ``trainer.max_steps=abc`` in a ``TypeError``
inside Lightning, ``+export_hf.overwrite=no`` replaces a directory (the string ``"no"`` is true in
Python), ``seed`` out of numpy's range becomes 0 with a warning, and a checkpoint path that is a
directory is reported by xlm-core as not existing.

:class:`ConfigSchema` and the models under it follow the config's nesting; each field's type says
what its value must be (the kinds below: :data:`PositiveInt`, :data:`Flag`, :data:`CheckpointFile`,
...; ``Optional`` allows null), pydantic checks it (strictly: a string or a bool is no number, a
number is no bool), and the kind's :class:`Says` words the refusal, naming the key, the value and
an example. Only these keys are described: every other key is left alone, and a key the config
lacks (or whose interpolation cannot be resolved yet) is not checked. :func:`schema_problems` is
the validator; :mod:`arlm.runtime.preflight` runs it before every job.
"""

import os
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Dict, List, Literal, Optional, Type, Union, get_args, get_origin

import torch
from omegaconf import DictConfig, OmegaConf
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, ValidationError
from transformers import SchedulerType

from arlm.checkpoints.read import checkpoints_in

UNSET = ("", "none", "null", "???")
UINT32_MAX = 2**32 - 1
_MISSING = object()


def is_unset(value: Any) -> bool:
    """A path the config leaves unset: None, empty, ``none`` / ``null`` (any case), or ``???``."""
    return value is None or str(value).strip().lower() in UNSET


@dataclass(frozen=True)
class Says:
    """How a refusal of a value of this kind reads: ``words(key, value)``."""

    words: Callable[[str, Any], str]


def _must_be(what: str, typed: bool = False) -> Says:
    """``"<key>=<value> [(<type>)] must be <what>"``, ``{key}`` in ``what`` replaced by the key."""
    return Says(lambda key, value: f"{key}={value!r}{f' ({type(value).__name__})' if typed else ''} must be {what.format(key=key)}")


def _integer(least: int, most: Optional[int] = None) -> Any:
    if most is not None:
        what = f"an integer >= {least} and <= {most}, e.g. {{key}}=42"
    else:
        what = ("a positive integer" if least == 1 else f"an integer >= {least}") + ", e.g. {key}=16"
    return Annotated[int, Field(strict=True, ge=least, le=most), _must_be(what, typed=True)]


def _number(positive: bool, example: str = "") -> Any:
    bound = {"gt": 0} if positive else {"ge": 0}
    what = f"a positive finite number, e.g. {{key}}={example}" if positive else "a finite number >= 0 (or null)"
    return Annotated[float, Field(strict=True, allow_inf_nan=False, **bound), _must_be(what)]


def _fraction(one_allowed: bool, example: str) -> Any:
    top = {"le": 1} if one_allowed else {"lt": 1}
    interval = "(0, 1]" if one_allowed else "(0, 1)"
    return Annotated[float, Field(strict=True, gt=0, **top), _must_be(f"a number in {interval}, e.g. {{key}}={example}")]


def _one_of(choices: tuple) -> Any:
    return Annotated[Literal[choices], _must_be(f"one of {list(choices)}")]


def _checked_by(problem: Callable[[str, Any], Optional[str]]) -> Any:
    """A value ``problem(key, value)`` finds nothing wrong with; its answer is the refusal."""

    def check(value: Any) -> Any:
        if problem("", value) is not None:
            raise ValueError("refused")
        return value

    return Annotated[Any, AfterValidator(check), Says(lambda key, value: problem(key, value))]


def device_problem(key: str, value: Any) -> Optional[str]:
    """Why ``value`` is not ``auto``, ``cpu``, ``cuda`` or ``cuda:<index>`` of a device this machine has."""
    name = str(value)
    if name in ("auto", "cpu"):
        return None
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        return f"{key}={value!r} is not a device name arlm generates on; use {key}=auto, cpu, cuda or cuda:<index>"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return f"{key}={value!r} but CUDA is not available here; use {key}=cpu (or auto)"
    if index and int(index) >= count:
        return f"{key}={value!r} but this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; use {key}=cuda:0 (or auto)"
    return None


def _checkpoint_file_problem(key: str, value: Any) -> Optional[str]:
    """A checkpoint path that is a directory (xlm-core would say it does not exist); a sharded
    checkpoint directory (``*.distcp`` files) is one. A missing path is left to the jobs."""
    path = str(value)
    if is_unset(value) or not os.path.isdir(path) or any(name.endswith(".distcp") for name in os.listdir(path)):
        return None
    ckpts = [entry.name for entry in checkpoints_in(path)]
    pick = "last.ckpt" if "last.ckpt" in ckpts else (ckpts[0] if ckpts else "")
    hint = f"; it holds {ckpts[:4]}, e.g. pass {os.path.join(path, pick)}" if ckpts else ""
    return f"{key}={value} is a directory, not a checkpoint file{hint}"


def _prepared_data_dir_problem(key: str, value: Any) -> Optional[str]:
    if isinstance(value, str) and os.path.exists(value) and not os.path.isdir(value):
        return f"the prepared-data directory (DATA_DIR / {key}) {value} is a file, not a directory"
    return None


def _job_name_problem(key: str, value: Any) -> Optional[str]:
    if isinstance(value, str) and value.strip() and "/" not in value and value not in (".", ".."):
        return None
    return f"{key}={value!r} must be a non-empty name without '/' (it names logs/<job_name>/)"


PositiveInt = _integer(1)
NonNegativeInt = _integer(0)
PositiveNumber = _number(positive=True, example="0.001")
NonNegativeNumber = _number(positive=False)
Flag = Annotated[StrictBool, Says(lambda key, value: (
    f"{key}={value!r} must be true or false, got {type(value).__name__} {value!r}; strings ('no', 'off', '0') "
    f"and numbers (0, 1) are not read as booleans. Fix: {key}=true or {key}=false"
))]
CheckpointFile = _checked_by(_checkpoint_file_problem)
PreparedDataDir = _checked_by(_prepared_data_dir_problem)
Device = _checked_by(device_problem)
JobName = _checked_by(_job_name_problem)
EvalSplit = _one_of(("validation", "test"))
SchedulerName = _one_of(tuple(kind.value for kind in SchedulerType))
"""A name ``transformers.get_scheduler`` knows (xlm-core's ``lr_scheduler.name``)."""
ValCheckInterval = Annotated[
    Union[Annotated[int, Field(strict=True, ge=1)], Annotated[float, Field(strict=True, gt=0, le=1)]],
    _must_be("a positive integer (validate every that many training steps) or a fraction in (0, 1] of an epoch"),
]
Seed = _integer(0, UINT32_MAX)
StarSeed = _integer(0, UINT32_MAX - 2)
EmaDecay = _fraction(one_allowed=False, example="0.999")
TopP = _fraction(one_allowed=True, example="0.9")
Temperature = _number(positive=True, example="1.0")


class Keys(BaseModel):
    """A level of the config: its other keys are ignored; every key is optional."""

    model_config = ConfigDict(extra="ignore")


class TrainerKeys(Keys):
    max_steps: Optional[PositiveInt] = None
    num_nodes: Optional[PositiveInt] = None
    log_every_n_steps: Optional[PositiveInt] = None
    num_sanity_val_steps: Optional[NonNegativeInt] = None
    accumulate_grad_batches: Optional[PositiveInt] = None
    gradient_clip_val: Optional[NonNegativeNumber] = None
    val_check_interval: Optional[ValCheckInterval] = None


class OptimizerKeys(Keys):
    lr: Optional[PositiveNumber] = None
    weight_decay: Optional[NonNegativeNumber] = None


class LrSchedulerKeys(Keys):
    name: Optional[SchedulerName] = None
    num_warmup_steps: Optional[NonNegativeInt] = None


class PeriodicCheckpointKeys(Keys):
    every_n_train_steps: Optional[PositiveInt] = None


class EmaKeys(Keys):
    decay: Optional[EmaDecay] = None
    use_num_updates: Optional[Flag] = None
    apply_ema_at_train_end: Optional[Flag] = None


class CallbackKeys(Keys):
    checkpoint_every_n_steps: PeriodicCheckpointKeys = PeriodicCheckpointKeys()
    ema: EmaKeys = EmaKeys()


class DatamoduleKeys(Keys):
    manual_cache_dir: Optional[PreparedDataDir] = None
    rewrite_manual_cache: Optional[Flag] = None


class ModelKeys(Keys):
    force_flash_attn: Optional[Flag] = None
    final_layer_without_normalization: Optional[Flag] = None


class PredictorKeys(Keys):
    max_steps: Optional[PositiveInt] = None
    max_length: Optional[_integer(2)] = None
    top: Optional[PositiveInt] = None
    p: Optional[TopP] = None
    temperature: Optional[Temperature] = None


class StarSplitSizeKeys(Keys):
    """STAR experiments: rows per split (numpy seeds the generator with ``star_seed + split index``)."""

    train: Optional[PositiveInt] = None
    validation: Optional[PositiveInt] = None
    test: Optional[PositiveInt] = None


class EvalKeys(Keys):
    split: Optional[EvalSplit] = None
    ckpt_path: Optional[CheckpointFile] = None
    checkpoint_path: Optional[CheckpointFile] = None
    model_only_checkpoint_path: Optional[CheckpointFile] = None


class GenerationKeys(Keys):
    """``job_type=generate_arlm``."""

    max_batches: Optional[PositiveInt] = None
    device: Optional[Device] = None
    use_ema: Optional[Flag] = None
    ckpt_path: Optional[CheckpointFile] = None
    checkpoint_path: Optional[CheckpointFile] = None
    model_only_checkpoint_path: Optional[CheckpointFile] = None


class ExportHfKeys(Keys):
    """``job_type=export_hf`` (``apply_ema`` null: use the EMA weights when the checkpoint has them)."""

    overwrite: Optional[Flag] = None
    apply_ema: Optional[Flag] = None


class PostTrainingKeys(Keys):
    """xlm-core's ``job_type=extract_checkpoint``."""

    apply_ema: Optional[Flag] = None


class ConfigSchema(Keys):
    """The keys of a composed arlm config that :func:`schema_problems` checks (``job_name`` may
    not be null)."""

    job_name: JobName = None
    seed: Optional[Seed] = None
    star_seed: Optional[StarSeed] = None
    star_split_sizes: StarSplitSizeKeys = StarSplitSizeKeys()
    global_batch_size: Optional[PositiveInt] = None
    per_device_batch_size: Optional[PositiveInt] = None
    per_device_val_batch_size: Optional[PositiveInt] = None
    block_size: Optional[PositiveInt] = None
    input_block_size: Optional[NonNegativeInt] = None
    num_dataloader_workers: Optional[NonNegativeInt] = None
    dataloader_prefetch_factor: Optional[PositiveInt] = None
    dataloader_pin_memory: Optional[Flag] = None
    dataloader_persistent_workers: Optional[Flag] = None
    compile: Optional[Flag] = None
    resume_from_checkpoint: Optional[Flag] = None
    resume_checkpoint_path: Optional[CheckpointFile] = None
    model_only_checkpoint_path: Optional[CheckpointFile] = None
    strict_model_only_load: Optional[Flag] = None
    skip_init_weights: Optional[Flag] = None
    trainer: TrainerKeys = TrainerKeys()
    optimizer: OptimizerKeys = OptimizerKeys()
    lr_scheduler: LrSchedulerKeys = LrSchedulerKeys()
    callbacks: CallbackKeys = CallbackKeys()
    datamodule: DatamoduleKeys = DatamoduleKeys()
    model: ModelKeys = ModelKeys()
    predictor: PredictorKeys = PredictorKeys()
    eval: EvalKeys = EvalKeys()
    generation: GenerationKeys = GenerationKeys()
    export_hf: ExportHfKeys = ExportHfKeys()
    post_training: PostTrainingKeys = PostTrainingKeys()


def select(cfg: DictConfig, key: str, default: Any = None) -> Any:
    """``cfg``'s value at the dotted ``key``; ``default`` when it is absent or cannot be resolved yet."""
    try:
        return OmegaConf.select(cfg, key, default=default, throw_on_missing=False)
    except Exception:  # an interpolation whose resolver or target is not there yet
        return default


def _described_values(cfg: DictConfig, schema: Type[Keys], prefix: str = "") -> Dict[str, Any]:
    """The values of ``cfg`` at the keys ``schema`` describes, nested as it nests them."""
    values: Dict[str, Any] = {}
    for name, field in schema.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Keys):
            values[name] = _described_values(cfg, field.annotation, f"{prefix}{name}.")
        else:
            value = select(cfg, prefix + name, default=_MISSING)
            if value is not _MISSING:
                values[name] = value
    return values


def _says(metadata: List[Any], annotation: Any) -> Says:
    """The :class:`Says` of a field: in its metadata (a kind used as it is), or in its annotation
    (a kind inside ``Optional``)."""
    for item in metadata:
        if isinstance(item, Says):
            return item
    for argument in get_args(annotation):
        if get_origin(argument) is Annotated:
            return _says(list(argument.__metadata__), None)
    raise LookupError(f"no refusal wording in {annotation}")


def schema_problems(cfg: DictConfig) -> List[str]:
    """Every value of ``cfg`` that breaks :class:`ConfigSchema`, in the schema's order, one message each."""
    values = _described_values(cfg, ConfigSchema)
    try:
        ConfigSchema.model_validate(values)
    except ValidationError as error:
        problems = []
        for detail in error.errors():
            schema, node, path = ConfigSchema, values, []
            for part in detail["loc"]:
                path.append(str(part))
                field = schema.model_fields[part]
                if not (isinstance(field.annotation, type) and issubclass(field.annotation, Keys)):
                    break
                schema, node = field.annotation, node[part]
            problem = _says(field.metadata, field.annotation).words(".".join(path), node[part])
            if problem not in problems:
                problems.append(problem)
        return problems
    return []
