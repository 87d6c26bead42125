"""Export an xLM ``arlm`` checkpoint as a Hugging Face directory that ``AutoModelForCausalLM`` /
``AutoTokenizer`` / ``pipeline`` load: ``config.json``, ``model.safetensors``,
``generation_config.json``, the tokenizer files and a model card ``README.md``.

Both faces are the same :class:`~arlm.network.decoder.DecoderStack` with the same parameter names:
the checkpoint's state dict loads as it is into an ``ArlowForCausalLM`` of the network it records
(:mod:`arlm.export.checkpoint_model`). With ``architecture="auto"`` (default) that network is then
written as ``LlamaForCausalLM`` or ``GPTNeoXForCausalLM`` when one expresses it exactly
(:mod:`arlm.export.native`), so the directory loads without arlm in any ``transformers``;
otherwise as ``ArlowForCausalLM`` with its code and ``auto_map`` (:mod:`arlm.export.remote_code`:
loads with ``trust_remote_code=True`` without arlm, or after ``import arlm``). ``"native"`` insists
on the former, ``"arlow"`` on the latter. The tokenizer is always a plain
``PreTrainedTokenizerFast`` (left padding, :mod:`arlm.export.tokenizer`). The card and the
generation config say how the model was trained and prompted (:mod:`arlm.export.model_card`).

The directory is written safely: the checkpoint is read as data
(:func:`arlm.checkpoints.read.read_checkpoint`); the tokenizer is converted and the weights checked
finite before anything is written; an ``output_dir`` that is, contains or lies inside the
checkpoint, a checkpoint directory or a data cache is refused (:mod:`arlm.export.paths`);
everything is written into a temporary directory beside ``output_dir`` and renamed into place
(:func:`arlm.runtime.atomic_files.write_directory_atomically`), and an existing file, symbolic link
or non-empty directory is replaced only with ``overwrite=True``, and then only when it is an
earlier export (:func:`arlm.export.paths.not_an_export`). Of two exports racing into one
new directory, one succeeds and the other raises.

Python: :func:`export_checkpoint_to_hf`, which needs neither xlm-core nor Hydra; the job type
``xlm job_type=export_hf`` is :mod:`arlm.jobs.export_hf`.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import transformers
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from arlm.checkpoints.network import warn_if_other_network
from arlm.checkpoints.read import Checkpoint, read_checkpoint
from arlm.export.checkpoint_model import arlow_with_weights, checkpoint_arlow
from arlm.export.model_card import CardFacts, generation_settings, model_card
from arlm.export.native import native_blocker, to_native
from arlm.export.paths import check_output_dir, export_directory, data_cache_dirs, output_dir_taken, refuse_unsafe_output_dir
from arlm.export.remote_code import write_remote_code
from arlm.export.tokenizer import hf_tokenizer_from
from arlm.hf.configuration_arlow import ArlowConfig
from arlm.hf.modeling_arlow import ArlowForCausalLM
from arlm.model_arlm import RotaryTransformerARLMModel
from arlm.runtime.atomic_files import TargetExistsError, write_directory_atomically

PathLike = Union[str, Path]
ARCHITECTURES = ("auto", "native", "arlow")


def export_checkpoint_to_hf(
    checkpoint_path: PathLike,
    output_dir: PathLike,
    tokenizer: Optional[PreTrainedTokenizerBase] = None,
    model_config: Optional[Mapping[str, Any]] = None,
    apply_ema: Optional[bool] = None,
    architecture: str = "auto",
    overwrite: bool = False,
    protected_dirs: Iterable[PathLike] = (),
) -> PreTrainedModel:
    """Write ``output_dir`` and return the exported model (its class says which architecture).

    The directory holds ``config.json``, ``model.safetensors``, ``generation_config.json`` (the
    run's EOS/pad/BOS ids, ``max_new_tokens`` and sampling, :func:`~arlm.export.model_card.generation_settings`),
    the tokenizer files and a model card ``README.md`` (:func:`~arlm.export.model_card.model_card`);
    an Arlow export also its code and ``auto_map`` (:mod:`arlm.export.remote_code`).

    Args:
        checkpoint_path: a Lightning checkpoint written by ``xlm job_type=train`` or model-only
            weights (``.safetensors`` / torch file, keys ``model.embed_tokens.weight`` ...
            ``lm_head.weight``): every kind :func:`~arlm.checkpoints.read.read_checkpoint` reads.
        tokenizer: the xLM tokenizer, saved as a ``PreTrainedTokenizerFast``; its special token
            ids go into the config (``bos/eos_token_id``). ``None``: no tokenizer files.
        model_config: ``RotaryTransformerARLMModel`` arguments (the ``model:`` node); needed only
            when the checkpoint does not record them (model-only weights). The recorded network
            is the one exported; a ``model_config`` describing another one gets a warning
            naming the differences (:func:`arlm.checkpoints.network.warn_if_other_network`).
        apply_ema: ``True``/``False``: use the EMA weights or not; ``None`` (default): when the
            checkpoint has them (as xLM's ``extract_checkpoint`` does).
        architecture: ``"auto"`` (native when exact, else Arlow), ``"native"`` or ``"arlow"``.
        overwrite: ``True`` replaces an existing ``output_dir`` that an earlier export wrote;
            anything else there (a project, a git repository, a file) is refused.
        protected_dirs: directories the export must not be, contain or lie inside (the job passes
            the configured data caches); the checkpoint, checkpoint directories and the data
            caches the checkpoint records are always protected.

    Raises:
        ValueError: ``overwrite`` / ``apply_ema`` that are not booleans; bad ``architecture``;
            ``output_dir`` exists (or another export wrote it meanwhile) and ``overwrite`` is
            False; ``output_dir`` is, contains or lies inside the checkpoint, a checkpoint
            directory or a data cache; the file is not a readable ``arlm`` checkpoint (another
            model, unexpected keys, truncated, a pickle that needs code); EMA weights were asked
            for and are missing or do not fit; a weight is NaN or Inf; ``architecture="native"``
            for a network with no exact native twin; a tokenizer that cannot be converted.
            Nothing is written in any of these cases.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    output_dir = export_directory(output_dir)
    source = read_for_export(Path(checkpoint_path), output_dir, tokenizer, model_config, apply_ema, overwrite, protected_dirs)
    hf_model = choose_architecture(source.arlow, architecture)
    settings = generation_settings(source.checkpoint, source.tokenizer)
    hf_model.generation_config = GenerationConfig(**settings)
    remote_code = isinstance(hf_model, ArlowForCausalLM)
    card = model_card(CardFacts(source.checkpoint, source.used_ema, hf_model, source.tokenizer, remote_code, output_dir.name))
    write_into_place(output_dir, ExportFiles(hf_model, source.tokenizer, card, remote_code, settings), overwrite)
    return hf_model


@dataclass(frozen=True)
class ExportSource:
    """A checkpoint read for an export: the checkpoint, its network with the weights chosen
    (``used_ema``) and the run's tokenizer converted (:func:`hf_tokenizer_from`; None: none given)."""

    checkpoint: Checkpoint
    arlow: ArlowForCausalLM
    tokenizer: Optional[PreTrainedTokenizerFast]
    used_ema: bool


def read_for_export(
    checkpoint_path: Path,
    output_dir: Path,
    tokenizer: Optional[PreTrainedTokenizerBase],
    model_config: Optional[Mapping[str, Any]],
    apply_ema: Optional[bool],
    overwrite: bool,
    protected_dirs: Iterable[PathLike],
) -> ExportSource:
    """What every export format does before it writes (arguments and refusals as
    :func:`export_checkpoint_to_hf`'s): the flags and ``output_dir`` checked, the checkpoint read,
    the tokenizer converted, the network rebuilt with its weights; nothing is written."""
    _check_boolean("overwrite", overwrite)
    if apply_ema is not None:
        _check_boolean("apply_ema", apply_ema)
    check_output_dir(output_dir, overwrite)
    checkpoint = read_checkpoint(checkpoint_path)
    protected = [*data_cache_dirs(checkpoint.hyper_parameters), *map(Path, protected_dirs)]
    refuse_unsafe_output_dir(output_dir, checkpoint_path, protected, overwrite)
    hf_tokenizer = None if tokenizer is None else hf_tokenizer_from(tokenizer)
    warn_if_other_network(checkpoint.model_config, model_config, checkpoint_path)
    if apply_ema is None:
        apply_ema = checkpoint.get("ema") is not None
    return ExportSource(checkpoint, checkpoint_arlow(checkpoint, tokenizer, model_config, apply_ema), hf_tokenizer, apply_ema)


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
        return f"{name} (Arlow: loads with trust_remote_code=True, or after `import arlm`; {why})"
    return f"{name} (native: loads without arlm)"


def xlm_to_hf(
    xlm_model: RotaryTransformerARLMModel, tokenizer: Optional[PreTrainedTokenizerBase] = None
) -> ArlowForCausalLM:
    """The same network as an ``ArlowForCausalLM``: identical state dict, identical logits."""
    token_ids = {}
    if tokenizer is not None:
        token_ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = ArlowConfig.from_decoder_config(xlm_model.config, **token_ids)
    return arlow_with_weights(config, xlm_model.state_dict(), type(xlm_model).__name__)


def generation_config_json(settings: Mapping[str, Any]) -> str:
    """``generation_config.json`` holding every key of ``settings`` (:func:`~arlm.export.model_card.generation_settings`).

    ``GenerationConfig.save_pretrained`` leaves out values equal to the saving transformers'
    defaults: transformers 4 would drop ``do_sample: false``, and transformers 5 (whose defaults
    are unset) would then let the text-generation pipeline add its own sampling defaults. Written
    out, greedy decoding and the length limit hold in every transformers from 4.56 on.
    """
    return json.dumps({**settings, "transformers_version": transformers.__version__}, indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class ExportFiles:
    """What goes into the export directory: the model, the tokenizer (None: no tokenizer files),
    the model card text, whether to add Arlow's code, and the generation settings
    (:func:`generation_config_json`)."""

    model: PreTrainedModel
    tokenizer: Optional[PreTrainedTokenizerFast]
    card: str
    remote_code: bool
    generation_settings: Mapping[str, Any]

    def save(self, directory: Path) -> None:
        self.model.save_pretrained(directory)
        (directory / "generation_config.json").write_text(generation_config_json(self.generation_settings), encoding="utf-8")
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory)
        if self.remote_code:
            write_remote_code(directory)
        (directory / "README.md").write_text(self.card, encoding="utf-8")


def write_into_place(output_dir: Path, files: Any, overwrite: bool) -> None:
    """Save ``files`` (an :class:`ExportFiles` or anything with its ``save(directory)``) into a
    temporary directory beside ``output_dir`` and rename it into place
    (:func:`arlm.runtime.atomic_files.write_directory_atomically`, which also gives every file
    the permissions of a plain ``save_pretrained`` under the umask)."""
    try:
        write_directory_atomically(output_dir, files.save, replace=overwrite)
    except TargetExistsError as error:
        if error.while_writing:
            raise ValueError(
                f"output_dir {output_dir} was written by another export while this one ran; that "
                f"export was kept and this one discarded. Fix: choose a new directory or pass "
                f"overwrite=True (+export_hf.overwrite=true) to replace it"
            ) from None
        raise output_dir_taken(output_dir, error.kind) from None


def _check_boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(
            f"{name} must be True or False, got {type(value).__name__} {value!r}; strings ('no', "
            f"'false') and numbers (0, 1) are not read as booleans"
        )
