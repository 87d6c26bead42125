"""GGUF for llama.cpp: a Llama-shaped network and its word-level vocabulary as one ``.gguf`` file.

The file holds the native export's ``LlamaForCausalLM`` (:func:`arlm.export.native.to_native`):
its state dict under ``gguf.get_tensor_name_map`` names, the q/k rows of each head permuted from
rotate-half RoPE to llama.cpp's interleaved pairs (as llama.cpp's own converter does; readers such
as transformers' ``gguf_file=`` undo it), Llama's hyperparameters under the ``llama.*`` keys, and
the vocabulary as llama.cpp's unigram tokenizer (``tokenizer.ggml.model = "t5"``), which cuts a
prompt into the run's words: see :func:`gguf_vocabulary`.

Only a Llama-shaped network without biases is written (:func:`gguf_blocker` says why another is
not). Weights are ``f32``; ``f16`` (matrices in float16, norms in float32, as llama.cpp's
converter does) or ``q8_0`` (matrices whose rows are whole 32-value blocks quantized to 8 bits,
the others float16) on request. Needs the ``gguf`` package (``pip install arlm[gguf]``).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from jaxtyping import Float
from torch import Tensor
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from arlm.export.native import native_blocker
from arlm.hf.configuration_arlow import ArlowConfig

GGUF_DTYPES = ("f32", "f16", "q8_0")
"""The weights :func:`write_gguf` writes (``export_hf.gguf_dtype``)."""
WORD_PREFIX = "\u2581"
"""What llama.cpp's unigram tokenizer writes for the space before each word (and before the first)."""
UNIGRAM_DEFAULT_IDS = {"eos_token": 1, "unk_token": 2}
"""The ids llama.cpp's unigram tokenizer assumes for the tokens a file does not name."""
LLAMA_NETWORK = (
    "train model=rotary_transformer_llama_arlm (RMSNorm, SwiGLU, no biases, RoPE on the whole head), "
    "which llama.cpp runs as its llama architecture, or export this one with format=hf"
)


def import_gguf():
    """The ``gguf`` package, or ``ImportError`` naming the install command."""
    try:
        import gguf
    except ImportError:
        raise ImportError(
            "format=gguf needs the gguf package: pip install 'arlm[gguf]' (or pip install gguf)"
        ) from None
    return gguf


def gguf_blocker(config: ArlowConfig) -> Optional[str]:
    """``None`` when :func:`write_gguf` can write the network exactly, else why not and what to train."""
    native = native_blocker(config)
    if native is not None:
        return f"it is not Llama-shaped ({native}); {LLAMA_NETWORK}"
    if config.norm_type != "rmsnorm":
        return (
            f"it is GPT-NeoX-shaped (LayerNorm, a plain {config.hidden_act!r} MLP), and llama.cpp's "
            f"gptneox architecture computes its MLP with tanh-approximated GELU only, so a "
            f"{config.hidden_act!r} MLP cannot be expressed; {LLAMA_NETWORK}"
        )
    if config.bias:
        return (
            "it has biases (model.bias=true): llama.cpp would read them, but transformers' GGUF reader "
            "drops Llama biases without a word, so one file would be two different models; train with "
            "model.bias=false (the default of model=rotary_transformer_llama_arlm)"
        )
    return None


@dataclass(frozen=True)
class GgufVocabulary:
    """Tokens in id order (``tokens[i]`` is id ``i``) with their ``gguf.TokenType`` values, and
    the special ids llama.cpp reads (``bos``, ``eos``, ``unk``, ``pad``; None: not written)."""

    tokens: List[str]
    token_types: List[int]
    special_ids: Dict[str, Optional[int]]


def gguf_vocabulary(tokenizer: PreTrainedTokenizerFast, vocab_size: int) -> GgufVocabulary:
    """The word-level ``tokenizer`` as llama.cpp's unigram vocabulary of ``vocab_size`` ids.

    Every word ``w`` becomes the token ``"▁w"``. llama.cpp writes ``▁`` for each run of spaces
    and before the text, so a prompt of words separated by spaces is cut into exactly those
    tokens (a whole word beats any prefix of it followed by unknown characters). Special tokens
    keep their text and are control tokens (the unknown token: unknown), so a prompt tokenized
    with ``special=True`` reads ``[BOS]`` as the token; ids past the tokenizer's are unused
    ``[PAD<id>]`` tokens. The file asks for no added BOS or EOS, so llama.cpp's default
    tokenization (``add_bos=True``, llama-cli, a text prompt to ``create_completion``) gives the
    training layout unchanged. Differences from the word-level tokenizer: a word outside the
    vocabulary becomes its longest known prefix and one unknown token per remaining character
    (the word-level tokenizer: one unknown token), and only spaces separate words (not tabs or
    newlines).

    Raises:
        ValueError: the tokenizer is not word-level over whitespace-separated words, has no EOS
            or unknown token (llama.cpp would take ids 1 and 2 for them), has more tokens than the
            network's embeddings, or has a word holding whitespace or ``▁``.
    """
    gguf = import_gguf()
    _check_word_level(tokenizer)
    if len(tokenizer) > vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, more than the network's {vocab_size} embeddings")
    for name, default_id in UNIGRAM_DEFAULT_IDS.items():
        if getattr(tokenizer, name) is None:
            raise ValueError(
                f"format=gguf needs a tokenizer with an {name}: without one llama.cpp takes id {default_id} "
                f"({tokenizer.convert_ids_to_tokens(default_id)!r}) as that token"
            )
    specials = {str(token) for token in tokenizer.all_special_tokens}
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [int(gguf.TokenType.UNUSED)] * vocab_size
    for word, index in tokenizer.get_vocab().items():
        if word in specials:
            tokens[index] = word
            types[index] = int(gguf.TokenType.UNKNOWN if word == tokenizer.unk_token else gguf.TokenType.CONTROL)
        else:
            _check_one_word(word)
            tokens[index], types[index] = WORD_PREFIX + word, int(gguf.TokenType.NORMAL)
    special_ids = {
        "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id, "pad": tokenizer.pad_token_id,
    }
    return GgufVocabulary(tokens, types, special_ids)


def write_gguf(path: Path, llama: LlamaForCausalLM, vocabulary: GgufVocabulary, dtype: str, name: str) -> None:
    """Write ``llama`` (the native export) and ``vocabulary`` to the new file ``path`` as ``dtype``
    (one of :data:`GGUF_DTYPES`), named ``name`` in ``general.name``."""
    gguf = import_gguf()
    if dtype not in GGUF_DTYPES:
        raise ValueError(f"gguf_dtype must be one of {GGUF_DTYPES}, got {dtype!r}")
    config: LlamaConfig = llama.config
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(name)
    _add_hyperparameters(writer, config, gguf.LlamaFileType[_FILE_TYPES[dtype]])
    _add_vocabulary(writer, vocabulary)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in llama.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp and transformers' reader use token_embd for a missing output.weight
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"{hf_name} has no GGUF name in llama.cpp's llama architecture")
        weights = _llama_cpp_layout(hf_name, tensor.detach().float(), config).numpy()
        data, raw_dtype = _encoded(weights, dtype, gguf)
        writer.add_tensor(gguf_name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


_FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0"}


def _add_hyperparameters(writer, config: LlamaConfig, file_type: int) -> None:
    head_dim = config.head_dim
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(_rope_theta(config)))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(int(file_type))


def _rope_theta(config: LlamaConfig) -> float:
    """transformers 4 keeps ``rope_theta`` on the config, transformers 5 in ``rope_parameters``."""
    theta = getattr(config, "rope_theta", None)
    return theta if theta is not None else config.rope_parameters["rope_theta"]


def _add_vocabulary(writer, vocabulary: GgufVocabulary) -> None:
    writer.add_tokenizer_model("t5")  # llama.cpp's unigram (UGM) tokenizer; no normalization table
    writer.add_token_list(vocabulary.tokens)
    writer.add_token_types(vocabulary.token_types)
    writer.add_token_scores([0.0] * len(vocabulary.tokens))
    writer.add_add_space_prefix(True)
    writer.add_remove_extra_whitespaces(True)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    add_id = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
              "unk": writer.add_unk_token_id, "pad": writer.add_pad_token_id}
    for kind, token_id in vocabulary.special_ids.items():
        if token_id is not None:
            add_id[kind](token_id)


def _llama_cpp_layout(name: str, weight: Tensor, config: LlamaConfig) -> Tensor:
    """``weight`` as llama.cpp lays it out: q/k rows of each head interleaved for its RoPE."""
    if name.endswith("self_attn.q_proj.weight"):
        return interleave_rope_rows(weight, config.num_attention_heads)
    if name.endswith("self_attn.k_proj.weight"):
        return interleave_rope_rows(weight, config.num_key_value_heads)
    return weight


def interleave_rope_rows(weight: Float[Tensor, "out d"], heads: int) -> Float[Tensor, "out d"]:
    """Each head's rows ``[x_0..x_{n/2-1}, y_0..y_{n/2-1}]`` (rotate-half RoPE rotates ``(x_i, y_i)``)
    reordered as ``[x_0, y_0, x_1, y_1, ...]`` (llama.cpp's RoPE rotates neighbouring pairs)."""
    rows, width = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, width).transpose(1, 2).reshape(rows, width)


def _encoded(weights: np.ndarray, dtype: str, gguf):
    """``(data, raw_dtype)`` for ``GGUFWriter.add_tensor``: vectors stay float32 in every dtype."""
    if weights.ndim < 2 or dtype == "f32":
        return weights.astype(np.float32), None
    block, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0]
    if dtype == "q8_0" and weights.shape[-1] % block == 0:
        kind = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(weights, kind), kind
    return weights.astype(np.float16), None


def _check_word_level(tokenizer: PreTrainedTokenizerFast) -> None:
    backend = tokenizer.backend_tokenizer
    model, pre_tokenizer = type(backend.model).__name__, type(backend.pre_tokenizer).__name__
    if model != "WordLevel" or pre_tokenizer != "WhitespaceSplit" or backend.normalizer is not None:
        raise ValueError(
            f"format=gguf writes word-level vocabularies over whitespace-separated words (xlm-core's "
            f"SimpleSpaceTokenizer, as STAR's runs use); this tokenizer is a {model} model with a "
            f"{pre_tokenizer} pre-tokenizer. Export it with format=hf"
        )


def _check_one_word(word: str) -> None:
    """Refuse ``word`` unless llama.cpp's unigram tokenizer can give it back whole."""
    if not word or any(char.isspace() or char == WORD_PREFIX for char in word):
        raise ValueError(
            f"the vocabulary word {word!r} cannot be one llama.cpp token: its tokenizer separates words "
            f"at spaces and writes them as {WORD_PREFIX!r}. Export it with format=hf"
        )
