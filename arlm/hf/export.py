"""Export an xLM ``arlm`` checkpoint as a Hugging Face directory (config.json, model.safetensors,
tokenizer files) that ``AutoModelForCausalLM`` / ``AutoTokenizer`` load after ``import arlm``.

Both faces are the same :class:`~arlm.decoder.DecoderStack` with the same parameter names, so the
conversion is a key mapping with no arithmetic: strip the Harness's ``model.`` prefix, rebuild
the xLM model from its recorded constructor arguments, and load its state dict as it is into an
:class:`ArlowForCausalLM` whose config comes from the same :class:`~arlm.decoder.DecoderConfig`.

Python: :func:`export_checkpoint_to_hf`. xLM job type (``configs/commands.yaml``)::

    xlm job_type=export_hf experiment=star_easy_arlm \
        +export_hf.checkpoint_path=<run>/checkpoints/last.ckpt +export_hf.output_dir=<dir>
"""

import copy
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from arlm.hf.configuration_arlow import ArlowConfig
from arlm.hf.modeling_arlow import ArlowForCausalLM
from arlm.hf.tokenization_arlow import DEFAULT_SPECIAL_TOKENS, ArlowTokenizerFast
from arlm.model_arlm import RotaryTransformerARLMModel

PathLike = Union[str, Path]
XLM_MODEL_TARGET = "arlm.model_arlm.RotaryTransformerARLMModel"
LIGHTNING_MODEL_PREFIX = "model."
TOKENIZER_INTERPOLATION = re.compile(r"\$\{tokenizer:(\w+)\}")


def export_checkpoint_to_hf(
    checkpoint_path: PathLike,
    output_dir: PathLike,
    tokenizer: Optional[PreTrainedTokenizerBase] = None,
    model_config: Optional[Mapping[str, Any]] = None,
    apply_ema: Optional[bool] = None,
) -> ArlowForCausalLM:
    """Write ``output_dir`` and return the exported model.

    Args:
        checkpoint_path: a Lightning checkpoint written by ``xlm job_type=train`` (``.ckpt``: the
            model under ``state_dict["model.*"]``, its constructor arguments under
            ``hyper_parameters["model"]``, EMA weights under ``ema``), or model-only weights
            (``.safetensors`` / torch pickle, keys ``model.embed_tokens.weight`` ... ``lm_head.weight``).
        tokenizer: the xLM tokenizer, saved as an :class:`ArlowTokenizerFast`; its special token
            ids go into the config (``bos/eos/pad_token_id``). ``None``: no tokenizer files.
        model_config: ``RotaryTransformerARLMModel`` arguments (the ``model:`` node); needed only
            when the checkpoint does not record them (model-only weights).
        apply_ema: use the EMA weights; default: when the checkpoint has them (as xLM's
            ``extract_checkpoint`` does).

    Raises:
        ValueError: the file is not an ``arlm`` checkpoint (another model, unexpected keys), or
            EMA weights were asked for and are missing or do not fit.
    """
    checkpoint_path = Path(checkpoint_path)
    state_dict, recorded_config, ema = _read_checkpoint(checkpoint_path)
    kwargs = _xlm_model_kwargs(recorded_config or model_config, checkpoint_path)
    if recorded_config is not None:
        kwargs = _fill_placeholders(kwargs, tokenizer, model_config, checkpoint_path)
    xlm_model = RotaryTransformerARLMModel(**kwargs)
    _load_xlm_state_dict(xlm_model, state_dict, checkpoint_path)
    if apply_ema is None:
        apply_ema = ema is not None
    if apply_ema:
        _copy_ema_weights(xlm_model, ema, checkpoint_path)
    hf_model = xlm_to_hf(xlm_model, tokenizer)
    output_dir = Path(output_dir)
    hf_model.save_pretrained(output_dir)
    if tokenizer is not None:
        arlow_tokenizer_from(tokenizer).save_pretrained(output_dir)
    return hf_model


def xlm_to_hf(
    xlm_model: RotaryTransformerARLMModel, tokenizer: Optional[PreTrainedTokenizerBase] = None
) -> ArlowForCausalLM:
    """The same network as an ``ArlowForCausalLM``: identical state dict, identical logits."""
    tied = xlm_model.lm_head.weight is xlm_model.model.embed_tokens.weight
    token_ids = {}
    if tokenizer is not None:
        token_ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = ArlowConfig.from_decoder_config(xlm_model.config, tie_word_embeddings=tied, **token_ids)
    hf_model = ArlowForCausalLM(config)
    hf_model.load_state_dict(xlm_model.state_dict(), strict=True)
    return hf_model.eval()


def arlow_tokenizer_from(tokenizer: PreTrainedTokenizerBase) -> ArlowTokenizerFast:
    """The xLM tokenizer as an :class:`ArlowTokenizerFast` with the same ids and special tokens.

    Fast tokenizers (e.g. ``load_auto_tokenizer``'s) keep their ``tokenizers`` backend; xlm-core's
    ``SimpleSpaceTokenizer`` (space-separated words, no ``save_pretrained``) becomes a word-level
    ``tokenizers`` model over its vocabulary.
    """
    specials = {name: None for name in DEFAULT_SPECIAL_TOKENS}
    specials.update(tokenizer.special_tokens_map)
    if isinstance(tokenizer, PreTrainedTokenizerFast):
        backend = copy.deepcopy(tokenizer.backend_tokenizer)
    elif _is_space_separated_word_tokenizer(tokenizer):
        backend = Tokenizer(models.WordLevel(vocab=tokenizer.get_vocab(), unk_token=tokenizer.unk_token))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    else:
        raise ValueError(
            f"cannot convert a {type(tokenizer).__name__} to ArlowTokenizerFast: expected a "
            "PreTrainedTokenizerFast or xlm-core's SimpleSpaceTokenizer"
        )
    return ArlowTokenizerFast(
        tokenizer_object=backend, clean_up_tokenization_spaces=False, **specials
    )


def export_hf_job(cfg: Any) -> None:
    """xLM custom job ``export_hf``: ``cfg.export_hf.{checkpoint_path, output_dir[, apply_ema]}``;
    the tokenizer is ``cfg.global_components.tokenizer`` and, for model-only weights, the network
    is ``cfg.model``."""
    import hydra
    from omegaconf import OmegaConf

    options = cfg.get("export_hf")
    if options is None or options.get("checkpoint_path") is None or options.get("output_dir") is None:
        raise ValueError(
            "export_hf needs +export_hf.checkpoint_path=<.ckpt or weights> and "
            "+export_hf.output_dir=<directory>"
        )
    tokenizer = hydra.utils.instantiate(cfg.global_components)["tokenizer"]
    OmegaConf.clear_resolver("tokenizer")
    OmegaConf.register_new_resolver("tokenizer", lambda name: getattr(tokenizer, name))
    export_checkpoint_to_hf(
        options.checkpoint_path,
        options.output_dir,
        tokenizer=tokenizer,
        model_config=OmegaConf.to_container(cfg.model, resolve=True),
        apply_ema=options.get("apply_ema"),
    )
    print(f"Exported {options.checkpoint_path} to {options.output_dir}")


def _read_checkpoint(path: Path) -> Tuple[dict, Optional[Mapping[str, Any]], Optional[dict]]:
    """``(model state dict without the Harness prefix, recorded model config, EMA state)``."""
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path)), None, None
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} is not an arlm checkpoint: it holds a {type(checkpoint).__name__}")
    if "state_dict" not in checkpoint:
        return dict(checkpoint), None, None
    hparams = checkpoint.get("hyper_parameters") or {}
    recorded = hparams.get("model")
    state_dict = {
        key[len(LIGHTNING_MODEL_PREFIX):]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(LIGHTNING_MODEL_PREFIX)
    }
    return state_dict, recorded, checkpoint.get("ema")


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


def _copy_ema_weights(model: RotaryTransformerARLMModel, ema: Optional[dict], path: Path) -> None:
    """Copy ``torch_ema`` shadow parameters into the model.

    xlm-core's EMA tracks the Harness's trainable parameters in registration order; the model is
    the Harness's only module with parameters in an arlm run, so the shadows are the model's
    ``parameters()`` in order.
    """
    if ema is None:
        raise ValueError(f"{path} has no EMA weights (checkpoint['ema']); use apply_ema=False")
    params = [p for p in model.parameters() if p.requires_grad]
    shadows = ema["shadow_params"]
    if len(shadows) != len(params) or any(s.shape != p.shape for s, p in zip(shadows, params)):
        raise ValueError(
            f"the EMA weights of {path} ({len(shadows)} tensors) do not match the model's "
            f"{len(params)} trainable parameters; use apply_ema=False"
        )
    with torch.no_grad():
        for param, shadow in zip(params, shadows):
            param.copy_(shadow)


def _is_space_separated_word_tokenizer(tokenizer: PreTrainedTokenizerBase) -> bool:
    from xlm.datamodule import SimpleSpaceTokenizer

    return isinstance(tokenizer, SimpleSpaceTokenizer)
