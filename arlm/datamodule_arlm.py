"""Collators that turn token-id rows into ARLM batches, plus data helpers.

Layouts (``P`` prompt, ``T`` target, ``B`` BOS when the tokenizer has one, ``E`` EOS, ``_`` pad):

- LM training (:class:`DefaultARLMCollator`):   ``x x x x _ _``  right-padded to ``block_size``.
- Seq2seq training (:class:`ARLMSeq2SeqCollator`): ``P P B T T E _ _`` right-padded to ``block_size``.
- Seq2seq prediction (:class:`ARLMSeq2SeqPredCollator`): ``_ _ P P B`` left-padded, so that every
  row's next token is the first target token; the reference ``T T E _`` travels as ``target_ids``.

Training targets are ``input_ids`` shifted left by one with -100 wherever no loss is taken.
"""

import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import IterableDataset

from arlm.loss_arlm import IGNORE_INDEX
from arlm.types_arlm import ARLMBatch, ARLMSeq2SeqBatch, ARLMSeq2SeqPredictionBatch

PROMPT, CONTINUATION, PADDING = 0, 1, 2  # token_type_ids values


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


def _target_of(example: Mapping[str, Any]) -> List[int]:
    """The continuation of a seq2seq row: ``target_ids`` if present, else ``input_ids``."""
    target = example.get("target_ids")
    return list(example["input_ids"] if target is None else target)


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


def _shifted_targets(rows: List[List[int]], loss_starts: List[int], width: int) -> torch.Tensor:
    """``target[i] = row[i + 1]`` for ``i + 1 >= loss_start``, else -100; -100 on padding."""
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for b, (row, start) in enumerate(zip(rows, loss_starts)):
        first = max(start - 1, 0)
        if len(row) - 1 > first:
            targets[b, first : len(row) - 1] = torch.tensor(row[first + 1 :])
    return targets


def _right_pad(rows: List[List[int]], width: int, pad_id: int) -> Tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, : len(row)] = 1
    return ids, mask


TRUNCATE_MODES = ("block", "max", None)
BOS_PLACES = (None, "input", "output")


def prepare_prefix_ids_arlm(
    prefix_ids: Sequence[Sequence[int]],
    pad_token_id: int,
    bos_token_id: Optional[int] = None,
    eos_token_id: Optional[int] = None,
    max_seq_len: Optional[int] = None,
    truncate: Optional[str] = "block",
    add_bos: Optional[str] = None,
    add_eos: bool = False,
) -> Dict[str, List[List[int]]]:
    """Left-pad prompts for generation (upstream arlm's signature and result type).

    Row ``b`` becomes ``[pad...] [BOS]? prefix_b [BOS]? [EOS]?``: ``add_bos="input"`` puts BOS
    first, ``"output"`` after the prefix (so the next token is the first generated one), ``None``
    adds none; ``add_eos`` appends EOS. Either is skipped when its id is ``None`` (a tokenizer
    without BOS, as Qwen2's). A row that is still empty becomes ``[eos_token_id]`` so that
    generation has a token to start from (``ValueError`` when there is no EOS either).

    Width: ``truncate="block"`` -> ``max_seq_len`` (required), longer rows keep their *last*
    ``max_seq_len`` tokens; ``"max"`` -> the longest row, and at least ``max_seq_len`` when
    given, nothing cut; ``None`` -> the longest row (``max_seq_len`` is not used).

    Returns lists (one per row, all of the width): ``input_ids``, ``attention_mask`` (1 on real
    tokens) and ``token_type_ids`` (``PROMPT`` on real tokens, ``PADDING`` on padding).
    """
    rows = _check_id_rows("prefix_ids", prefix_ids)
    pad, bos, eos = _check_special_ids(pad_token_id, bos_token_id, eos_token_id)
    _check_options(max_seq_len, truncate, add_bos, add_eos)
    framed = []
    for row in rows:
        row = ([bos] if add_bos == "input" and bos is not None else []) + row
        row = row + ([bos] if add_bos == "output" and bos is not None else [])
        row = row + ([eos] if add_eos and eos is not None else [])
        if not row and eos is None:
            raise ValueError(
                "an empty prompt with neither a BOS to add (add_bos, bos_token_id) nor an "
                "eos_token_id cannot start generation; give a non-empty prompt"
            )
        framed.append(row or [eos])
    width = _width(framed, max_seq_len, truncate)
    input_ids, attention_mask, token_type_ids = [], [], []
    for row in framed:
        row = row[len(row) - width :] if len(row) > width else row
        n_pad = width - len(row)
        input_ids.append([pad] * n_pad + row)
        attention_mask.append([0] * n_pad + [1] * len(row))
        token_type_ids.append([PADDING] * n_pad + [PROMPT] * len(row))
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def prepare_suffix_ids_arlm(
    suffix_ids: Sequence[Sequence[int]],
    pad_token_id: int,
    bos_token_id: Optional[int] = None,
    eos_token_id: Optional[int] = None,
    max_seq_len: Optional[int] = None,
    truncate: Optional[str] = "block",
    add_bos: Optional[str] = None,
    add_eos: bool = False,
) -> Dict[str, List[List[int]]]:
    """Right-pad continuations (upstream arlm's signature and result type).

    Row ``b`` becomes ``[BOS]? suffix_b [EOS]? [pad...]``: ``add_bos="output"`` puts BOS first
    (``"input"`` means the BOS belongs to the prefix, so none is added here); ``add_eos``
    appends EOS; either is skipped when its id is ``None``. Empty rows stay empty (all padding).
    Width as in :func:`prepare_prefix_ids_arlm`, except that ``"block"`` keeps the *first*
    ``max_seq_len`` tokens of a longer row.

    Returns lists: ``input_ids``, ``attention_mask`` (1 on real tokens) and ``target_ids``
    (a copy of ``input_ids``: unshifted, padded with ``pad_token_id``).
    """
    rows = _check_id_rows("suffix_ids", suffix_ids)
    pad, bos, eos = _check_special_ids(pad_token_id, bos_token_id, eos_token_id)
    _check_options(max_seq_len, truncate, add_bos, add_eos)
    framed = [
        ([bos] if add_bos == "output" and bos is not None else [])
        + row
        + ([eos] if add_eos and eos is not None else [])
        for row in rows
    ]
    width = _width(framed, max_seq_len, truncate)
    input_ids, attention_mask = [], []
    for row in framed:
        row = row[:width]
        input_ids.append(row + [pad] * (width - len(row)))
        attention_mask.append([1] * len(row) + [0] * (width - len(row)))
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "target_ids": [list(row) for row in input_ids],
    }


def id_lists_to_tensors(batch: Mapping[str, List[List[int]]]) -> Dict[str, torch.Tensor]:
    """The ``(B, width)`` long tensors of the lists returned by the ``prepare_*_ids_arlm`` helpers."""
    return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}


def _width(rows: List[List[int]], max_seq_len: Optional[int], truncate: Optional[str]) -> int:
    """The padded width of the ``prepare_*_ids_arlm`` helpers (their docstrings give the rule)."""
    if truncate == "block":
        return max_seq_len
    longest = max(len(row) for row in rows)
    return max(longest, max_seq_len or 0) if truncate == "max" else longest


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_id_rows(name: str, rows: Any) -> List[List[int]]:
    """``rows`` as a list of lists of Python ints; ``TypeError``/``ValueError`` naming the value."""
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or len(rows) == 0:
        raise ValueError(f"{name} must be a non-empty list of token-id lists, got {rows!r}")
    checked = []
    for i, row in enumerate(rows):
        if isinstance(row, torch.Tensor):
            row = row.tolist()
        if isinstance(row, np.ndarray):
            row = row.tolist()
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
            raise TypeError(f"{name}[{i}] must be a list of token ids, got {row!r}")
        bad = [t for t in row if not _is_int(t) or t < 0]
        if bad:
            raise ValueError(
                f"{name}[{i}] must hold non-negative integer token ids, got {bad[0]!r} in {list(row)!r}"
            )
        checked.append([int(t) for t in row])
    return checked


def _check_special_ids(pad: Any, bos: Any, eos: Any) -> Tuple[int, Optional[int], Optional[int]]:
    """The three ids as Python ints (BOS/EOS may be None); ``ValueError`` naming a bad one."""
    named = (("pad_token_id", pad, False), ("bos_token_id", bos, True), ("eos_token_id", eos, True))
    for name, value, optional in named:
        if value is None and optional:
            continue
        if not _is_int(value) or value < 0:
            expected = "a non-negative integer" + (" or None" if optional else "")
            raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(pad), None if bos is None else int(bos), None if eos is None else int(eos)


def _check_options(max_seq_len: Any, truncate: Any, add_bos: Any, add_eos: Any) -> None:
    if max_seq_len is not None and (not _is_int(max_seq_len) or max_seq_len < 1):
        raise ValueError(f"max_seq_len must be a positive integer or None, got {max_seq_len!r}")
    if truncate not in TRUNCATE_MODES:
        raise ValueError(f"truncate must be one of {TRUNCATE_MODES}, got {truncate!r}")
    if truncate == "block" and max_seq_len is None:
        raise ValueError(
            "truncate='block' pads and cuts every row to max_seq_len, which is None; "
            "give max_seq_len or use truncate='max'"
        )
    if add_bos not in BOS_PLACES:
        raise ValueError(f"add_bos must be one of {BOS_PLACES}, got {add_bos!r}")
    if not isinstance(add_eos, bool):
        raise ValueError(f"add_eos must be True or False, got {add_eos!r}")


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
        if block_size is None or block_size < 2:
            raise ValueError(f"block_size must be an integer >= 2, got {block_size!r}")
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.noise_schedule = noise_schedule
        self.input_block_size = input_block_size or None


class DefaultARLMCollator(_ARLMCollator):
    """LM batches: rows truncated and right-padded to ``block_size`` (:class:`ARLMBatch`).

    ``target_ids = input_ids[1:] + [-100]`` per row, with -100 on padding.
    """

    def __call__(self, examples: List[Mapping[str, Any]]) -> ARLMBatch:
        _check_examples(examples, ("input_ids",), type(self).__name__)
        rows = [list(e["input_ids"])[: self.block_size] for e in examples]
        input_ids, attention_mask = _right_pad(rows, self.block_size, _pad_token_id(self.tokenizer))
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "target_ids": _shifted_targets(rows, [0] * len(rows), self.block_size),
        }


class ARLMSeq2SeqCollator(_ARLMCollator):
    """Seq2seq training batches ``[prompt][BOS][target][EOS]`` right-padded to ``block_size``.

    Loss is taken on the target and EOS only (prompt, BOS and padding targets are -100).
    A row longer than ``block_size`` raises ``ValueError`` naming ``block_size`` and the longest
    row of the batch (``on_overflow="error"``, the default: the first batch fails, before any
    step is trained); with ``on_overflow="truncate"`` rows are cut at the end, with one warning.
    Reads ``prompt_ids`` and the target from ``target_ids`` (or ``input_ids``, xlm-core's name
    for the STAR/TinyGSM continuation).
    """

    def __init__(self, *args: Any, on_overflow: str = "error", **kwargs: Any):
        super().__init__(*args, **kwargs)
        if on_overflow not in ("error", "truncate"):
            raise ValueError(f"on_overflow must be 'error' or 'truncate', got {on_overflow!r}")
        self.on_overflow = on_overflow
        self._warned = False

    def _check_fits(self, prompts: List[List[int]], examples: Sequence[Mapping[str, Any]]) -> None:
        lengths = [len(p) + len(_target_of(e)) + 1 for p, e in zip(prompts, examples)]
        longest = max(range(len(lengths)), key=lengths.__getitem__)
        if lengths[longest] <= self.block_size:
            return
        sep = len(_separator(self.tokenizer))
        detail = (
            f"block_size={self.block_size} is too small: an example needs {lengths[longest]} tokens "
            f"(prompt {len(prompts[longest]) - sep} + separator {sep} + target "
            f"{len(_target_of(examples[longest]))} + EOS 1), the longest in this batch"
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
        rows, loss_starts = [], []
        self._check_fits([list(e["prompt_ids"]) + sep for e in examples], examples)
        for e in examples:
            prompt = list(e["prompt_ids"]) + sep
            rows.append((prompt + _target_of(e) + eos)[: self.block_size])
            loss_starts.append(len(prompt))
        input_ids, attention_mask = _right_pad(rows, self.block_size, _pad_token_id(self.tokenizer))
        token_type_ids = torch.full_like(input_ids, PADDING)
        for b, (row, start) in enumerate(zip(rows, loss_starts)):
            token_type_ids[b, : min(start, len(row))] = PROMPT
            token_type_ids[b, start : len(row)] = CONTINUATION
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "target_ids": _shifted_targets(rows, loss_starts, self.block_size),
            "token_type_ids": token_type_ids,
        }


class ARLMSeq2SeqPredCollator(_ARLMCollator):
    """Prompt-only batches for generation (:class:`ARLMSeq2SeqPredictionBatch`).

    ``input_ids`` are ``[pad...][prompt][BOS]`` left-padded to ``input_block_size`` (when set
    and positive) or to the longest prompt. ``target_ids`` hold ``[target][EOS]`` right-padded
    with ``pad_token_id`` (never -100, so xlm-core can decode them) to
    ``block_size - prompt width`` when that fits every row, else to the longest target.
    Per-row ``answer`` strings are passed through when the rows have them.
    """

    def __call__(self, examples: List[Mapping[str, Any]]) -> ARLMSeq2SeqPredictionBatch:
        _check_examples(examples, ("prompt_ids",), type(self).__name__)
        pad = _pad_token_id(self.tokenizer)
        batch: Dict[str, Any] = id_lists_to_tensors(prepare_prefix_ids_arlm(
            [e["prompt_ids"] for e in examples],
            pad_token_id=pad,
            bos_token_id=self.tokenizer.bos_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            max_seq_len=self.input_block_size,
            truncate="max" if self.input_block_size is None else "block",
            add_bos="output",
        ))
        targets = [_target_of(e) + _eos(self.tokenizer) if _has_target(e) else [] for e in examples]
        room = self.block_size - batch["input_ids"].shape[1]
        suffix = prepare_suffix_ids_arlm(targets, pad_token_id=pad, max_seq_len=max(room, 1), truncate="max")
        batch["target_ids"] = torch.tensor(suffix["target_ids"], dtype=torch.long)
        if all("answer" in e for e in examples):
            batch["answer"] = [str(e["answer"]) for e in examples]
        return batch


def _has_target(example: Mapping[str, Any]) -> bool:
    return bool(example.get("target_ids") or example.get("input_ids"))


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
