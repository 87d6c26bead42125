"""The one reader of checkpoint files, whatever their kind, with one set of messages.

:func:`read_checkpoint` picks the first :class:`Reader` of :data:`READERS` that takes the path
and returns a :class:`Checkpoint`: what the file holds, read as data (``torch.load`` with
``weights_only=True``, so a pickle cannot run code; safetensors hold tensors only). Kinds:

* a Lightning checkpoint (``xlm job_type=train``): the model under ``state_dict["model.*"]``, the
  composed config under ``hyper_parameters`` (saved under xlm-core's dummy resolvers:
  tokenizer-dependent values stay literal ``${tokenizer:...}`` strings), the callbacks' states
  under ``callbacks``, torch_ema's state under ``ema``;
* model-only weights: a ``.safetensors`` file, or a torch file of a plain state dict;
* a sharded checkpoint directory (``trainer_strategy=fsdp2``, or xlm-core's ``fsdp``), named by
  the directory or by the ``meta.pt`` inside it, consolidated on the CPU into what a ``.ckpt``
  holds (:mod:`arlm.checkpoints.sharded`).

A file that cannot be read raises :class:`CheckpointError` naming it and what is wrong (empty,
truncated, not a checkpoint, code inside). Nothing here builds a model or calls what a file names.
"""

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from arlm.checkpoints.sharded import ShardedCheckpointError, read_sharded_checkpoint, sharded_directory

PathLike = Union[str, Path]
LIGHTNING_MODEL_PREFIX = "model."
CHECKPOINT_SUFFIX = ".ckpt"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: empty, not a checkpoint, truncated, or unsafe."""


@dataclass(frozen=True)
class Checkpoint:
    """What one checkpoint file holds. ``contents`` is the dictionary Lightning restores for a
    Lightning checkpoint, the state dict itself for model-only weights (``lightning`` False)."""

    path: Path
    contents: Dict[str, Any]

    @property
    def lightning(self) -> bool:
        return "state_dict" in self.contents

    @property
    def weights(self) -> Dict[str, Any]:
        """The model's tensors, named as in the model's own ``state_dict()``."""
        if not self.lightning:
            return self.contents
        prefix = LIGHTNING_MODEL_PREFIX
        return {key[len(prefix):]: value for key, value in self.contents["state_dict"].items() if key.startswith(prefix)}

    @property
    def hyper_parameters(self) -> Mapping[str, Any]:
        """The composed config of the run (empty for model-only weights): data, never instantiated."""
        return (self.contents.get("hyper_parameters") or {}) if self.lightning else {}

    @property
    def model_config(self) -> Optional[Mapping[str, Any]]:
        """The recorded ``model:`` node (constructor arguments), or None."""
        model = self.hyper_parameters.get("model")
        return model if isinstance(model, Mapping) else None

    def get(self, key: str) -> Any:
        """A top-level entry of a Lightning checkpoint (``ema``, ``callbacks``, ``global_step``,
        ``epoch``...); None for model-only weights."""
        return self.contents.get(key) if self.lightning else None


@dataclass(frozen=True)
class Reader:
    """One kind of checkpoint: ``takes(path)`` says whether it is one, ``load(path,
    map_location)`` returns its contents (raising what :func:`describe_unreadable` words)."""

    kind: str
    takes: Callable[[Path], bool]
    load: Callable[[Path, Any], Any]


def _load_torch_file(path: Path, map_location: Any) -> Any:
    return torch.load(path, map_location=map_location, weights_only=True)


def _load_safetensors(path: Path, map_location: Any) -> Dict[str, torch.Tensor]:
    device = map_location if isinstance(map_location, (str, torch.device)) else "cpu"
    return load_file(str(path), device=str(device))


READERS: Tuple[Reader, ...] = (
    Reader("sharded checkpoint directory", lambda path: sharded_directory(path) is not None, read_sharded_checkpoint),
    Reader("safetensors file", lambda path: path.suffix == ".safetensors" and path.is_file(), _load_safetensors),
    Reader("torch file", lambda path: path.is_file(), _load_torch_file),
)
"""The kinds :func:`read_checkpoint` accepts, tried in this order."""


def read_checkpoint(path: PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Read ``path`` as data, onto ``map_location``, without building anything.

    Raises:
        CheckpointError: no reader takes ``path`` (missing, a directory that is no sharded
            checkpoint), or the file cannot be
            read (see :func:`describe_unreadable`), or it holds something other than a dictionary.
    """
    path = Path(path)
    reader = next((reader for reader in READERS if reader.takes(path)), None)
    if reader is None:
        raise CheckpointError(f"{path} does not exist or is not a file (nor a sharded checkpoint directory)")
    try:
        contents = reader.load(path, map_location)
    except ShardedCheckpointError as error:
        raise CheckpointError(str(error)) from error
    except Exception as error:
        raise CheckpointError(describe_unreadable(path, error)) from error
    if not isinstance(contents, dict):
        raise CheckpointError(f"{path} holds a {type(contents).__name__}, not a checkpoint dictionary")
    return Checkpoint(path, contents)


def weight_shapes(path: PathLike) -> Tuple[bool, Dict[str, Tuple[int, ...]]]:
    """``(lightning, name -> shape)`` of the model's tensors in ``path``; a safetensors file is
    read from its header alone. Raises :class:`CheckpointError` as :func:`read_checkpoint`."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        try:
            with safe_open(str(path), framework="pt") as weights:
                return False, {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
        except (SafetensorError, OSError) as error:
            raise CheckpointError(describe_unreadable(path, error)) from error
    checkpoint = read_checkpoint(path)
    shapes = {name: tuple(value.shape) for name, value in checkpoint.weights.items() if isinstance(value, torch.Tensor)}
    return checkpoint.lightning, shapes


def describe_unreadable(path: Path, error: BaseException) -> str:
    """Why ``path`` could not be read: empty, not a checkpoint, truncated or corrupt, or asking
    to build Python objects (refused by ``weights_only``)."""
    size = path.stat().st_size if path.exists() else 0
    text = str(error)
    if isinstance(error, SafetensorError):
        return f"{path} is truncated or corrupt ({size} bytes, not a complete safetensors file): {text}"
    if size == 0:
        return f"{path} is empty (0 bytes): it was never written completely"
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(4)
        if head.startswith(b"PK"):
            return f"{path} is truncated or corrupt ({size} bytes, the zip archive is incomplete)"
        return f"{path} is not a PyTorch checkpoint ({size} bytes, no zip archive; a text file or another format?)"
    if "Weights only load failed" in text or isinstance(error, pickle.UnpicklingError):
        match = re.search(r"Unsupported global: GLOBAL (\S+)", text) or re.search(r"WeightsUnpickler error: ([^\n]+)", text)
        reason = match.group(1) if match else text.splitlines()[0]
        return (
            f"{path} asks to run or build Python objects that arlm does not load from checkpoints "
            f"({reason}); it was not loaded. Use checkpoints written by arlm/Lightning training, or "
            f"re-save its tensors with a tool you trust"
        )
    return f"{path} is truncated or corrupt ({size} bytes): {type(error).__name__}: {text.splitlines()[0] if text else ''}"


def checkpoints_in(directory: PathLike) -> List[Path]:
    """The ``*.ckpt`` entries of ``directory``, sorted by name: files, and the directories that
    sharded strategies write under that suffix (:mod:`arlm.checkpoints.sharded`). Empty when
    ``directory`` is not a directory."""
    directory = Path(directory)
    return sorted(directory.glob(f"*{CHECKPOINT_SUFFIX}")) if directory.is_dir() else []
