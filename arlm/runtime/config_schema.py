"""The keys of the composed config that arlm checks, and the kind of value each must hold (pydantic).

Without these checks ``global_batch_size=-16`` trains as if it were 16, ``per_device_batch_size=0``
ends in a ``ZeroDivisionError`` inside a resolver, ``trainer.max_steps=abc`` in a ``TypeError``
inside Lightning, ``+export_hf.overwrite=no`` replaces a directory (the string ``"no"`` is true in
Python), ``seed`` out of numpy's range becomes 0 with a warning, and a checkpoint path that is a
directory is reported by xlm-core as not existing.

:data:`CHECKED_KEYS` names each checked key and the kind its value must be (the kinds below:
:data:`PositiveInt`, :data:`Flag`, :data:`CheckpointFile`, ...): a type pydantic checks (strictly:
a string or a bool is no number, a number is no bool) and a :class:`Says` that words the refusal,
naming the key, the value and an example. Only these keys are checked: every other key is left
alone, and a key the config lacks (or whose interpolation cannot be resolved yet) is not checked.
:func:`schema_problems` is the validator; :mod:`arlm.runtime.preflight` runs it before every job.
"""

import os
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Dict, List, Literal, Optional, Union

import torch
from omegaconf import DictConfig, OmegaConf
from pydantic import AfterValidator, Field, StrictBool, TypeAdapter, ValidationError
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
    checkpoint directory (``*.distcp`` files) is one, for resuming. A missing path is left to the jobs."""
    path = str(value)
    if is_unset(value) or not os.path.isdir(path) or _is_sharded(path):
        return None
    ckpts = [entry.name for entry in checkpoints_in(path)]
    pick = "last.ckpt" if "last.ckpt" in ckpts else (ckpts[0] if ckpts else "")
    hint = f"; it holds {ckpts[:4]}, e.g. pass {os.path.join(path, pick)}" if ckpts else ""
    return f"{key}={value} is a directory, not a checkpoint file{hint}"


def _loaded_file_problem(key: str, value: Any) -> Optional[str]:
    """:func:`_checkpoint_file_problem`, and a sharded checkpoint directory too: xlm-core's eval
    and generation loaders take files only (docs/distributed.md, "Checkpoints")."""
    path = str(value)
    if is_unset(value) or not os.path.isdir(path) or not _is_sharded(path):
        return _checkpoint_file_problem(key, value)
    if "model_only" in key:
        fix = f"consolidate it into one file (python -m arlm.runtime.consolidate {path} weights.ckpt) and pass that"
    else:
        fix = f"pass {os.path.join(path, 'meta.pt')}, which names the whole directory"
    return f"{key}={value} is a sharded checkpoint directory, and this job loads a file. Fix: {fix}"


def _is_sharded(path: str) -> bool:
    return any(name.endswith(".distcp") for name in os.listdir(path))


def _prepared_data_dir_problem(key: str, value: Any) -> Optional[str]:
    if isinstance(value, str) and os.path.exists(value) and not os.path.isdir(value):
        return f"the prepared-data directory (DATA_DIR / {key}) {value} is a file, not a directory"
    return None


NAME_MAX = 255
"""The longest file name (in bytes) of common filesystems: ``logs/<job_name>/`` must be one."""


def job_name_problem(key: str, value: Any) -> Optional[str]:
    """Why ``value`` cannot be a ``job_name`` (it names ``logs/<job_name>/`` and heads a model
    card), or None: empty, ``.``/``..``, a ``/``, a control character (a newline...), a ``${``
    left by an escaped interpolation, longer than :data:`NAME_MAX` bytes (a sweep's job names
    include the swept values)."""
    if isinstance(value, str) and len(value.encode("utf-8", "surrogateescape")) > NAME_MAX:
        return (
            f"{key}={value[:40]!r}... is {len(value.encode('utf-8', 'surrogateescape'))} bytes long, more than "
            f"the {NAME_MAX} a directory name may have (it names logs/<job_name>/; under xlm -m it ends with "
            f"the swept values). Fix: a shorter job_name=..., or fewer swept keys in the job names "
            f"(hydra.job.config.override_dirname.exclude_keys=[...])"
        )
    if (
        isinstance(value, str) and value.strip() and "/" not in value and value not in (".", "..")
        and not any(ord(c) < 32 or ord(c) == 127 for c in value)
    ):
        if "${" in value:
            return (
                f"{key}={value!r} holds '${{', which Hydra's own settings (logs/<job_name>/runs/..., job.log) would "
                f"read again as an interpolation. Fix: a job_name without '${{' (an escaped \\${{...}} included)"
            )
        return None
    return (
        f"{key}={value!r} must be a non-empty name without '/' or control characters such as a "
        f"newline (it names logs/<job_name>/)"
    )


PositiveInt = _integer(1)
NonNegativeInt = _integer(0)
PositiveNumber = _number(positive=True, example="0.001")
NonNegativeNumber = _number(positive=False)
Flag = Annotated[StrictBool, Says(lambda key, value: (
    f"{key}={value!r} must be true or false, got {type(value).__name__} {value!r}; strings ('no', 'off', '0') "
    f"and numbers (0, 1) are not read as booleans. Fix: {key}=true or {key}=false"
))]
CheckpointFile = _checked_by(_checkpoint_file_problem)
LoadedCheckpointFile = _checked_by(_loaded_file_problem)
PreparedDataDir = _checked_by(_prepared_data_dir_problem)
Device = _checked_by(device_problem)
JobName = _checked_by(job_name_problem)
EvalSplit = _one_of(("validation", "test"))
SchedulerName = _one_of(tuple(kind.value for kind in SchedulerType))
"""A name ``transformers.get_scheduler`` knows (xlm-core's ``lr_scheduler.name``)."""
ValCheckInterval = Annotated[
    Union[Annotated[int, Field(strict=True, ge=1)], Annotated[float, Field(strict=True, gt=0, le=1)]],
    _must_be("a positive integer (validate every that many training steps) or a fraction in (0, 1] of an epoch"),
]
Seed = _integer(0, UINT32_MAX)
StarSeed = _integer(0, (UINT32_MAX - 2) // 3)  # arlm.dataprep.star.split_seed: 3 * seed + 2 fits numpy
EmaDecay = _fraction(one_allowed=False, example="0.999")
TopP = _fraction(one_allowed=True, example="0.9")
Temperature = _number(positive=True, example="1.0")


CHECKED_KEYS: Dict[str, Any] = {
    "job_name": JobName,
    "seed": Seed,
    "star_seed": StarSeed,
    "star_split_sizes.train": PositiveInt,  # STAR: rows per split, seeded by arlm.dataprep.star.split_seed
    "star_split_sizes.validation": PositiveInt,
    "star_split_sizes.test": PositiveInt,
    "global_batch_size": PositiveInt,
    "per_device_batch_size": PositiveInt,
    "per_device_val_batch_size": PositiveInt,
    "block_size": PositiveInt,
    "input_block_size": NonNegativeInt,
    "num_dataloader_workers": NonNegativeInt,
    "dataloader_prefetch_factor": PositiveInt,
    "dataloader_pin_memory": Flag,
    "dataloader_persistent_workers": Flag,
    "compile": Flag,
    "resume_from_checkpoint": Flag,
    "resume_checkpoint_path": CheckpointFile,
    "model_only_checkpoint_path": LoadedCheckpointFile,
    "strict_model_only_load": Flag,
    "skip_init_weights": Flag,
    "trainer.max_steps": PositiveInt,
    "trainer.num_nodes": PositiveInt,
    "trainer.log_every_n_steps": PositiveInt,
    "trainer.num_sanity_val_steps": NonNegativeInt,
    "trainer.accumulate_grad_batches": PositiveInt,
    "trainer.gradient_clip_val": NonNegativeNumber,
    "trainer.val_check_interval": ValCheckInterval,
    "optimizer.lr": PositiveNumber,
    "optimizer.weight_decay": NonNegativeNumber,
    "lr_scheduler.name": SchedulerName,
    "lr_scheduler.num_warmup_steps": NonNegativeInt,
    "callbacks.checkpoint_every_n_steps.every_n_train_steps": PositiveInt,
    "callbacks.ema.decay": EmaDecay,
    "callbacks.ema.use_num_updates": Flag,
    "callbacks.ema.apply_ema_at_train_end": Flag,
    "datamodule.manual_cache_dir": PreparedDataDir,
    "datamodule.rewrite_manual_cache": Flag,
    "model.force_flash_attn": Flag,
    "model.final_layer_without_normalization": Flag,
    "predictor.max_steps": PositiveInt,
    "predictor.max_length": _integer(2),
    "predictor.top": PositiveInt,
    "predictor.p": TopP,
    "predictor.temperature": Temperature,
    "eval.split": EvalSplit,
    "eval.ckpt_path": LoadedCheckpointFile,
    "eval.checkpoint_path": LoadedCheckpointFile,
    "eval.model_only_checkpoint_path": LoadedCheckpointFile,
    "generation.max_batches": PositiveInt,  # job_type=generate_arlm
    "generation.device": Device,
    "generation.use_ema": Flag,
    "generation.ckpt_path": LoadedCheckpointFile,
    "generation.checkpoint_path": LoadedCheckpointFile,
    "generation.model_only_checkpoint_path": LoadedCheckpointFile,
    "export_hf.overwrite": Flag,  # job_type=export_hf (apply_ema null: the EMA weights when the checkpoint has them)
    "export_hf.apply_ema": Flag,
    "export_hf.format": _one_of(("hf", "gguf")),  # arlm.jobs.export_hf.EXPORT_FORMATS
    "export_hf.gguf_dtype": _one_of(("f32", "f16", "q8_0")),  # arlm.export.gguf.GGUF_DTYPES
    "post_training.apply_ema": Flag,  # xlm-core's job_type=extract_checkpoint
}
"""Every key arlm checks, in the order problems are listed, and the kind its value must be;
null is allowed but for :data:`NOT_NULL` keys."""
NOT_NULL = ("job_name",)
_ADAPTERS = {id(kind): TypeAdapter(kind) for kind in CHECKED_KEYS.values()}


def select(cfg: DictConfig, key: str, default: Any = None) -> Any:
    """``cfg``'s value at the dotted ``key``; ``default`` when it is absent or cannot be resolved yet."""
    try:
        return OmegaConf.select(cfg, key, default=default, throw_on_missing=False)
    except Exception:  # an interpolation whose resolver or target is not there yet
        return default


def schema_problems(cfg: DictConfig) -> List[str]:
    """One message per value of ``cfg`` that is not of its key's kind (:data:`CHECKED_KEYS`)."""
    problems = []
    for key, kind in CHECKED_KEYS.items():
        value = select(cfg, key, default=_MISSING)
        if value is _MISSING or (value is None and key not in NOT_NULL):
            continue
        try:
            _ADAPTERS[id(kind)].validate_python(value)
        except ValidationError:
            problems.append(next(item for item in kind.__metadata__ if isinstance(item, Says)).words(key, value))
    return problems
