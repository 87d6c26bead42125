"""Export an xLM ``arlm`` checkpoint as a Hugging Face directory (config.json, model.safetensors,
tokenizer files) that ``AutoModelForCausalLM`` / ``AutoTokenizer`` / ``pipeline`` load.

Both faces are the same :class:`~arlm.network.decoder.DecoderStack` with the same parameter names: the
xLM model is rebuilt from its recorded constructor arguments and its state dict loaded as it is
into an :class:`ArlowForCausalLM`. With ``architecture="auto"`` (default) that network is then
written as ``LlamaForCausalLM`` or ``GPTNeoXForCausalLM`` when one expresses it exactly
(:mod:`arlm.hf.native_export`), so the directory loads without arlm in any ``transformers``;
otherwise as ``ArlowForCausalLM`` (loads after ``import arlm``). ``"native"`` insists on the
former, ``"arlow"`` on the latter. The tokenizer is always a plain ``PreTrainedTokenizerFast``
(left padding), which ``AutoTokenizer`` loads without arlm.

The directory is written safely: the checkpoint is read with ``torch.load(weights_only=True)``
(a pickle cannot run code), the tokenizer is converted before anything is written, everything is
written into a temporary directory beside ``output_dir`` and renamed into place
(:func:`arlm.runtime.atomic_files.write_directory_atomically`: files get the permissions of a
plain ``save_pretrained`` under the umask, temporaries of exports killed earlier are removed), and
an existing file, symbolic link or non-empty directory is replaced only with ``overwrite=True``.
Of two exports racing into one new directory, one succeeds and the other raises.

Python: :func:`export_checkpoint_to_hf`. The xLM job type ``xlm job_type=export_hf`` that calls it
is :mod:`arlm.jobs.export_hf`, so that this module imports without xlm-core and Hydra.
"""

import copy
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from arlm.runtime.atomic_files import TargetExistsError, occupant, write_directory_atomically
from arlm.runtime.checkpoint_load import copy_ema_weights, load_safely
from arlm.runtime.network_match import warn_if_other_network
from arlm.hf.configuration_arlow import ArlowConfig
from arlm.hf.modeling_arlow import ArlowForCausalLM
from arlm.hf.native_export import native_blocker, to_native
from arlm.model_arlm import RotaryTransformerARLMModel

PathLike = Union[str, Path]
XLM_MODEL_TARGET = "arlm.model_arlm.RotaryTransformerARLMModel"
LIGHTNING_MODEL_PREFIX = "model."
TOKENIZER_INTERPOLATION = re.compile(r"\$\{tokenizer:(\w+)\}")
ARCHITECTURES = ("auto", "native", "arlow")
SPECIAL_TOKEN_NAMES = ("pad_token", "bos_token", "eos_token", "unk_token", "mask_token", "cls_token", "sep_token")


def export_checkpoint_to_hf(
    checkpoint_path: PathLike,
    output_dir: PathLike,
    tokenizer: Optional[PreTrainedTokenizerBase] = None,
    model_config: Optional[Mapping[str, Any]] = None,
    apply_ema: Optional[bool] = None,
    architecture: str = "auto",
    overwrite: bool = False,
) -> PreTrainedModel:
    """Write ``output_dir`` and return the exported model (its class says which architecture).

    Args:
        checkpoint_path: a Lightning checkpoint written by ``xlm job_type=train`` (``.ckpt``: the
            model under ``state_dict["model.*"]``, its constructor arguments under
            ``hyper_parameters["model"]``, EMA weights under ``ema``), or model-only weights
            (``.safetensors`` / torch file, keys ``model.embed_tokens.weight`` ... ``lm_head.weight``).
        tokenizer: the xLM tokenizer, saved as a ``PreTrainedTokenizerFast``; its special token
            ids go into the config (``bos/eos_token_id``). ``None``: no tokenizer files.
        model_config: ``RotaryTransformerARLMModel`` arguments (the ``model:`` node); needed only
            when the checkpoint does not record them (model-only weights). The recorded network
            is the one exported; a ``model_config`` describing another one gets a warning
            naming the differences (:func:`arlm.runtime.network_match.warn_if_other_network`).
        apply_ema: use the EMA weights; default: when the checkpoint has them (as xLM's
            ``extract_checkpoint`` does).
        architecture: ``"auto"`` (native when exact, else Arlow), ``"native"`` or ``"arlow"``.
        overwrite: replace an existing ``output_dir`` (file or non-empty directory).

    Raises:
        ValueError: bad ``architecture``; ``output_dir`` exists (or another export wrote it
            meanwhile) and ``overwrite`` is False; the
            file is not a weights-only ``arlm`` checkpoint (another model, unexpected keys, a
            pickle that needs code); EMA weights were asked for and are missing or do not fit;
            ``architecture="native"`` for a network with no exact native twin; a tokenizer that
            cannot be converted. Nothing is written in any of these cases.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    checkpoint_path, output_dir = Path(checkpoint_path), Path(output_dir)
    _check_output_dir(output_dir, overwrite)
    hf_tokenizer = None if tokenizer is None else hf_tokenizer_from(tokenizer)
    state_dict, recorded_config, ema = _read_checkpoint(checkpoint_path)
    warn_if_other_network(recorded_config, model_config, checkpoint_path)
    kwargs = _xlm_model_kwargs(recorded_config or model_config, checkpoint_path)
    if recorded_config is not None:
        kwargs = _fill_placeholders(kwargs, tokenizer, model_config, checkpoint_path)
    xlm_model = RotaryTransformerARLMModel(**kwargs)
    _load_xlm_state_dict(xlm_model, state_dict, checkpoint_path)
    if apply_ema is None:
        apply_ema = ema is not None
    if apply_ema:
        copy_ema_weights(xlm_model, ema, checkpoint_path, fix="use apply_ema=False")
    hf_model = choose_architecture(xlm_to_hf(xlm_model, tokenizer), architecture)
    _write_into_place(output_dir, hf_model, hf_tokenizer, overwrite)
    return hf_model


def choose_architecture(arlow: ArlowForCausalLM, architecture: str) -> PreTrainedModel:
    """``arlow`` itself or its native twin, per ``architecture`` (see :data:`ARCHITECTURES`)."""
    if architecture == "arlow":
        return arlow
    blocker = native_blocker(arlow.config)
    if blocker is None:
        return to_native(arlow)
    if architecture == "native":
        raise ValueError(
            f"architecture='native': this network has no exact native transformers twin because "
            f"{blocker}; export it with architecture='arlow' or 'auto'"
        )
    return arlow


def describe_architecture(model: PreTrainedModel) -> str:
    """``"GPTNeoXForCausalLM (native: loads without arlm)"`` or Arlow's reason it is not native."""
    name = type(model).__name__
    if isinstance(model, ArlowForCausalLM):
        blocker = native_blocker(model.config)
        why = "chosen" if blocker is None else f"no native twin: {blocker}"
        return f"{name} (Arlow, loads after `import arlm`; {why})"
    return f"{name} (native: loads without arlm)"


def xlm_to_hf(
    xlm_model: RotaryTransformerARLMModel, tokenizer: Optional[PreTrainedTokenizerBase] = None
) -> ArlowForCausalLM:
    """The same network as an ``ArlowForCausalLM``: identical state dict, identical logits."""
    token_ids = {}
    if tokenizer is not None:
        token_ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = ArlowConfig.from_decoder_config(xlm_model.config, **token_ids)
    hf_model = ArlowForCausalLM(config)
    hf_model.load_state_dict(xlm_model.state_dict(), strict=True)
    return hf_model.eval()


def hf_tokenizer_from(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerFast:
    """The xLM tokenizer as a plain ``PreTrainedTokenizerFast``: same ids, same special tokens,
    left padding; ``AutoTokenizer`` loads what it saves without arlm.

    Fast tokenizers (e.g. ``load_auto_tokenizer``'s, ``ArlowTokenizerFast``) keep their
    ``tokenizers`` backend; xlm-core's ``SimpleSpaceTokenizer`` (space-separated words, no
    ``save_pretrained``) becomes a word-level ``tokenizers`` model over its vocabulary.

    Raises:
        ValueError: another kind of tokenizer, or a special token that is not in its vocabulary.
    """
    if isinstance(tokenizer, PreTrainedTokenizerFast):
        backend = copy.deepcopy(tokenizer.backend_tokenizer)
    elif _is_space_separated_word_tokenizer(tokenizer):
        backend = Tokenizer(models.WordLevel(vocab=tokenizer.get_vocab(), unk_token=tokenizer.unk_token))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    else:
        raise ValueError(
            f"cannot convert a {type(tokenizer).__name__} to a PreTrainedTokenizerFast: expected a "
            "PreTrainedTokenizerFast or xlm-core's SimpleSpaceTokenizer"
        )
    vocab = tokenizer.get_vocab()
    specials = {}
    for name in SPECIAL_TOKEN_NAMES:
        token = getattr(tokenizer, name, None)
        if token is None:
            continue
        if str(token) not in vocab:
            raise ValueError(
                f"the tokenizer's {name} {str(token)!r} is not in its vocabulary; it would get a "
                "new id past the model's embeddings"
            )
        specials[name] = str(token)
    converted = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        clean_up_tokenization_spaces=False,
        padding_side="left",
        model_input_names=["input_ids", "attention_mask"],
        **specials,
    )
    if len(converted) != len(tokenizer):
        raise ValueError(
            f"converting the {type(tokenizer).__name__} changed its size from {len(tokenizer)} to "
            f"{len(converted)} tokens"
        )
    return converted


def _check_output_dir(output_dir: Path, overwrite: bool) -> None:
    kind = None if overwrite else occupant(output_dir)
    if kind is not None:
        raise _refusal(output_dir, kind)


def _refusal(output_dir: Path, kind: str) -> ValueError:
    return ValueError(
        f"output_dir {output_dir} {kind}; choose a new directory or pass overwrite=True "
        "(+export_hf.overwrite=true) to replace it"
    )


def _write_into_place(
    output_dir: Path, model: PreTrainedModel, tokenizer: Optional[PreTrainedTokenizerFast], overwrite: bool
) -> None:
    """Save into a temporary directory beside ``output_dir`` and rename it into place
    (:func:`arlm.runtime.atomic_files.write_directory_atomically`)."""

    def save(staging: Path) -> None:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)

    try:
        write_directory_atomically(output_dir, save, replace=overwrite)
    except TargetExistsError as error:
        if error.while_writing:
            raise ValueError(
                f"output_dir {output_dir} was written by another export while this one ran; that "
                f"export was kept and this one discarded. Fix: choose a new directory or pass "
                f"overwrite=True (+export_hf.overwrite=true) to replace it"
            ) from None
        raise _refusal(output_dir, error.kind) from None


def _read_checkpoint(path: Path) -> Tuple[dict, Optional[Mapping[str, Any]], Optional[dict]]:
    """``(model state dict without the Harness prefix, recorded model config, EMA state)``, read
    as training reads checkpoints (:func:`arlm.runtime.checkpoint_load.load_safely`: weights only)."""
    if path.suffix == ".safetensors" and path.is_file():
        return load_file(str(path)), None, None
    checkpoint = load_safely(path)
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


def _is_space_separated_word_tokenizer(tokenizer: PreTrainedTokenizerBase) -> bool:
    try:
        from xlm.datamodule import SimpleSpaceTokenizer
    except ImportError:  # the Hugging Face face installed without xlm-core
        return False
    return isinstance(tokenizer, SimpleSpaceTokenizer)
