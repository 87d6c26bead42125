"""``format=gguf``: export an xLM ``arlm`` checkpoint as a directory holding one GGUF file.

The same steps as the Hugging Face export (:func:`arlm.export.exporter.read_for_export`: the
checkpoint read weights-only, the output directory checked, the network rebuilt with EMA weights
when the checkpoint has them), then the native ``LlamaForCausalLM`` written by
:func:`arlm.export.gguf.write_gguf`. Beside ``model-<dtype>.gguf`` the directory holds the
transformers tokenizer files and ``generation_config.json`` (transformers reads the GGUF's weights
with ``gguf_file=`` and the tokenizer from these files) and a model card ``README.md``
(:mod:`arlm.export.gguf_card`). A network llama.cpp cannot run exactly, a tokenizer its vocabulary
cannot express and a missing ``gguf`` package are refused before anything is written; the
directory is written to a temporary beside ``output_dir`` and renamed into place.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from transformers import LlamaForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from arlm.export.exporter import generation_config_json, read_for_export, write_into_place
from arlm.export.gguf import GGUF_DTYPES, GgufVocabulary, gguf_blocker, gguf_vocabulary, import_gguf, write_gguf
from arlm.export.gguf_card import gguf_card
from arlm.export.model_card import CardFacts, generation_settings
from arlm.export.native import to_native
from arlm.export.paths import export_directory

PathLike = Union[str, Path]


def gguf_file_name(dtype: str) -> str:
    """The GGUF file's name in the export directory: ``model-f32.gguf``, ``model-q8_0.gguf``..."""
    return f"model-{dtype}.gguf"


def export_checkpoint_to_gguf(
    checkpoint_path: PathLike, output_dir: PathLike, tokenizer: Optional[PreTrainedTokenizerBase],
    model_config: Optional[Mapping[str, Any]] = None, apply_ema: Optional[bool] = None, dtype: str = "f32",
    overwrite: bool = False, protected_dirs: Iterable[PathLike] = (),
) -> Path:
    """Write ``output_dir`` and return the path of its GGUF file.

    Arguments as :func:`arlm.export.exporter.export_checkpoint_to_hf`'s (the tokenizer is
    required: the file carries its vocabulary), plus ``dtype``, one of :data:`~arlm.export.gguf.GGUF_DTYPES`.

    Raises:
        ValueError: everything :func:`~arlm.export.exporter.export_checkpoint_to_hf` refuses; a
            network that is not Llama-shaped or has biases (:func:`~arlm.export.gguf.gguf_blocker`);
            a tokenizer that is not word-level; a bad ``dtype``. Nothing is written in these cases.
        ImportError: the ``gguf`` package is not installed (nothing is written).
    """
    if dtype not in GGUF_DTYPES:
        raise ValueError(f"gguf_dtype must be one of {GGUF_DTYPES}, got {dtype!r}")
    if tokenizer is None:
        raise ValueError("format=gguf needs the run's tokenizer: a GGUF file carries its vocabulary")
    import_gguf()
    checkpoint_path, output_dir = Path(checkpoint_path), export_directory(output_dir)
    source = read_for_export(checkpoint_path, output_dir, tokenizer, model_config, apply_ema, overwrite, protected_dirs)
    blocker = gguf_blocker(source.arlow.config)
    if blocker is not None:
        raise ValueError(f"format=gguf cannot write this network for llama.cpp: {blocker}")
    llama = to_native(source.arlow)
    vocabulary = gguf_vocabulary(source.tokenizer, llama.config.vocab_size)
    name = str(source.checkpoint.hyper_parameters.get("job_name") or checkpoint_path.stem)
    facts = CardFacts(source.checkpoint, source.used_ema, llama, source.tokenizer, False, output_dir.name)
    settings = generation_settings(source.checkpoint, source.tokenizer)
    files = GgufFiles(llama, vocabulary, source.tokenizer, settings, gguf_card(facts, gguf_file_name(dtype), dtype), dtype, name)
    write_into_place(output_dir, files, overwrite)
    return output_dir / gguf_file_name(dtype)


@dataclass(frozen=True)
class GgufFiles:
    """What goes into a GGUF export directory (see the module docstring)."""

    llama: LlamaForCausalLM
    vocabulary: GgufVocabulary
    tokenizer: PreTrainedTokenizerFast
    generation_settings: Mapping[str, Any]
    card: str
    dtype: str
    name: str

    def save(self, directory: Path) -> None:
        write_gguf(directory / gguf_file_name(self.dtype), self.llama, self.vocabulary, self.dtype, self.name)
        self.tokenizer.save_pretrained(directory)
        (directory / "generation_config.json").write_text(generation_config_json(self.generation_settings), encoding="utf-8")
        (directory / "README.md").write_text(self.card, encoding="utf-8")
