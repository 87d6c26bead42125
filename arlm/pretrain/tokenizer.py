"""``ArlowTokenizerFast`` and a byte-level BPE trainer over local text files."""

from pathlib import Path
from typing import Optional, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from arlm.pretrain.text_files import PathLike, iter_documents

DEFAULT_SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
}


class ArlowTokenizerFast(PreTrainedTokenizerFast):
    """A ``tokenizers``-backed tokenizer with pad/bos/eos/unk/mask special tokens.

    Build it with :func:`train_arlow_tokenizer`, from a ``tokenizer.json`` (``tokenizer_file``) or
    from a ``tokenizers.Tokenizer`` (``tokenizer_object``). Padding is on the left, as decoding a
    batch with a causal model needs. No special token is added by ``encode``: pretraining appends
    ``eos_token`` between documents itself.

    Special tokens are never invented: one given explicitly must be in the vocabulary (else a
    ``ValueError``); one not given is the default of :data:`DEFAULT_SPECIAL_TOKENS` when the
    vocabulary (``tokenizer.json``) has it, and unset otherwise. So a directory with only a
    ``tokenizer.json`` loads with the special tokens it really has.
    """

    vocab_files_names = {"tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"

    def __init__(
        self,
        tokenizer_file: Optional[str] = None,
        tokenizer_object: Optional[Tokenizer] = None,
        **kwargs,
    ):
        if tokenizer_object is None and (tokenizer_file is None or not Path(tokenizer_file).is_file()):
            raise ValueError(
                "ArlowTokenizerFast needs tokenizer_file (an existing tokenizer.json) or "
                f"tokenizer_object, got tokenizer_file={tokenizer_file!r}; train one with "
                "arlm.pretrain.tokenizer.train_arlow_tokenizer"
            )
        backend = tokenizer_object if tokenizer_object is not None else Tokenizer.from_file(tokenizer_file)
        vocab = backend.get_vocab(with_added_tokens=True)
        for name, default in DEFAULT_SPECIAL_TOKENS.items():
            if kwargs.get(name) is None:
                kwargs[name] = default if default in vocab else None
            elif str(kwargs[name]) not in vocab:
                raise ValueError(
                    f"ArlowTokenizerFast: {name} {str(kwargs[name])!r} is not in the vocabulary; "
                    "special tokens must be tokens of tokenizer.json (none are invented)"
                )
        kwargs.setdefault("padding_side", "left")
        super().__init__(tokenizer_file=tokenizer_file, tokenizer_object=tokenizer_object, **kwargs)

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs) -> dict:
        """transformers 5 hook: keep ``tokenizer_file`` so that ``__init__`` loads the whole
        ``tokenizer.json`` (pre-tokenizer, decoder, added tokens), as transformers 4 does."""
        return kwargs


def train_arlow_tokenizer(
    files: Sequence[PathLike],
    vocab_size: int,
    min_frequency: int = 2,
    text_field: str = "text",
) -> ArlowTokenizerFast:
    """Train a byte-level BPE on local ``.txt``/``.jsonl`` files (see :mod:`arlm.pretrain.text_files`).

    Every byte is in the initial alphabet, so any text round-trips through encode/decode; the five
    special tokens get ids 0..4 (pad, bos, eos, unk, mask). ``vocab_size`` counts them.
    """
    specials = list(DEFAULT_SPECIAL_TOKENS.values())
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(specials) + len(alphabet):
        raise ValueError(
            f"vocab_size must be at least {len(specials) + len(alphabet)} (the {len(specials)} "
            f"special tokens and the {len(alphabet)} byte symbols), got {vocab_size}"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tokenizer.train_from_iterator(iter_documents(files, text_field), trainer=trainer)
    return ArlowTokenizerFast(tokenizer_object=tokenizer)
