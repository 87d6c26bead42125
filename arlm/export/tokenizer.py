"""The tokenizer of an export: the run's xLM tokenizer as a plain ``PreTrainedTokenizerFast``
(same ids, same special tokens, left padding), which ``AutoTokenizer`` loads without arlm."""

import copy

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIAL_TOKEN_NAMES = ("pad_token", "bos_token", "eos_token", "unk_token", "mask_token", "cls_token", "sep_token")


def hf_tokenizer_from(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerFast:
    """The xLM tokenizer as a plain ``PreTrainedTokenizerFast``: same ids, same special tokens,
    left padding; ``AutoTokenizer`` loads what it saves without arlm.

    Fast tokenizers (e.g. ``load_auto_tokenizer``'s, ``ArlowTokenizerFast``) keep their
    ``tokenizers`` backend; xlm-core's ``SimpleSpaceTokenizer`` (space-separated words, no
    ``save_pretrained``) becomes a word-level ``tokenizers`` model over its vocabulary.

    A backend without a decoder (the word-level one, or a fast tokenizer built without one) gets
    :func:`word_decoder`: each token decodes as a space followed by the token, so every decoded
    text starts with one space and a decoded continuation appended to its prompt reads right in
    every transformers (the text-generation pipeline of transformers 5 appends the decoded new
    tokens to the prompt text). Ids, tokens and encoding are unchanged.

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
    if backend.decoder is None:
        backend.decoder = word_decoder()
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


def word_decoder() -> decoders.Decoder:
    """The decoder of space-separated words: a space before every token (special ones too);
    ``decode([id("3"), id("4")]) == " 3 4"``. A ``tokenizers`` object, saved in ``tokenizer.json``."""
    return decoders.Replace(Regex("^"), " ")


def _is_space_separated_word_tokenizer(tokenizer: PreTrainedTokenizerBase) -> bool:
    try:
        from xlm.datamodule import SimpleSpaceTokenizer
    except ImportError:  # the Hugging Face face installed without xlm-core
        return False
    return isinstance(tokenizer, SimpleSpaceTokenizer)
