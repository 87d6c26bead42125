"""``trainer_strategy=fsdp2``: Lightning's ``ModelParallelStrategy`` running FSDP2 alone, with
arlm's checkpoint rules.

:class:`FSDP2Strategy` is ``lightning.pytorch.strategies.ModelParallelStrategy`` (FSDP2 through
``LightningModule.configure_model``, where ``ARLMHarness`` shards the decoder:
:mod:`arlm.runtime.fsdp2_sharding`) with every rank in the one data-parallel dimension (no tensor
parallelism: Lightning's default would make the ranks of a node tensor-parallel and give them the
same data). It runs on CUDA (NCCL) and on the CPU (gloo). What it changes in Lightning's
checkpoints, which bypass the ``CheckpointIO`` plugin:

* **written atomically:** every rank writes its shards into one staging directory beside the
  target, rank 0 adds ``meta.pt`` and swaps the whole directory into place
  (:func:`arlm.runtime.atomic_files.write_directory_atomically`): ``last.ckpt/`` is the old
  checkpoint or the new one, never a mix;
* **EMA shadows sharded:** the EMA callback's shadow parameters are DTensors like the weights;
  they go into the DCP files (entry ``ema``), not into rank 0's ``meta.pt``;
* **read as data:** ``.metadata``, the non-tensor entries and ``meta.pt`` are read with
  :mod:`arlm.checkpoints.sharded`'s safe reader, never unpickled;
* **checked before anything is restored:** the module's ``check_checkpoint`` (vocabulary, shapes
  from the DCP metadata, network, resume step) and a NaN/Inf stop marker; the command's
  learning rate is applied to the loaded optimizer (:func:`arlm.runtime.resume.reconcile_learning_rate`);
* **any number of ranks for the weights:** DCP reshards, so ``eval`` under this strategy reads a
  directory written by N ranks on M; a single-file checkpoint (a DDP or one-process run, a
  consolidated file) loads too. Resuming training on another number of ranks is refused before
  anything is restored (:func:`arlm.runtime.resume.check_resume_world_size`: the data loader's
  position is per rank).

The directory layout is the one Lightning writes (``.metadata``, ``__<rank>_0.distcp``,
``meta.pt``): every job reads it through :func:`arlm.checkpoints.read.read_checkpoint`.
"""

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.checkpoint import load as dcp_load
from torch.distributed.checkpoint import save as dcp_save
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor, distribute_tensor

from arlm.checkpoints.checks import NON_FINITE_STOP_KEY
from arlm.checkpoints.read import CheckpointError
from arlm.checkpoints.sharded import (
    EMA_ENTRY,
    LIGHTNING_METADATA,
    SafeFileSystemReader,
    SafeLoadPlanner,
    model_entry,
    read_dcp_metadata,
    read_lightning_metadata,
    sharded_directory,
    stored_shapes,
    writer_count,
)
from arlm.runtime.atomic_files import write_directory_atomically
from arlm.runtime.checkpoint_io import load_newest_valid
from arlm.runtime.resume import reconcile_learning_rate

log = logging.getLogger(__name__)

EMA_TENSOR_LISTS = ("shadow_params", "collected_params")
"""The entries of torch_ema's state that hold one tensor per trainable parameter."""


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 over all ranks (see the module docstring).

    Args:
        activation_checkpointing: recompute each decoder layer's activations in the backward pass
            instead of keeping them (less memory, about one more forward pass of compute).
        process_group_backend: ``gloo``/``nccl``; default: the device's (gloo on the CPU).
        timeout: of the process group's collectives.
    """

    def __init__(
        self,
        activation_checkpointing: bool = False,
        process_group_backend: Optional[str] = None,
        timeout: Optional[timedelta] = default_pg_timeout,
    ) -> None:
        if not isinstance(activation_checkpointing, bool):
            raise TypeError(
                f"trainer.strategy.activation_checkpointing={activation_checkpointing!r} must be true or false"
            )
        super().__init__(
            data_parallel_size="auto", tensor_parallel_size=1, save_distributed_checkpoint=True,
            process_group_backend=process_group_backend, timeout=timeout,
        )
        self.activation_checkpointing = activation_checkpointing

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def model_to_device(self) -> None:
        """Move the module to the root device unless it is there already. After ``fit`` the
        module is sharded and in place; moving it again for the post-fit test would swap its
        DTensor parameters, which the fitted optimizer still references (torch refuses that)."""
        tensors = [*self.model.parameters(), *self.model.buffers()]
        if any(tensor.device != self.root_device for tensor in tensors):
            super().model_to_device()

    def save_checkpoint(self, checkpoint: Dict[str, Any], filepath: _PATH, storage_options: Optional[Any] = None) -> None:
        """Write ``checkpoint`` as a sharded directory at ``filepath``, atomically (module docstring)."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options")
        target = Path(self.broadcast(str(filepath)))
        sharded = {"state_dict": checkpoint.pop("state_dict")}
        for index, state in enumerate(checkpoint.pop("optimizer_states", [])):
            sharded[f"optimizer_{index}"] = state
        ema = checkpoint.get(EMA_ENTRY)
        if isinstance(ema, dict):
            tensors = {key: ema[key] for key in EMA_TENSOR_LISTS if isinstance(ema.get(key), list)}
            if tensors:
                sharded[EMA_ENTRY] = tensors
                checkpoint[EMA_ENTRY] = {key: value for key, value in ema.items() if key not in tensors}
        if self.is_global_zero:
            write_directory_atomically(target, lambda staging: self._write(sharded, checkpoint, staging), replace=True)
        else:
            self._write(sharded, checkpoint, None)
        self.barrier()

    def _write(self, sharded: Dict[str, Any], metadata: Dict[str, Any], staging: Optional[Path]) -> None:
        """All ranks: their shards into rank 0's ``staging`` directory; rank 0: ``meta.pt``."""
        staging = Path(self.broadcast(None if staging is None else str(staging)))
        dcp_save(sharded, checkpoint_id=staging)
        if self.is_global_zero:
            torch.save(metadata, staging / LIGHTNING_METADATA)
        self.barrier()

    def load_checkpoint(self, checkpoint_path: _PATH) -> Dict[str, Any]:
        """Restore the weights, optimizers and EMA shadows of ``checkpoint_path`` (a sharded
        directory, its ``meta.pt``, or a single file) into the sharded module; return the rest."""
        path = Path(self.broadcast(str(checkpoint_path)))
        directory = sharded_directory(path)
        if directory is None:
            return self._load_single_file(path)
        metadata = read_lightning_metadata(directory)
        if NON_FINITE_STOP_KEY in metadata:
            raise CheckpointError(
                f"{directory} was written when training stopped on a non-finite loss; resuming from it would diverge "
                f"again. Fix: resume from an earlier checkpoint (resume_checkpoint_path=...)"
            )
        entry = model_entry(directory)
        shapes = stored_shapes(directory, entry)
        self._check(metadata, {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}, directory)
        writers = writer_count(directory)
        if writers != self.world_size:
            log.info(f"{directory} was written by {writers} ranks; resharding it onto {self.world_size}")
        model_state = {entry: get_model_state_dict(self.model)}
        self._read(directory, model_state)
        set_model_state_dict(self.model, model_state[entry], options=StateDictOptions(strict=self._strict))
        optimizer_states = []
        for index, optimizer in enumerate(self.optimizers):
            key = f"optimizer_{index}"
            state = {key: get_optimizer_state_dict(self.model, optimizer)}
            self._read(directory, state)
            optimizer_states.append(state[key])
        self._reconcile_learning_rate(metadata, optimizer_states)
        for optimizer, state in zip(self.optimizers, optimizer_states):
            set_optimizer_state_dict(self.model, optimizer, state)
        self._read_ema(directory, metadata)
        return metadata

    def _read(self, directory: Path, state: Dict[str, Any]) -> None:
        dcp_load(state, storage_reader=SafeFileSystemReader(directory), planner=SafeLoadPlanner())

    def _read_ema(self, directory: Path, metadata: Dict[str, Any]) -> None:
        """The EMA shadows stored in ``directory`` into ``metadata["ema"]``, as DTensors sharded
        like the parameters they follow."""
        counts: Dict[str, int] = {}
        for path in (read_dcp_metadata(directory).planner_data or {}).values():
            if len(path) == 3 and path[0] == EMA_ENTRY and path[1] in EMA_TENSOR_LISTS:
                counts[path[1]] = max(counts.get(path[1], 0), int(path[2]) + 1)
        if not counts:
            return
        params = self._trainable_parameters()
        if any(count != len(params) for count in counts.values()):
            raise CheckpointError(
                f"{directory} holds {max(counts.values())} EMA shadows but the model has {len(params)} trainable "
                f"parameters: it was written by another model. Fix: use the model config it was trained with"
            )
        state = {EMA_ENTRY: {key: [torch.empty_like(p) for p in params] for key in counts}}
        self._read(directory, state)
        metadata[EMA_ENTRY] = {**(metadata.get(EMA_ENTRY) or {}), **state[EMA_ENTRY]}

    def _load_single_file(self, path: Path) -> Dict[str, Any]:
        """A single-file checkpoint (read as data, with the newest-valid fallback) into the
        sharded module: every rank reads the whole file and keeps its shards."""
        _, checkpoint = load_newest_valid(path)
        self._check(checkpoint, checkpoint.get("state_dict", {}), path)
        state_dict = checkpoint.pop("state_dict")
        full = StateDictOptions(full_state_dict=True, strict=self._strict)
        set_model_state_dict(self.model, state_dict, options=full)
        optimizer_states = [
            self._name_keyed(optimizer, state) for optimizer, state in zip(self.optimizers, checkpoint.pop("optimizer_states", []))
        ]
        self._reconcile_learning_rate(checkpoint, optimizer_states)
        for optimizer, state in zip(self.optimizers, optimizer_states):
            set_optimizer_state_dict(self.model, optimizer, state, options=StateDictOptions(full_state_dict=True))
        ema = checkpoint.get(EMA_ENTRY)
        if isinstance(ema, dict):
            params = self._trainable_parameters()
            for key in EMA_TENSOR_LISTS:
                if isinstance(ema.get(key), list) and len(ema[key]) == len(params):
                    ema[key] = [_like(full_tensor, param) for full_tensor, param in zip(ema[key], params)]
        return checkpoint

    def _name_keyed(self, optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> Dict[str, Any]:
        """A position-keyed optimizer state (a single-file checkpoint's) keyed by parameter name,
        as ``set_optimizer_state_dict`` takes it."""
        names = {id(param): name for name, param in self.model.named_parameters()}
        order = [names[id(param)] for group in optimizer.param_groups for param in group["params"]]
        groups = [{**group, "params": [order[i] for i in group["params"]]} for group in state["param_groups"]]
        return {"state": {order[i]: value for i, value in state["state"].items()}, "param_groups": groups}

    def _trainable_parameters(self) -> List[torch.nn.Parameter]:
        return [p for p in self.lightning_module.parameters() if p.requires_grad]

    @property
    def _strict(self) -> bool:
        return bool(self.lightning_module.strict_loading)

    def _check(self, contents: Dict[str, Any], weights: Dict[str, Any], path: Path) -> None:
        """The module's own refusal (``check_checkpoint``, as ``ARLMHarness`` has it) of a
        checkpoint whose ``weights`` (real or ``meta`` tensors) and entries it cannot use."""
        check = getattr(self.lightning_module, "check_checkpoint", None)
        if check is not None:
            check({**contents, "state_dict": weights}, path)

    def _reconcile_learning_rate(self, metadata: Dict[str, Any], optimizer_states: List[Dict[str, Any]]) -> None:
        config = getattr(self.lightning_module, "config", None)
        if config is not None and optimizer_states and self.lightning_module.trainer.state.fn == "fit":
            reconcile_learning_rate({**metadata, "optimizer_states": optimizer_states}, config)


def _like(full_tensor: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``full_tensor`` laid out like ``param``: sharded the same way when ``param`` is a DTensor."""
    if isinstance(param, DTensor):
        return distribute_tensor(full_tensor.to(param.device_mesh.device_type), param.device_mesh, param.placements)
    return full_tensor.to(param.device)
