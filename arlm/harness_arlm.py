"""``ARLMHarness``: xlm-core's ``Harness`` with vocabulary and shape checks between tokenizer,
model and checkpoint, checkpoint reads that never unpickle code nor build what a checkpoint
names, a NaN/Inf stop that does not become the resume point, EMA weights applied from a
checkpoint file, and checkpoint loading that works on machines without CUDA.

Without the checks a mismatch surfaces as an ``IndexError`` deep inside the embedding (tokenizer
larger than the model) or as a wall of ``size mismatch`` lines from ``load_state_dict``. They now
fail early with the numbers and the fix.
"""

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
from lightning.pytorch import Callback
from omegaconf import OmegaConf
from xlm.harness import Harness
from xlm.utils.ema import EMACallback

from arlm.checkpoints.checks import NON_FINITE_STOP_KEY, copy_ema_weights, non_finite_ema, weights_difference
from arlm.checkpoints.data_recipe import check_same_data
from arlm.checkpoints.network import check_same_network, describe, fix_for, network_differences, recorded_model_config
from arlm.checkpoints.read import CheckpointError, weight_shapes
from arlm.datamodule_arlm import tokenizer_vocab_size
from arlm.runtime.checkpoint_io import load_newest_valid
from arlm.runtime.config_schema import is_unset
from arlm.runtime.cpu_precision import exact_fp32_matmul_on_cpu
from arlm.runtime.final_checkpoint import FinalCheckpoint
from arlm.runtime.fsdp2_sharding import mixed_precision_policy, release_gathered, shard_decoder
from arlm.runtime.resume import (
    WORLD_SIZE_KEY, check_resume_step, check_resume_world_size, drop_other_sampler_position, reconcile_learning_rate,
)
from arlm.runtime.stopped_run import NonFiniteLossError, is_non_finite_loss_error, replace_on_exception_checkpoint
from arlm.runtime.step_speed import replace_ema_callback, total_gradient_norm, with_fused_kernel

log = logging.getLogger(__name__)

LM_HEAD_KEY = "model.lm_head.weight"
MODEL_ONLY_KEYS = (
    "model_only_checkpoint_path", "eval.model_only_checkpoint_path", "generation.model_only_checkpoint_path",
)


def check_model_covers_tokenizer(model: Any, tokenizer: Any) -> None:
    """Raise ``ValueError`` if the model's vocabulary is smaller than the tokenizer's (a tokenizer
    that states no size, see :func:`arlm.datamodule_arlm.tokenizer_vocab_size`, is not checked)."""
    model_vocab = model.lm_head.out_features
    tok_vocab = tokenizer_vocab_size(tokenizer)
    if tok_vocab is not None and model_vocab < tok_vocab:
        raise ValueError(
            f"model.num_embeddings={model_vocab} is smaller than the vocabulary of the tokenizer "
            f"({type(tokenizer).__name__}, {tok_vocab} ids), so some token ids have no embedding. "
            f"Fix: set model.num_embeddings to '${{tokenizer:full_vocab_size}}' (the default of "
            f"arlm's model configs) or to at least {tok_vocab}."
        )


def check_checkpoint_vocabulary(state_dict: Dict[str, Any], model: Any, tokenizer: Any) -> None:
    """Raise ``ValueError`` if a checkpoint's output layer has another vocabulary size than ``model``."""
    weight = state_dict.get(LM_HEAD_KEY)
    if weight is None:
        return
    ckpt_vocab, model_vocab = int(weight.shape[0]), model.lm_head.out_features
    if ckpt_vocab != model_vocab:
        raise ValueError(
            f"The checkpoint was trained with a vocabulary of {ckpt_vocab} ids, but the configured "
            f"model has {model_vocab} (tokenizer {type(tokenizer).__name__} with "
            f"{tokenizer_vocab_size(tokenizer)} ids). Fix: use the experiment (and tokenizer, "
            f"global_components.tokenizer) the checkpoint was trained with, or a checkpoint "
            f"trained with this tokenizer."
        )


def check_state_dict_shapes(checkpoint: Dict[str, Any], module: Any) -> None:
    """Raise ``ValueError`` naming the first weight of the model (``model.*``) whose shape differs
    between checkpoint and module, or that only one of them has (another depth, width, MLP or
    norm), the network settings that differ and the fix."""
    def model_shapes(state: Dict[str, Any]) -> Dict[str, tuple]:
        return {key: tuple(value.shape) for key, value in state.items() if key.startswith("model.") and isinstance(value, torch.Tensor)}

    saved = checkpoint.get("state_dict", {})
    mismatch = weights_difference(model_shapes(saved), model_shapes(module.state_dict()), "checkpoint") if saved else None
    if mismatch is None:
        return
    config = getattr(module, "config", None)
    differences = network_differences(recorded_model_config(checkpoint), None if config is None else config.get("model"))
    fix = (
        f"The model settings differ: {describe(differences)}. {fix_for(differences)}" if differences else
        "Fix: use the model config (model=..., model.d_model, model.num_layers, model.nhead, ...) "
        "the checkpoint was trained with"
    )
    raise ValueError(f"The checkpoint is for another model size: {mismatch}. {fix}.")


def check_model_only_weights(model: torch.nn.Module, cfg: Any) -> None:
    """Before xlm-core loads a model-only weights file named in ``cfg`` (:data:`MODEL_ONLY_KEYS`;
    it would fail with the library's words, naming neither file nor key): raise ``ValueError`` if
    it cannot be read or does not fit ``model`` (another shape; with ``strict_model_only_load``,
    missing or extra weights). A safetensors file is read from its header. Paths that are unset
    or not files are left to xlm-core's messages; sharded safetensors (``*.index.json``) are not checked."""
    strict = OmegaConf.select(cfg, "strict_model_only_load", default=True) is not False
    own = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    for key in MODEL_ONLY_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if is_unset(value) or not Path(str(value)).is_file() or str(value).endswith(".json"):
            continue
        path = Path(str(value))
        try:
            lightning, saved = weight_shapes(path)
        except CheckpointError as error:
            raise ValueError(
                f"{key}={path} cannot be read as model weights: {error}. It is truncated, corrupt or not a "
                f"weights file. Fix: pass the model.safetensors (or .pt/.bin state dict) written by "
                f"save_pretrained / extract_checkpoint again, or another file"
            ) from error
        if lightning:
            raise ValueError(
                f"{key}={path} is a Lightning checkpoint (it has 'state_dict'), not a model-only state dict; a "
                f"checkpoint goes to ckpt_path (+eval.ckpt_path, +generation.ckpt_path, resume_checkpoint_path)"
            )
        difference = weights_difference(saved, own, "file", strict)
        if difference is not None:
            raise ValueError(
                f"{key}={path} does not fit the configured model: {difference}"
                + ("; strict_model_only_load=false loads the common ones" if set(saved) != set(own) else "")
                + ". Fix: use the model config (model=..., model.d_model, model.num_layers, ...) the weights "
                "were made with, or weights made for this one"
            )


class ARLMHarness(Harness):
    """``xlm.harness.Harness`` plus :func:`check_model_covers_tokenizer` when the model is built;
    whenever a checkpoint is loaded (resume, eval, generate) :meth:`check_checkpoint` (vocabulary,
    shapes, network settings, EMA weights, resume step), and on resume
    :func:`arlm.runtime.resume.reconcile_learning_rate`. ``load_from_checkpoint`` reads with
    ``weights_only=True`` (:func:`arlm.runtime.checkpoint_io.load_newest_valid`), never with pickle,
    and builds the module from the command's config, never from the checkpoint's; a NaN/Inf
    loss stops training with :class:`arlm.runtime.stopped_run.NonFiniteLossError` naming what to change, and
    a checkpoint saved after it (``on_exception.ckpt``) is marked so that resuming skips it.
    :meth:`apply_checkpoint_ema` and a CPU-safe :meth:`from_checkpoint` serve the jobs. On the
    CPU, fp32 matmuls are exact again (:mod:`arlm.runtime.cpu_precision`) once Lightning has placed the
    module, for every stage."""

    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path: Any, map_location: Any = None, *, strict: Optional[bool] = None, **kwargs: Any
    ) -> "ARLMHarness":
        """Lightning's ``load_from_checkpoint`` without unpickling: the file is read by
        :func:`arlm.runtime.checkpoint_io.load_newest_valid` (``weights_only=True``, the newest
        valid checkpoint beside an unusable automatic one), onto ``map_location`` (default CPU).

        Lightning 2.5 reads with ``weights_only=False`` and takes no argument to change that, so
        the module is built here as Lightning builds it, from the command's config: ``cls(cfg=cfg,
        **kwargs)`` (every xlm-core job passes its composed ``cfg``; the config the checkpoint
        records is only compared with it, :meth:`check_checkpoint`, never instantiated), then
        ``configure_model``, ``on_load_checkpoint`` (:meth:`check_checkpoint` naming the file, EMA)
        and ``load_state_dict``, then moved to the device of the loaded weights. ``strict``
        defaults to ``strict_loading``.

        Raises:
            TypeError: no ``cfg`` was given.
        """
        if kwargs.get("cfg") is None:
            raise TypeError(
                f"{cls.__name__}.load_from_checkpoint({checkpoint_path!r}) needs cfg=<the composed config of "
                f"the command>: the module is built from it, never from the _target_s a checkpoint records"
            )
        loaded_path, checkpoint = load_newest_valid(checkpoint_path, map_location or "cpu")
        module = cls(**kwargs)
        module.configure_model()
        module.check_checkpoint(checkpoint, loaded_path)
        Harness.on_load_checkpoint(module, checkpoint)
        state_dict = checkpoint["state_dict"]
        strict = module.strict_loading if strict is None else strict
        keys = module.load_state_dict(state_dict, strict=strict)
        if keys.missing_keys or keys.unexpected_keys:
            log.warning(
                f"{checkpoint_path}: weights of the model missing from the checkpoint {keys.missing_keys}, "
                f"weights of the checkpoint the model lacks {keys.unexpected_keys}"
            )
        device = next((value.device for value in state_dict.values() if isinstance(value, torch.Tensor)), None)
        return module if device is None else module.to(device)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        exact_fp32_matmul_on_cpu(self.trainer.strategy.root_device)
        hook = OmegaConf.select(self.config, "trainer.strategy.ddp_comm_hook")
        if stage == "fit" and hook and self.trainer.is_global_zero and self.trainer.strategy.root_device.type != "cuda":
            log.warning("trainer.strategy.ddp_comm_hook (trainer_strategy=ddp_multinode: PowerSGD, fp16 compression) needs "
                        "CUDA: Lightning registers DDP communication hooks on CUDA only, so this run trains with plain DDP")

    def configure_model(self) -> None:
        """xlm-core's ``configure_model``, then, under ``trainer_strategy=fsdp2`` (a device mesh:
        Lightning's ``ModelParallelStrategy``), the decoder sharded with FSDP2
        (:func:`arlm.runtime.fsdp2_sharding.shard_decoder`: each layer and the root, the mixed
        precision policy of the trainer's precision on CUDA, the strategy's
        ``activation_checkpointing``). Anywhere else (no trainer, DDP, one device) nothing more."""
        super().configure_model()
        mesh = self.device_mesh
        if mesh is None:
            return
        strategy = self.trainer.strategy
        policy = mixed_precision_policy(self.trainer.precision, strategy.root_device)
        checkpointing = bool(getattr(strategy, "activation_checkpointing", False))
        shard_decoder(self.model, mesh["data_parallel"], policy, checkpointing)

    def on_validation_end(self) -> None:
        """Under FSDP2, the gathered copies of the evaluated weights dropped (after the EMA callback
        has put the training weights back: :func:`arlm.runtime.fsdp2_sharding.release_gathered`)."""
        release_gathered(self)

    def on_test_end(self) -> None:
        release_gathered(self)

    def on_predict_end(self) -> None:
        super().on_predict_end()
        release_gathered(self)

    def configure_callbacks(self) -> List[Callback]:
        """xlm-core's ``OnExceptionCheckpoint`` replaced by :class:`arlm.runtime.stopped_run.StoppedRunCheckpoint`,
        its ``EMACallback`` by :class:`arlm.runtime.step_speed.ForeachEMACallback` (the same averages),
        and :class:`arlm.runtime.final_checkpoint.FinalCheckpoint` added (a checkpoint of the last step)."""
        replaced = replace_on_exception_checkpoint(self.trainer.callbacks) + replace_ema_callback(self.trainer.callbacks)
        return replaced + [FinalCheckpoint()]

    def configure_optimizers(self) -> Any:
        """xlm-core's optimizer and schedule, Adam/AdamW on their fused (or, under mixed
        precision, foreach) kernel unless the config chose one (:func:`arlm.runtime.step_speed.with_fused_kernel`;
        the saved hyper-parameters are unchanged)."""
        configured = self.config.optimizer
        self.config.optimizer = with_fused_kernel(configured, self.trainer.precision, self.device)
        try:
            return super().configure_optimizers()
        finally:
            self.config.optimizer = configured

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Log xlm-core's ``Total gradient (norm)`` (the 2-norm of all gradients before clipping),
        computed in one foreach reduction rather than one norm and one host read per parameter."""
        norm = total_gradient_norm(self.parameters(), gathered=True)
        if norm is not None:
            self.log(
                "Total gradient (norm)", norm, on_step=True, on_epoch=False, prog_bar=False, sync_dist=False,
                rank_zero_only=True, logger=True, add_dataloader_idx=False,
            )

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().training_step(*args, **kwargs)
        except RuntimeError as error:
            if is_non_finite_loss_error(error):
                self.non_finite_stop = NonFiniteLossError.from_harness(self, error)
                raise self.non_finite_stop from error
            raise

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[WORLD_SIZE_KEY] = self.trainer.world_size
        if getattr(self, "non_finite_stop", None) is not None:
            checkpoint[NON_FINITE_STOP_KEY] = str(self.non_finite_stop)

    def instantiate_model(self) -> None:
        super().instantiate_model()
        check_model_covers_tokenizer(self.model, self.tokenizer)
        check_model_only_weights(self.model, self.config)

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        self.check_checkpoint(checkpoint, self._trainer.ckpt_path if self._trainer is not None else None)
        if self._trainer is not None and self.trainer.state.fn == "fit":
            reconcile_learning_rate(checkpoint, self.config)
            drop_other_sampler_position(checkpoint, self.trainer.ckpt_path)
        super().on_load_checkpoint(checkpoint)

    def check_checkpoint(self, checkpoint: Dict[str, Any], path: Optional[Union[str, Path]]) -> None:
        """Refuse, naming ``path``, a checkpoint this module cannot load as its own: another
        vocabulary (:func:`check_checkpoint_vocabulary`), other weight shapes
        (:func:`check_state_dict_shapes`), another network
        (:func:`arlm.checkpoints.network.check_same_network`), other data (another seed or
        tokenizer, :func:`arlm.checkpoints.data_recipe.check_same_data`); under a Trainer, NaN/Inf EMA
        weights that its EMA callback would restore, and on resume a step past ``trainer.max_steps``
        (:func:`arlm.runtime.resume.check_resume_step`) or another number of ranks
        (:func:`arlm.runtime.resume.check_resume_world_size`)."""
        source = "The checkpoint" if path is None else str(path)
        check_checkpoint_vocabulary(checkpoint.get("state_dict", {}), self.model, self.tokenizer)
        check_state_dict_shapes(checkpoint, self)
        check_same_network(recorded_model_config(checkpoint), self.config.get("model"), source)
        check_same_data(checkpoint.get("hyper_parameters"), self.config, source)
        if self._trainer is None:
            return
        resuming = self.trainer.state.fn == "fit"
        bad_ema = non_finite_ema(checkpoint)
        if bad_ema is not None and any(isinstance(callback, EMACallback) for callback in self.trainer.callbacks):
            fix = (
                "resume from an earlier checkpoint (resume_checkpoint_path=...), or leave resume_checkpoint_path "
                "out: resuming then skips checkpoints with NaN/Inf weights" if resuming else
                "evaluate its raw weights with callbacks.ema=null, or pass another checkpoint"
            )
            raise CheckpointError(
                f"{source} holds NaN/Inf EMA weights ({bad_ema}), which the EMA callback would "
                f"{'train on from' if resuming else 'evaluate'}; a run that diverged wrote them. Fix: {fix}"
            )
        if resuming:
            check_resume_step(checkpoint, self.trainer.max_steps, source)
            check_resume_world_size(checkpoint, self.trainer.world_size, source)

    def apply_checkpoint_ema(self, checkpoint_path: Union[str, Path]) -> None:
        """Overwrite the parameters with the EMA weights stored in ``checkpoint_path``.

        Call it after the checkpoint's own weights are loaded: Lightning's
        ``load_from_checkpoint`` runs ``on_load_checkpoint`` (where xlm-core's
        ``manual_ema_restore`` copies the EMA weights) *before* ``load_state_dict``, which then
        puts the raw weights back. The file is read as ``load_from_checkpoint`` reads it (weights
        only, the same fallback). Raises ``ValueError`` naming the file when it has no EMA state
        or its EMA weights hold NaN/Inf.
        """
        checkpoint = load_newest_valid(checkpoint_path)[1]
        bad = non_finite_ema(checkpoint)
        if bad is not None:
            raise CheckpointError(
                f"the EMA weights of {checkpoint_path} hold NaN/Inf ({bad}); a run that diverged wrote them. "
                f"Fix: use its raw weights with +generation.use_ema=false, or pass another checkpoint"
            )
        copy_ema_weights(
            self, checkpoint.get("ema"), checkpoint_path, fix="use its raw weights with +generation.use_ema=false."
        )

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint_path: Union[str, Path],
        *args: Any,
        apply_ema: bool = False,
        map_location: str = "cpu",
        **kwargs: Any,
    ) -> Harness:
        """``Harness.from_checkpoint`` (xlm-core's ``push_to_hub`` and ``extract_checkpoint``) with
        the EMA weights read by :meth:`apply_checkpoint_ema` (weights only) instead of xlm-core's
        pickle load, and onto the CPU when ``map_location`` names CUDA and this machine has none
        (``push_to_hub`` asks for ``"cuda"`` unconditionally)."""
        if "cuda" in str(map_location) and not torch.cuda.is_available():
            map_location = "cpu"
        harness = super().from_checkpoint(
            checkpoint_path, *args, apply_ema=False, map_location=map_location, **kwargs
        )
        if apply_ema:
            harness.apply_checkpoint_ema(checkpoint_path)
        return harness
