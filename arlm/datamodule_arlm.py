"""Collators that turn token-id rows into ARLM batches, plus data helpers (and, under their
upstream names, the prompt helpers of :mod:`arlm.prompt_ids`).

Layouts (``P`` prompt, ``T`` target, ``B`` BOS when the tokenizer has one, ``E`` EOS, ``_`` pad):

- LM training (:class:`DefaultARLMCollator`):   ``x x x x _ _``  right-padded to ``block_size``.
- Seq2seq training (:class:`ARLMSeq2SeqCollator`): ``P P B T T E _ _`` right-padded to ``block_size``.
- Seq2seq prediction (:class:`ARLMSeq2SeqPredCollator`): ``_ _ P P B`` left-padded, so that every
  row's next token is the first target token; the reference ``T T E _`` travels as ``target_ids``.

Training targets are ``input_ids`` shifted left by one with -100 wherever no loss is taken, and
training batches declare ``right_padded=True`` (a Python bool, decided here on the CPU), so that
``ARLMLoss`` runs the model without a mask on every device.
"""

import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch.utils.data import IterableDataset

from arlm.network.inputs import check_token_ids
from arlm.prompt_ids import check_id_rows, id_lists_to_tensors, prepare_prefix_ids_arlm, prepare_suffix_ids_arlm, right_pad
from arlm.types_arlm import CONTINUATION, IGNORE_INDEX, PADDING, PROMPT, ARLMBatch, ARLMSeq2SeqBatch, ARLMSeq2SeqPredictionBatch
from arlm.network.value_checks import check_int_at_least


def _check_examples(examples: Sequence[Mapping[str, Any]], required: Tuple[str, ...], who: str):
    if len(examples) == 0:
        raise ValueError(f"{who} got an empty list of examples; a batch needs at least one")
    for i, example in enumerate(examples):
        for key in required:
            if key not in example:
                raise KeyError(
                    f"{who}: example {i} has no {key!r} (it has {sorted(example)}); "
                    f"expected keys {list(required)}"
                )


OVERFLOW_MODES = ("error", "truncate")


def _overflow_mode(on_overflow: Any) -> str:
    if on_overflow not in OVERFLOW_MODES:
        raise ValueError(f"on_overflow must be one of {OVERFLOW_MODES}, got {on_overflow!r}")
    return on_overflow


def _target_rows(examples: Sequence[Mapping[str, Any]], who: str, required: bool) -> List[List[int]]:
    """The continuation of each seq2seq row, checked (:func:`arlm.prompt_ids.check_id_rows`):
    ``target_ids`` if present, else ``input_ids`` (xlm-core's name for it); a row with neither is
    a ``KeyError`` when ``required``, else an empty target."""
    rows = []
    for i, example in enumerate(examples):
        row = example.get("target_ids")
        row = example.get("input_ids") if row is None else row
        if row is None and required:
            raise KeyError(
                f"{who}: example {i} has neither 'target_ids' nor 'input_ids' (it has {sorted(example)}); "
                f"a seq2seq training row needs its target"
            )
        rows.append([] if row is None else row)
    return check_id_rows("input_ids" if examples[0].get("target_ids") is None else "target_ids", rows)


def _pad_token_id(tokenizer: Any) -> int:
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad_token_id; ARLM collators need one")
    return tokenizer.pad_token_id


def _separator(tokenizer: Any) -> List[int]:
    """``[BOS]`` between prompt and target, or nothing when the tokenizer has no BOS (Qwen2)."""
    return [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]


def _eos(tokenizer: Any) -> List[int]:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token_id; seq2seq collators need one")
    return [tokenizer.eos_token_id]


def tokenizer_vocab_size(tokenizer: Any) -> Optional[int]:
    """Number of ids the tokenizer can emit: ``full_vocab_size`` (xLM tokenizers), else
    ``len(tokenizer)``; None when it states neither."""
    size = getattr(tokenizer, "full_vocab_size", None)
    if size is None and hasattr(tokenizer, "__len__"):
        size = len(tokenizer)
    return None if size is None else int(size)


def _shifted_targets(rows: List[List[int]], loss_starts: List[int], width: int) -> torch.Tensor:
    """``target[i] = row[i + 1]`` for ``i + 1 >= loss_start``, else -100; -100 on padding."""
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for b, (row, start) in enumerate(zip(rows, loss_starts)):
        first = max(start - 1, 0)
        if len(row) - 1 > first:
            targets[b, first : len(row) - 1] = torch.tensor(row[first + 1 :])
    return targets


class _ARLMCollator:
    """Constructor shared by the ARLM collators (kwargs as xlm-core's collator YAMLs give them).

    ``noise_schedule`` is accepted for the xLM ``Collator`` protocol and unused.
    ``input_block_size``: prompt width of prediction batches (``None``/0: the longest prompt).
    """

    def __init__(
        self,
        tokenizer: Any,
        block_size: int,
        noise_schedule: Any = None,
        input_block_size: Optional[int] = None,
    ):
        self.tokenizer = tokenizer
        self.block_size = check_int_at_least("block_size", block_size, 2)
        self.noise_schedule = noise_schedule
        if input_block_size is not None:
            check_int_at_least("input_block_size", input_block_size, 0)
        self.input_block_size = input_block_size or None

    def _checked(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        """``batch`` after checking its token ids against the tokenizer's vocabulary (when the
        tokenizer states its size), here on the CPU where the batch is built: the model checks
        them only on CPU tensors."""
        vocab = tokenizer_vocab_size(self.tokenizer)
        if vocab is not None:
            check_token_ids(batch["input_ids"], vocab, f"the vocabulary of the {type(self.tokenizer).__name__}")
        return batch


class DefaultARLMCollator(_ARLMCollator):
    """LM batches: rows truncated and right-padded to ``block_size`` (:class:`ARLMBatch`).

    ``target_ids = input_ids[1:] + [-100]`` per row, with -100 on padding.
    """

    def __call__(self, examples: List[Mapping[str, Any]]) -> ARLMBatch:
        _check_examples(examples, ("input_ids",), type(self).__name__)
        rows = [row[: self.block_size] for row in check_id_rows("input_ids", [e["input_ids"] for e in examples])]
        batch = id_lists_to_tensors(right_pad(rows, self.block_size, _pad_token_id(self.tokenizer)))
        return self._checked({
            **batch,
            "target_ids": _shifted_targets(rows, [0] * len(rows), self.block_size),
            "right_padded": True,
        })


class ARLMSeq2SeqCollator(_ARLMCollator):
    """Seq2seq training batches ``[prompt][BOS][target][EOS]`` right-padded to ``block_size``.

    Loss is taken on the target and EOS only (prompt, BOS and padding targets are -100), unless
    ``loss_on_prompt=True`` (upstream's objective): then every token after a row's first one is
    a target too (prompt tokens 2.., BOS, target, EOS); the target region is the same either way
    and padding is -100 in both. ``token_type_ids`` do not depend on it.
    A row longer than ``block_size`` raises ``ValueError`` naming ``block_size`` and the longest
    row of the batch (``on_overflow="error"``, the default: the first batch fails, before any
    step is trained); with ``on_overflow="truncate"`` rows are cut at the end, with one warning.
    Reads ``prompt_ids`` and the target from ``target_ids`` (or ``input_ids``, xlm-core's name
    for the STAR/TinyGSM continuation).
    """

    def __init__(self, *args: Any, on_overflow: str = "error", loss_on_prompt: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.on_overflow = _overflow_mode(on_overflow)
        if not isinstance(loss_on_prompt, bool):
            raise ValueError(f"loss_on_prompt must be true or false, got {loss_on_prompt!r}")
        self.loss_on_prompt = loss_on_prompt
        self._warned = False

    def _check_fits(self, prompts: List[List[int]], targets: List[List[int]]) -> None:
        lengths = [len(p) + len(t) + 1 for p, t in zip(prompts, targets)]
        longest = max(range(len(lengths)), key=lengths.__getitem__)
        if lengths[longest] <= self.block_size:
            return
        sep = len(_separator(self.tokenizer))
        detail = (
            f"block_size={self.block_size} is too small: an example needs {lengths[longest]} tokens "
            f"(prompt {len(prompts[longest]) - sep} + separator {sep} + target "
            f"{len(targets[longest])} + EOS 1), the longest in this batch"
        )
        if self.on_overflow == "error":
            raise ValueError(
                f"{detail}; its target would be cut. Fix: set block_size to at least "
                f"{lengths[longest]} (for all the data: the longest prompt + target + 2), or "
                f"collator on_overflow=truncate to cut rows knowingly"
            )
        if not self._warned:
            warnings.warn(f"{detail}; rows are cut to block_size (on_overflow=truncate)")
            self._warned = True

    def __call__(self, examples: List[Mapping[str, Any]]) -> ARLMSeq2SeqBatch:
        _check_examples(examples, ("prompt_ids",), type(self).__name__)
        sep, eos = _separator(self.tokenizer), _eos(self.tokenizer)
        prompts = [row + sep for row in check_id_rows("prompt_ids", [e["prompt_ids"] for e in examples])]
        targets = _target_rows(examples, type(self).__name__, required=True)
        self._check_fits(prompts, targets)
        rows = [(prompt + target + eos)[: self.block_size] for prompt, target in zip(prompts, targets)]
        continuation_starts = [len(prompt) for prompt in prompts]
        batch = id_lists_to_tensors(right_pad(rows, self.block_size, _pad_token_id(self.tokenizer)))
        token_type_ids = torch.full_like(batch["input_ids"], PADDING)
        for b, (row, start) in enumerate(zip(rows, continuation_starts)):
            token_type_ids[b, : min(start, len(row))] = PROMPT
            token_type_ids[b, start : len(row)] = CONTINUATION
        loss_starts = [0] * len(rows) if self.loss_on_prompt else continuation_starts
        return self._checked({
            **batch,
            "target_ids": _shifted_targets(rows, loss_starts, self.block_size),
            "token_type_ids": token_type_ids,
            "right_padded": True,
        })


class ARLMSeq2SeqPredCollator(_ARLMCollator):
    """Prompt-only batches for generation (:class:`ARLMSeq2SeqPredictionBatch`).

    ``input_ids`` are ``[pad...][prompt][BOS]`` left-padded to ``input_block_size`` (when set
    and positive) or to the longest prompt. A prompt longer than ``input_block_size`` raises
    ``ValueError`` naming both sizes and the fix (``on_overflow="error"``, the default); with
    ``on_overflow="truncate"`` it keeps its last ``input_block_size`` tokens and every batch that
    cuts prompts warns how many; ``prompt_cut`` is True on the rows it cut. ``target_ids`` hold ``[target][EOS]`` right-padded
    with ``pad_token_id`` (never -100, so xlm-core can decode them) to
    ``block_size - prompt width`` when that fits every row, else to the longest target.
    Per-row ``answer`` strings are passed through when the rows have them.
    """

    def __init__(self, *args: Any, on_overflow: str = "error", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.on_overflow = _overflow_mode(on_overflow)

    def _check_prompts_fit(self, prompts: List[List[int]]) -> List[bool]:
        """Which ``prompts`` (separator included) will be cut; ``input_block_size`` None fits all."""
        width = self.input_block_size
        cut = [width is not None and len(p) > width for p in prompts]
        too_long = [len(p) for p, is_cut in zip(prompts, cut) if is_cut]
        if not too_long:
            return cut
        detail = (
            f"input_block_size={width} is too small for {len(too_long)} of the {len(prompts)} prompts of "
            f"this batch: they need up to {max(too_long)} tokens (prompt + separator "
            f"{len(_separator(self.tokenizer))})"
        )
        if self.on_overflow == "error":
            raise ValueError(
                f"{detail}; their first tokens would be cut and the model would answer another question. "
                f"Fix: set input_block_size to at least {max(too_long)} (or 0: pad to the longest prompt "
                f"of each batch), or the prediction collator's on_overflow=truncate to cut them knowingly"
            )
        warnings.warn(f"{detail}; {len(too_long)} prompts keep only their last {width} tokens (on_overflow=truncate)")
        return cut

    def __call__(self, examples: List[Mapping[str, Any]]) -> ARLMSeq2SeqPredictionBatch:
        _check_examples(examples, ("prompt_ids",), type(self).__name__)
        pad, sep = _pad_token_id(self.tokenizer), _separator(self.tokenizer)
        prompts = check_id_rows("prompt_ids", [e["prompt_ids"] for e in examples])
        cut = self._check_prompts_fit([row + sep for row in prompts])
        batch: Dict[str, Any] = id_lists_to_tensors(prepare_prefix_ids_arlm(
            prompts,
            pad_token_id=pad,
            bos_token_id=self.tokenizer.bos_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            max_seq_len=self.input_block_size,
            truncate="max" if self.input_block_size is None else "block",
            add_bos="output",
        ))
        targets = [row + _eos(self.tokenizer) if row else [] for row in _target_rows(examples, type(self).__name__, required=False)]
        room = self.block_size - batch["input_ids"].shape[1]
        suffix = prepare_suffix_ids_arlm(targets, pad_token_id=pad, max_seq_len=max(room, 1), truncate="max")
        batch["target_ids"] = torch.tensor(suffix["target_ids"], dtype=torch.long)
        batch["prompt_cut"] = torch.tensor(cut, dtype=torch.bool)
        if all("answer" in e for e in examples):
            batch["answer"] = [str(e["answer"]) for e in examples]
        return self._checked(batch)


class ARLMEmptyDataset(IterableDataset):
    """``num_examples`` empty prompts, for unconditional generation with the prediction collator."""

    def __init__(self, tokenizer: Any, num_examples: int):
        self.tokenizer = tokenizer
        self.num_examples = num_examples

    def __iter__(self) -> Iterator[Dict[str, List[int]]]:
        for _ in range(self.num_examples):
            yield {"prompt_ids": [], "input_ids": []}

    def __len__(self) -> int:
        return self.num_examples


def print_batch_arlm(
    batch: Mapping[str, Any], split: str, tokenizer: Any, dataloader_name: str = ""
) -> None:
    """Print the first row of every tensor in ``batch`` and its decoded ``input_ids``."""
    print(f"First example of the {split}/{dataloader_name} batch:")
    print("input text:", tokenizer.decode(batch["input_ids"][0]))
    for key in ("input_ids", "attention_mask", "target_ids", "token_type_ids"):
        if key in batch:
            print(f"{key}:", batch[key][0].tolist())
