"""What one config key's value must be: the value kinds of :class:`arlm.runtime.config_checks.ConfigSchema`.

Each kind is a frozen dataclass whose ``problem(key, value)`` words the refusal (naming the key,
the value and an example) or returns None; the ``Annotated`` aliases at the end (:data:`PositiveInt`,
:data:`Flag`, :data:`Seed`, ...) attach a kind to a type for the schema's fields.
"""

import os
from dataclasses import dataclass
from typing import Annotated, Any, Optional, Tuple, Union

import torch
from transformers import SchedulerType

from arlm.network.value_checks import is_finite_number, is_int
from arlm.runtime.checkpoint_load import checkpoints_in

@dataclass(frozen=True)
class Integer:
    """An integer (not a bool) >= ``minimum`` (and <= ``maximum`` when given)."""

    minimum: int
    maximum: Optional[int] = None

    def problem(self, key: str, value: Any) -> Optional[str]:
        if is_int(value) and value >= self.minimum and (self.maximum is None or value <= self.maximum):
            return None
        if self.maximum is not None:
            return f"{key}={value!r} ({type(value).__name__}) must be an integer >= {self.minimum} and <= {self.maximum}, e.g. {key}=42"
        kind = "a positive integer" if self.minimum == 1 else f"an integer >= {self.minimum}"
        return f"{key}={value!r} ({type(value).__name__}) must be {kind}, e.g. {key}=16"


@dataclass(frozen=True)
class FiniteNumber:
    """A finite int or float (not a bool): > 0 when ``positive``, else >= 0."""

    positive: bool
    example: str = ""

    def problem(self, key: str, value: Any) -> Optional[str]:
        if self.positive:
            if is_finite_number(value) and value > 0:
                return None
            return f"{key}={value!r} must be a positive finite number, e.g. {key}={self.example}"
        if is_finite_number(value) and value >= 0:
            return None
        return f"{key}={value!r} must be a finite number >= 0 (or null)"


@dataclass(frozen=True)
class Fraction:
    """A number in (0, 1), or (0, 1] with ``one_allowed``."""

    one_allowed: bool
    example: str

    def problem(self, key: str, value: Any) -> Optional[str]:
        if is_finite_number(value) and 0 < value < 1 or (self.one_allowed and value == 1 and not isinstance(value, bool)):
            return None
        interval = "(0, 1]" if self.one_allowed else "(0, 1)"
        return f"{key}={value!r} must be a number in {interval}, e.g. {key}={self.example}"


@dataclass(frozen=True)
class DeviceName:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:<index>`` of a device this machine has."""

    def problem(self, key: str, value: Any) -> Optional[str]:
        return device_problem(key, value)


@dataclass(frozen=True)
class Boolean:
    """A real boolean: what Hydra makes of ``true`` / ``false``. Strings (``'no'``, ``'off'``,
    ``'0'``) and numbers (``0``, ``1``) are refused, not read as truthy or falsy."""

    def problem(self, key: str, value: Any) -> Optional[str]:
        if isinstance(value, bool):
            return None
        return (
            f"{key}={value!r} must be true or false, got {type(value).__name__} {value!r}; strings "
            f"('no', 'off', '0') and numbers (0, 1) are not read as booleans. Fix: {key}=true or {key}=false"
        )


@dataclass(frozen=True)
class OneOf:
    """One of ``choices``."""

    choices: Tuple[str, ...]

    def problem(self, key: str, value: Any) -> Optional[str]:
        return None if value in self.choices else f"{key}={value!r} must be one of {list(self.choices)}"


@dataclass(frozen=True)
class StepsOrEpochFraction:
    """``trainer.val_check_interval``: a positive integer (steps) or a float in (0, 1] (of an epoch)."""

    def problem(self, key: str, value: Any) -> Optional[str]:
        if (is_int(value) and value > 0) or (isinstance(value, float) and 0.0 < value <= 1.0):
            return None
        return (
            f"{key}={value!r} must be a positive integer (validate every that many "
            f"training steps) or a fraction in (0, 1] of an epoch"
        )


@dataclass(frozen=True)
class RunName:
    """``job_name``: names ``logs/<job_name>/``, so a non-empty name without ``/``."""

    def problem(self, key: str, value: Any) -> Optional[str]:
        if isinstance(value, str) and value.strip() and "/" not in value and value not in (".", ".."):
            return None
        return f"{key}={value!r} must be a non-empty name without '/' (it names logs/<job_name>/)"


@dataclass(frozen=True)
class CheckpointFilePath:
    """A checkpoint file, not a directory (xlm-core would say a directory does not exist). A
    missing path is left to the jobs, whose messages name the fix; ``""``/``none``/``null`` mean unset."""

    def problem(self, key: str, value: Any) -> Optional[str]:
        path = str(value)
        if path.lower() in ("", "none", "null") or not os.path.isdir(path):
            return None
        if any(name.endswith(".distcp") for name in os.listdir(path)):
            return None
        ckpts = [entry.name for entry in checkpoints_in(path)]
        pick = "last.ckpt" if "last.ckpt" in ckpts else (ckpts[0] if ckpts else "")
        hint = f"; it holds {ckpts[:4]}, e.g. pass {os.path.join(path, pick)}" if ckpts else ""
        return f"{key}={value} is a directory, not a checkpoint file{hint}"


@dataclass(frozen=True)
class PreparedDataDirectory:
    """``datamodule.manual_cache_dir``: a directory if it exists (a path that is not a string is left alone)."""

    def problem(self, key: str, value: Any) -> Optional[str]:
        if isinstance(value, str) and os.path.exists(value) and not os.path.isdir(value):
            return f"the prepared-data directory (DATA_DIR / {key}) {value} is a file, not a directory"
        return None


def device_problem(key: str, value: Any) -> Optional[str]:
    """Why ``value`` is not a device :class:`DeviceName` accepts, or None."""
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


UINT32_MAX = 2**32 - 1
PositiveInt = Annotated[int, Integer(minimum=1)]
NonNegativeInt = Annotated[int, Integer(minimum=0)]
PositiveNumber = Annotated[float, FiniteNumber(positive=True, example="0.001")]
NonNegativeNumber = Annotated[float, FiniteNumber(positive=False)]
Flag = Annotated[bool, Boolean()]
CheckpointFile = Annotated[str, CheckpointFilePath()]
EvalSplit = Annotated[str, OneOf(("validation", "test"))]
JobName = Annotated[str, RunName()]
ValCheckInterval = Annotated[Union[int, float], StepsOrEpochFraction()]
PreparedDataDir = Annotated[str, PreparedDataDirectory()]
Seed = Annotated[int, Integer(minimum=0, maximum=UINT32_MAX)]
StarSeed = Annotated[int, Integer(minimum=0, maximum=UINT32_MAX - 2)]
EmaDecay = Annotated[float, Fraction(one_allowed=False, example="0.999")]
Temperature = Annotated[float, FiniteNumber(positive=True, example="1.0")]
TopP = Annotated[float, Fraction(one_allowed=True, example="0.9")]
Device = Annotated[str, DeviceName()]
SchedulerName = Annotated[str, OneOf(tuple(kind.value for kind in SchedulerType))]
"""A name ``transformers.get_scheduler`` knows (xlm-core's ``lr_scheduler.name``)."""
