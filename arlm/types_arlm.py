"""Typed batch and output contracts of the ARLM components (collator -> loss -> model -> metrics)."""

from typing import Any, Iterator, List, Optional, Protocol, TypedDict, runtime_checkable

from jaxtyping import Bool, Float, Integer
from torch import Tensor, nn
from typing_extensions import NotRequired

from arlm.network.decoder import DecoderStack

IGNORE_INDEX = -100
"""``target_ids`` value of a position that carries no loss (the prompt, the last real token, padding)."""

PROMPT, CONTINUATION, PADDING = 0, 1, 2
"""``token_type_ids`` values: prompt tokens, the continuation (BOS, target, EOS), padding."""


class ARLMBatch(TypedDict):
    """Language-modelling batch (what ``ARLMLoss`` reads).

    Attributes:
        input_ids: token ids; padding positions hold ``pad_token_id``.
        attention_mask: 1 for real tokens, 0 for padding, anywhere in a row.
        target_ids: ``input_ids`` shifted left by one; -100 where no loss is taken
            (the last real token, padding, and for seq2seq the prompt).
        right_padded: a plain Python ``bool`` set by the collator that built the batch: True
            declares every row ``real... pad...``, so the model runs on causality alone, without
            a mask (SDPA's fast kernels stay eligible). Absent or False: the loss passes
            ``attention_mask`` to the model, which hides the padding and takes positions from
            it, wherever the padding is. The ARLM training collators set it to True. The
            Lightning device transfer leaves it as it is (only tensors move).

    Other keys (e.g. a ``token_type_ids`` channel) pass through and are ignored by the loss.
    """

    input_ids: Integer[Tensor, "batch seq"]
    attention_mask: Integer[Tensor, "batch seq"]
    target_ids: Integer[Tensor, "batch seq"]
    right_padded: NotRequired[bool]


class ARLMSeq2SeqBatch(ARLMBatch):
    """Seq2seq training batch ``[prompt][BOS][target][EOS][pad...]``: an :class:`ARLMBatch` whose
    ``target_ids`` are -100 on the prompt too (unless its collator was built with
    ``loss_on_prompt=True``), plus ``token_type_ids``: 0 on the prompt, 1 on BOS/target/EOS and
    2 on padding."""

    token_type_ids: Integer[Tensor, "batch seq"]


class ARLMSeq2SeqPredictionBatch(TypedDict):
    """Prompt-only batch for generation: ``[pad...][prompt][BOS]``, left-padded.

    Attributes:
        input_ids / attention_mask / token_type_ids: the left-padded prompts.
        target_ids: the reference continuation ``[target][EOS][pad...]`` (valid ids, padded with
            ``pad_token_id``, never -100) so that it can be decoded and compared.
        prompt_cut: True on rows whose prompt lost its first tokens to ``input_block_size``
            (possible only with the collator's ``on_overflow="truncate"``), else False.
        answer: optional gold answers (e.g. TinyGSM), passed through untouched.
    """

    input_ids: Integer[Tensor, "batch prompt_len"]
    attention_mask: Integer[Tensor, "batch prompt_len"]
    token_type_ids: Integer[Tensor, "batch prompt_len"]
    target_ids: Integer[Tensor, "batch target_len"]
    prompt_cut: Bool[Tensor, " batch"]
    answer: NotRequired[List[str]]


class ARLMLossDict(TypedDict):
    """Output of ``ARLMLoss``.

    Attributes:
        loss: mean next-token cross entropy over targets != -100 (0-d, differentiable).
        batch_loss: ``loss`` detached (what ``mean_metric_update_fn`` reads).
        nlls: per-token negative log-likelihoods, 0 where the target is -100 (detached).
        target_mask: True where the target is a real token.
    """

    loss: Float[Tensor, ""]
    batch_loss: Float[Tensor, ""]
    nlls: Float[Tensor, "batch seq"]
    target_mask: Bool[Tensor, "batch seq"]


class ARLMPredictionDict(TypedDict):
    """Output of ``ARLMPredictor.predict``.

    Attributes:
        text: decoded generated continuation, special tokens removed.
        text_with_spl_tokens: the whole sequence (prompt + continuation) with special tokens.
        ids: prompt and continuation, ``(B, prompt_len + max_new)``; rows that stopped early are
            padded with ``pad_token_id``.
        attention_mask: 1 on real prompt tokens and generated tokens.
        positions: RoPE positions used for every column.
        time_taken: seconds of generation, per example.
        output_start_idx: column where the continuation starts (the prompt width).
    """

    text: List[str]
    text_with_spl_tokens: List[str]
    ids: Integer[Tensor, "batch total_len"]
    attention_mask: Integer[Tensor, "batch total_len"]
    positions: Integer[Tensor, "batch total_len"]
    time_taken: List[float]
    output_start_idx: int


@runtime_checkable
class ARLMModel(Protocol):
    """What ``ARLMPredictor`` and ``ARLMLoss`` use of a model, met by either face
    (``RotaryTransformerARLMModel`` and ``ArlowForCausalLM``): the decoder as ``.model`` (its
    ``config``), its final hidden states through ``last_hidden_state`` (token ids, a padding mask,
    a cache: the model's own method, which FSDP2 gathers the sharded root for), the output
    projection as ``.lm_head`` (``out_features`` is the vocabulary size) and ``parameters()``
    (their device and dtype place the cache). ``isinstance(model, ARLMModel)`` checks that the
    attributes exist."""

    model: DecoderStack
    lm_head: nn.Linear

    def last_hidden_state(
        self, input_ids: Tensor, attention_mask: Optional[Tensor] = None, positions: Optional[Tensor] = None,
        cache: Optional[Any] = None,
    ) -> Tensor: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...
