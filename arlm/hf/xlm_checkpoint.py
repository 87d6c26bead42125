"""An xLM ``arlm`` checkpoint as the Hugging Face export reads it: the network rebuilt with its
weights (raw or EMA), refused when a weight is NaN or Inf, and what the file records of its run.

The file is read as training reads checkpoints (:func:`arlm.runtime.checkpoint_load.load_safely`:
``torch.load(weights_only=True)``, so a pickle cannot run code). A Lightning checkpoint written by
``xlm job_type=train`` holds the model under ``state_dict["model.*"]``, the composed config under
``hyper_parameters`` (resolved under xlm-core's dummy resolvers: tokenizer-dependent values stay
literal ``${tokenizer:...}`` strings), the callbacks' states under ``callbacks`` and torch_ema's
state under ``ema``; model-only weights (``.safetensors`` or a torch file of the state dict) hold
the tensors alone.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerBase

from arlm.model_arlm import RotaryTransformerARLMModel
from arlm.runtime.checkpoint_load import copy_ema_weights, load_safely

XLM_MODEL_TARGET = "arlm.model_arlm.RotaryTransformerARLMModel"
LIGHTNING_MODEL_PREFIX = "model."
TOKENIZER_INTERPOLATION = re.compile(r"\$\{tokenizer:(\w+)\}")


@dataclass(frozen=True)
class CheckpointContents:
    """What one checkpoint file holds. ``hyper_parameters`` and ``callbacks`` are empty, and
    ``global_step`` / ``epoch`` None, for model-only weights."""

    path: Path
    state_dict: Dict[str, torch.Tensor]
    ema: Optional[Mapping[str, Any]] = None
    hyper_parameters: Mapping[str, Any] = field(default_factory=dict)
    callbacks: Mapping[str, Any] = field(default_factory=dict)
    global_step: Optional[int] = None
    epoch: Optional[int] = None

    @property
    def model_config(self) -> Optional[Mapping[str, Any]]:
        """The recorded ``model:`` node (constructor arguments), or None."""
        return self.hyper_parameters.get("model")


def read_checkpoint(path: Path) -> CheckpointContents:
    """Read ``path`` (weights only) without building anything."""
    if path.suffix == ".safetensors" and path.is_file():
        return CheckpointContents(path, load_file(str(path)))
    checkpoint = load_safely(path)
    if "state_dict" not in checkpoint:
        return CheckpointContents(path, dict(checkpoint))
    state_dict = {
        key[len(LIGHTNING_MODEL_PREFIX):]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(LIGHTNING_MODEL_PREFIX)
    }
    return CheckpointContents(
        path,
        state_dict,
        ema=checkpoint.get("ema"),
        hyper_parameters=checkpoint.get("hyper_parameters") or {},
        callbacks=checkpoint.get("callbacks") or {},
        global_step=checkpoint.get("global_step"),
        epoch=checkpoint.get("epoch"),
    )


def rebuild_xlm_model(
    contents: CheckpointContents,
    tokenizer: Optional[PreTrainedTokenizerBase],
    model_config: Optional[Mapping[str, Any]],
    apply_ema: bool,
) -> RotaryTransformerARLMModel:
    """The checkpoint's network with its weights (EMA shadows copied in when ``apply_ema``).

    Raises:
        ValueError: no recorded or given ``model_config``; another model than arlm's; keys that do
            not fit the configuration; unresolved ``${...}`` arguments; EMA weights asked for and
            missing or not fitting; a NaN or Inf weight (:func:`check_finite_weights`).
    """
    path = contents.path
    recorded = contents.model_config
    kwargs = _xlm_model_kwargs(recorded or model_config, path)
    if recorded is not None:
        kwargs = _fill_placeholders(kwargs, tokenizer, model_config, path)
    model = RotaryTransformerARLMModel(**kwargs)
    _load_xlm_state_dict(model, contents.state_dict, path)
    if apply_ema:
        copy_ema_weights(model, contents.ema, path, fix="use apply_ema=False")
    check_finite_weights(model, contents, apply_ema)
    return model.eval()


def check_finite_weights(model: torch.nn.Module, contents: CheckpointContents, used_ema: bool) -> None:
    """Refuse a model with a NaN or Inf tensor, naming the file, the first bad tensor, whose
    weights (EMA or raw) hold it, and the fix."""
    bad = first_non_finite(model.state_dict())
    if bad is None:
        return
    name, count, total = bad
    raw_bad = first_non_finite(contents.state_dict)
    if used_ema and raw_bad is None:
        which = "the EMA weights"
        fix = (
            "only the EMA weights are bad; export the raw weights, which are finite, with "
            "apply_ema=False (+export_hf.apply_ema=false)"
        )
    else:
        which = "the EMA weights (and the raw weights)" if used_ema else "the raw weights"
        fix = (
            "the run diverged before this checkpoint was written; export an earlier checkpoint "
            "of the run (its best.ckpt or an earlier step), or retrain with a lower learning rate"
        )
    raise ValueError(
        f"{contents.path}: {which} hold NaN or Inf values, first in tensor {name!r} ({count} of "
        f"{total} values); nothing was exported. Fix: {fix}"
    )


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> Optional[Tuple[str, int, int]]:
    """``(name, non-finite count, size)`` of the first floating-point tensor holding NaN or Inf."""
    for name, tensor in tensors.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                return name, int((~finite).sum()), tensor.numel()
    return None


def data_directories(contents: CheckpointContents) -> Tuple[Path, ...]:
    """The data cache directories the run recorded (``paths.data_dir``,
    ``datamodule.manual_cache_dir``), for the export never to write into or over them."""
    hparams = contents.hyper_parameters
    found = []
    for section, key in (("paths", "data_dir"), ("datamodule", "manual_cache_dir")):
        value = (hparams.get(section) or {}).get(key)
        if isinstance(value, str) and value and not value.startswith("${"):
            found.append(Path(value))
    return tuple(found)


def _xlm_model_kwargs(model_config: Optional[Mapping[str, Any]], path: Path) -> dict:
    if model_config is None:
        raise ValueError(
            f"{path} does not record its model configuration; pass model_config (the xLM "
            "`model:` node of the run) to export model-only weights"
        )
    target = model_config.get("_target_")
    if target != XLM_MODEL_TARGET:
        raise ValueError(
            f"{path} is not an arlm checkpoint: its model is {target!r}, expected {XLM_MODEL_TARGET!r}"
        )
    return {key: value for key, value in model_config.items() if not key.startswith("_")}


def _fill_placeholders(
    kwargs: dict,
    tokenizer: Optional[PreTrainedTokenizerBase],
    model_config: Optional[Mapping[str, Any]],
    path: Path,
) -> dict:
    """Values the Harness recorded as literal interpolations.

    xlm-core saves ``hyper_parameters`` under dummy resolvers, so tokenizer-dependent arguments
    are stored as the strings ``"${tokenizer:full_vocab_size}"``, ``"${tokenizer:pad_token_id}"``.
    ``${tokenizer:attr}`` is read from ``tokenizer``; any other interpolation from ``model_config``.
    """
    filled = dict(kwargs)
    for key, value in kwargs.items():
        if not (isinstance(value, str) and value.startswith("${")):
            continue
        match = TOKENIZER_INTERPOLATION.fullmatch(value)
        if match and tokenizer is not None:
            filled[key] = getattr(tokenizer, match.group(1))
        elif model_config is not None and key in model_config:
            filled[key] = model_config[key]
        else:
            raise ValueError(
                f"{path} records model argument {key}={value!r} unresolved; pass the run's "
                "tokenizer (or model_config) to export_checkpoint_to_hf"
            )
    return filled


def _load_xlm_state_dict(model: RotaryTransformerARLMModel, state_dict: dict, path: Path) -> None:
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{path} is not an arlm checkpoint for this configuration: missing keys "
            f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected keys "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    model.load_state_dict(state_dict, strict=True)
