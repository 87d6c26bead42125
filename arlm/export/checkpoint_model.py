"""The model a checkpoint holds, as the export needs it: an ``ArlowForCausalLM`` with the
checkpoint's weights (raw or EMA), refused when a weight is NaN or Inf.

The network is the one the checkpoint records: its ``model:`` node, read as data into the
:class:`~arlm.network.config.DecoderConfig` it describes by the xLM face's own mapping
(:func:`arlm.model_arlm.decoder_config_of`), whose ``${tokenizer:...}`` values (xlm-core saves
the config under dummy resolvers) come from the run's tokenizer. Model-only weights record no
network: the ``model_config`` given describes it. Nothing a checkpoint names is called; no
weight is drawn at random (:func:`empty_model`), the state dict is loaded as it is.
"""

import re
from typing import Any, Dict, Mapping, Optional, Type

import torch
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from arlm.checkpoints.checks import copy_ema_weights, first_non_finite, weights_difference
from arlm.checkpoints.read import Checkpoint
from arlm.hf.configuration_arlow import ArlowConfig
from arlm.hf.modeling_arlow import ArlowForCausalLM
from arlm.model_arlm import XLM_MODEL_TARGET, decoder_config_of

try:  # transformers 5
    from transformers.initialization import no_init_weights
except ImportError:  # transformers 4
    from transformers.modeling_utils import no_init_weights

TOKENIZER_INTERPOLATION = re.compile(r"\$\{tokenizer:(\w+)\}")


def empty_model(model_class: Type[PreTrainedModel], config: PretrainedConfig) -> PreTrainedModel:
    """``model_class(config)`` with its weights allocated but not drawn (transformers'
    ``no_init_weights``) and tied as ``config`` says: a model for a state dict to be loaded into."""
    with no_init_weights():
        model = model_class(config)
    model.tie_weights()
    return model


def arlow_with_weights(
    config: ArlowConfig, state_dict: Mapping[str, torch.Tensor], source: Any
) -> ArlowForCausalLM:
    """The ``ArlowForCausalLM`` of ``config`` holding ``state_dict`` (keys as its own), in eval
    mode; ``ValueError`` naming ``source`` when the keys or shapes do not fit."""
    model = empty_model(ArlowForCausalLM, config)
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    difference = weights_difference({key: tuple(value.shape) for key, value in state_dict.items()}, shapes, "checkpoint")
    if difference is not None:
        raise ValueError(f"{source} is not an arlm checkpoint for this configuration: {difference}")
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def checkpoint_arlow(
    checkpoint: Checkpoint,
    tokenizer: Optional[PreTrainedTokenizerBase],
    model_config: Optional[Mapping[str, Any]],
    apply_ema: bool,
) -> ArlowForCausalLM:
    """The checkpoint's network with its weights (EMA shadows copied in when ``apply_ema``).

    Raises:
        ValueError: no recorded or given ``model_config``; another model than arlm's; keys that do
            not fit the configuration; unresolved ``${...}`` arguments; EMA weights asked for and
            missing or not fitting; a NaN or Inf weight (:func:`check_finite_weights`).
    """
    arguments = _model_arguments(checkpoint.model_config or model_config, checkpoint)
    if checkpoint.model_config is not None:
        arguments = _fill_placeholders(arguments, tokenizer, model_config, checkpoint)
    token_ids = {} if tokenizer is None else dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = ArlowConfig.from_decoder_config(decoder_config_of(arguments), **token_ids)
    model = arlow_with_weights(config, checkpoint.weights, checkpoint.path)
    if apply_ema:
        copy_ema_weights(model, checkpoint.get("ema"), checkpoint.path, fix="use apply_ema=False")
    check_finite_weights(model, checkpoint, apply_ema)
    return model


def check_finite_weights(model: torch.nn.Module, checkpoint: Checkpoint, used_ema: bool) -> None:
    """Refuse a model with a NaN or Inf tensor, naming the file, the first bad tensor, whose
    weights (EMA or raw) hold it, and the fix."""
    bad = first_non_finite(model.state_dict().items())
    if bad is None:
        return
    name, count, total = bad
    if used_ema and first_non_finite(checkpoint.weights.items()) is None:
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
        f"{checkpoint.path}: {which} hold NaN or Inf values, first in tensor {name!r} ({count} of "
        f"{total} values); nothing was exported. Fix: {fix}"
    )


def _model_arguments(model_config: Optional[Mapping[str, Any]], checkpoint: Checkpoint) -> Dict[str, Any]:
    if model_config is None:
        raise ValueError(
            f"{checkpoint.path} does not record its model configuration; pass model_config (the xLM "
            "`model:` node of the run) to export model-only weights"
        )
    target = model_config.get("_target_")
    if target != XLM_MODEL_TARGET:
        raise ValueError(
            f"{checkpoint.path} is not an arlm checkpoint: its model is {target!r}, expected {XLM_MODEL_TARGET!r}"
        )
    return {key: value for key, value in model_config.items() if not key.startswith("_")}


def _tokenizer_value(tokenizer: PreTrainedTokenizerBase, attribute: str) -> Any:
    """``tokenizer.<attribute>``; for xLM's ``full_vocab_size``, which a plain transformers
    tokenizer lacks, the number of ids it can emit (``len(tokenizer)``, added tokens included)."""
    value = getattr(tokenizer, attribute, None)
    if value is None and attribute == "full_vocab_size":
        return len(tokenizer)
    return value


def _fill_placeholders(
    arguments: Dict[str, Any],
    tokenizer: Optional[PreTrainedTokenizerBase],
    model_config: Optional[Mapping[str, Any]],
    checkpoint: Checkpoint,
) -> Dict[str, Any]:
    """Values the Harness recorded as literal interpolations: ``${tokenizer:attr}`` read from
    ``tokenizer``, any other interpolation from ``model_config``."""
    filled = dict(arguments)
    for key, value in arguments.items():
        if not (isinstance(value, str) and value.startswith("${")):
            continue
        match = TOKENIZER_INTERPOLATION.fullmatch(value)
        if match and tokenizer is not None and _tokenizer_value(tokenizer, match.group(1)) is not None:
            filled[key] = _tokenizer_value(tokenizer, match.group(1))
        elif model_config is not None and key in model_config:
            filled[key] = model_config[key]
        else:
            raise ValueError(
                f"{checkpoint.path} records model argument {key}={value!r} unresolved; pass the run's "
                "tokenizer (or model_config) to export_checkpoint_to_hf"
            )
    return filled
