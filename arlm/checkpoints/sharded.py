"""Sharded checkpoint directories read as one checkpoint, on the CPU, in this process alone.

A sharded run (``trainer_strategy=fsdp2``, :class:`arlm.runtime.fsdp2_strategy.FSDP2Strategy`;
xlm-core's ``trainer_strategy=fsdp``, Lightning's ``FSDPStrategy(state_dict_type="sharded")``)
writes each checkpoint as a directory named like a file (``last.ckpt/``)::

    last.ckpt/.metadata          torch.distributed.checkpoint (DCP): what is where
    last.ckpt/__<rank>_0.distcp  the tensors each rank wrote (its shards)
    last.ckpt/meta.pt            Lightning's metadata: every other entry of the checkpoint

The DCP entries are ``state_dict`` (``FSDPStrategy``: ``model``), ``optimizer_<i>`` (states and
parameter groups keyed by parameter name) and, in arlm's layout, ``ema`` (the EMA shadows, as
sharded as the weights). :func:`read_sharded_checkpoint` puts them together into the dictionary a
``.ckpt`` file holds (``state_dict``, ``optimizer_states`` keyed by position, ``ema``, then
``meta.pt``'s entries): with no process group and no GPU, whatever number of ranks wrote it.

Read as data: DCP itself unpickles ``.metadata`` and loads its non-tensor entries with
``weights_only=False``; here ``.metadata`` goes through an unpickler that builds only DCP's own
metadata records (:class:`MetadataUnpickler`), and every entry and ``meta.pt`` are loaded with
``weights_only=True``. A directory that cannot be read raises
:class:`~arlm.checkpoints.read.CheckpointError` naming it and what is missing.
"""

import io
import pickle
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint import load as dcp_load
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta, TensorStorageMetadata

DCP_METADATA = ".metadata"
LIGHTNING_METADATA = "meta.pt"
SHARD_SUFFIX = ".distcp"
MODEL_ENTRIES = ("state_dict", "model")
"""The DCP entry holding the weights: ``state_dict`` (ModelParallelStrategy, arlm), ``model`` (FSDPStrategy)."""
OPTIMIZER_PREFIX = "optimizer_"
EMA_ENTRY = "ema"
_ALLOWED_GLOBALS = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"),
    ("collections", "OrderedDict"),
}
_METADATA_MODULE = "torch.distributed.checkpoint.metadata"


class ShardedCheckpointError(ValueError):
    """A sharded checkpoint directory that cannot be read (raised as a ``CheckpointError`` by the reader)."""


def sharded_directory(path: Path) -> Optional[Path]:
    """The sharded checkpoint directory ``path`` names, or None: the directory itself (it holds
    DCP's ``.metadata``), or Lightning's ``meta.pt`` inside it (xlm-core's ``eval`` takes files only)."""
    path = Path(path)
    if path.is_dir() and (path / DCP_METADATA).is_file():
        return path
    if path.name == LIGHTNING_METADATA and path.is_file() and (path.parent / DCP_METADATA).is_file():
        return path.parent
    return None


def writer_count(directory: Path) -> int:
    """How many ranks wrote ``directory``: its ``__<rank>_0.distcp`` files."""
    return len(list(Path(directory).glob(f"__*{SHARD_SUFFIX}")))


class MetadataUnpickler(pickle.Unpickler):
    """Builds DCP's metadata records (``torch.distributed.checkpoint.metadata``), ``torch.Size``,
    dtypes, layouts and paths; any other class or function named in the file is refused."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = (module, name) in _ALLOWED_GLOBALS or module == _METADATA_MODULE
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            allowed = True
        if not allowed:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's metadata")
        return super().find_class(module, name)


class SafeFileSystemReader(FileSystemReader):
    """DCP's ``FileSystemReader`` reading ``.metadata`` with :class:`MetadataUnpickler`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        rank = kwargs.get("rank")
        name = DCP_METADATA if rank is None else f"__{rank}{DCP_METADATA}"
        with open(Path(self.path) / name, "rb") as handle:
            metadata = MetadataUnpickler(handle).load()
        if not isinstance(metadata, Metadata):
            raise pickle.UnpicklingError(f"{name} holds a {type(metadata).__name__}, not DCP metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's ``DefaultLoadPlanner`` loading non-tensor entries with ``weights_only=True`` (DCP's
    own planner unpickles them with ``weights_only=False``): what loads is then given to it."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        torch.load(value, weights_only=True)
        value.seek(0)
        super().load_bytes(read_item, value)


class _WholeCheckpointPlanner(SafeLoadPlanner):
    """Every entry of the checkpoint, as stored, under its flat DCP key: tensors allocated on the
    CPU from the metadata, non-tensor entries loaded with ``weights_only=True``."""

    def __init__(self) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)

    def set_up_planner(self, state_dict: Dict[str, Any], metadata: Optional[Metadata] = None, is_coordinator: bool = False) -> None:
        for key, item in metadata.state_dict_metadata.items():
            is_tensor = isinstance(item, TensorStorageMetadata)
            state_dict[key] = torch.empty(item.size, dtype=item.properties.dtype) if is_tensor else None
        super().set_up_planner(state_dict, metadata, is_coordinator)

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        self.state_dict[read_item.dest_index.fqn] = torch.load(value, weights_only=True)


def read_dcp_metadata(directory: Path) -> Metadata:
    """The DCP metadata of ``directory`` (read as data)."""
    return SafeFileSystemReader(directory).read_metadata()


def stored_shapes(directory: Path, entry: str) -> Dict[str, Tuple[int, ...]]:
    """``name -> shape`` of the tensors stored under the DCP ``entry`` of ``directory`` (e.g. the
    weights), from its metadata alone."""
    metadata = read_dcp_metadata(directory)
    paths = metadata.planner_data or {}
    shapes = {}
    for key, item in metadata.state_dict_metadata.items():
        path = paths.get(key, tuple(key.split(".", 1)))
        if isinstance(item, TensorStorageMetadata) and len(path) == 2 and path[0] == entry:
            shapes[str(path[1])] = tuple(item.size)
    return shapes


def model_entry(directory: Path) -> str:
    """The DCP entry of ``directory`` holding the weights (:data:`MODEL_ENTRIES`)."""
    paths = (read_dcp_metadata(directory).planner_data or {}).values()
    roots = {path[0] for path in paths if path}
    return next((entry for entry in MODEL_ENTRIES if entry in roots), MODEL_ENTRIES[0])


def read_lightning_metadata(directory: Path) -> Dict[str, Any]:
    """``meta.pt`` of the sharded checkpoint ``directory`` (every entry but the sharded ones), read as data."""
    meta_path = Path(directory) / LIGHTNING_METADATA
    if not meta_path.is_file():
        raise ShardedCheckpointError(
            f"{directory} is an incomplete sharded checkpoint: {LIGHTNING_METADATA} (rank 0's metadata) is missing"
        )
    try:
        metadata = torch.load(meta_path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise ShardedCheckpointError(_unreadable(directory, error)) from error
    if not isinstance(metadata, dict):
        raise ShardedCheckpointError(f"{meta_path} holds a {type(metadata).__name__}, not a checkpoint dictionary")
    return metadata


def _unreadable(directory: Path, error: BaseException) -> str:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return (
        f"{directory} cannot be read as a sharded checkpoint: {reason}. It is truncated, corrupt, or asks to "
        f"build Python objects that arlm does not load from checkpoints"
    )


def read_sharded_checkpoint(path: Path, map_location: Any = "cpu") -> Dict[str, Any]:
    """The checkpoint in the sharded directory ``path`` names (:func:`sharded_directory`), as a
    ``.ckpt`` file would hold it; tensors on the CPU, or on ``map_location`` when it names a device.

    Raises:
        ShardedCheckpointError: ``path`` is no sharded checkpoint, ``meta.pt`` or a shard file is
            missing (an interrupted save, or ranks that wrote to different filesystems), or a file
            is unreadable or asks to build objects.
    """
    directory = sharded_directory(Path(path))
    if directory is None:
        raise ShardedCheckpointError(f"{path} is not a sharded checkpoint directory (no {DCP_METADATA} in it)")
    metadata = read_lightning_metadata(directory)
    try:
        read_dcp_metadata(directory)
        stored = _load_all_entries(directory)
    except FileNotFoundError as error:
        raise ShardedCheckpointError(
            f"{directory} is an incomplete sharded checkpoint: {Path(error.filename or '?').name} is missing "
            f"({writer_count(directory)} shard files present; every rank must write to the same filesystem)"
        ) from error
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise ShardedCheckpointError(_unreadable(directory, error)) from error
    checkpoint = _as_lightning_checkpoint(stored, metadata)
    return checkpoint if _is_cpu(map_location) else _to_device(checkpoint, map_location)


def _load_all_entries(directory: Path) -> Dict[str, Any]:
    """Every DCP entry of ``directory``, nested as it was saved (lists where it had lists)."""
    planner = _WholeCheckpointPlanner()
    reader = SafeFileSystemReader(directory)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
        try:
            dcp_load({}, storage_reader=reader, planner=planner, no_dist=True)
        except CheckpointException as error:  # DCP's wrapper of what went wrong on each rank (here one)
            raise next(iter(error.failures.values()))[0] from error
    paths = reader.read_metadata().planner_data or {}
    nested: Dict[str, Any] = {}
    for key, value in planner.state_dict.items():
        _put(nested, paths.get(key, (key,)), value)
    return nested


def _put(root: Dict[str, Any], path: Sequence[Any], value: Any) -> None:
    """Set ``root[p0][p1]...`` to ``value``, making dicts (and lists for integer steps) on the way."""
    node: Any = root
    for step, following in zip(path[:-1], path[1:]):
        empty: Any = [] if isinstance(following, int) else {}
        if isinstance(node, list):
            node.extend([None] * (step + 1 - len(node)))
            node[step] = empty if node[step] is None else node[step]
        else:
            node.setdefault(step, empty)
        node = node[step]
    last = path[-1]
    if isinstance(node, list):
        node.extend([None] * (last + 1 - len(node)))
    node[last] = value


def _as_lightning_checkpoint(stored: Dict[str, Any], metadata: Dict[str, Any]) -> Dict[str, Any]:
    """``meta.pt``'s entries with the weights as ``state_dict``, the optimizers as
    ``optimizer_states`` (keyed by position, as a single-file checkpoint holds them) and the EMA
    shadows merged into ``ema``."""
    checkpoint = dict(metadata)
    weights = next((stored[entry] for entry in MODEL_ENTRIES if entry in stored), {})
    checkpoint["state_dict"] = dict(weights)
    optimizers = sorted((int(key[len(OPTIMIZER_PREFIX):]), value) for key, value in stored.items() if key.startswith(OPTIMIZER_PREFIX))
    if optimizers:
        checkpoint["optimizer_states"] = [position_keyed(state) for _, state in optimizers]
    if EMA_ENTRY in stored:
        checkpoint[EMA_ENTRY] = {**(metadata.get(EMA_ENTRY) or {}), **stored[EMA_ENTRY]}
    return checkpoint


def position_keyed(optimizer_state: Mapping[str, Any]) -> Dict[str, Any]:
    """A name-keyed optimizer state (``state[<parameter name>]``, groups listing names: what
    ``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict`` and FSDP write) keyed by
    position, as ``torch.optim.Optimizer.state_dict()`` keys it; a position-keyed one unchanged."""
    groups: List[Dict[str, Any]] = [dict(group) for group in optimizer_state.get("param_groups", [])]
    names = [name for group in groups for name in group.get("params", [])]
    if not names or not all(isinstance(name, str) for name in names):
        return dict(optimizer_state)
    position = {name: index for index, name in enumerate(names)}
    for group in groups:
        group["params"] = [position[name] for name in group["params"]]
    state = {position[name]: value for name, value in (optimizer_state.get("state") or {}).items() if name in position}
    return {"state": state, "param_groups": groups}


def _is_cpu(map_location: Any) -> bool:
    return not isinstance(map_location, (str, torch.device)) or torch.device(map_location).type == "cpu"


def _to_device(value: Any, device: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_device(item, device) for item in value]
    return value
