"""Upstream arlm's prompt helpers: token-id rows padded for generation, as lists.

``prepare_prefix_ids_arlm`` left-pads prompts, ``prepare_suffix_ids_arlm`` right-pads
continuations; both take upstream's signature and return a dict of lists, checking every
argument. :func:`check_id_rows` is the one check of token-id rows, :func:`right_pad` the one
right-padder (the training collators use both); :func:`id_lists_to_tensors` turns the lists into tensors.
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from arlm.types_arlm import PADDING, PROMPT
from arlm.network.value_checks import is_int

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
    rows = check_id_rows("prefix_ids", prefix_ids)
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
    rows = check_id_rows("suffix_ids", suffix_ids)
    pad, bos, eos = _check_special_ids(pad_token_id, bos_token_id, eos_token_id)
    _check_options(max_seq_len, truncate, add_bos, add_eos)
    framed = [
        ([bos] if add_bos == "output" and bos is not None else [])
        + row
        + ([eos] if add_eos and eos is not None else [])
        for row in rows
    ]
    padded = right_pad(framed, _width(framed, max_seq_len, truncate), pad)
    return {**padded, "target_ids": [list(row) for row in padded["input_ids"]]}


def right_pad(rows: Sequence[Sequence[int]], width: int, pad_token_id: int) -> Dict[str, List[List[int]]]:
    """Each row cut to its first ``width`` ids and followed by ``pad_token_id`` up to ``width``.

    Returns lists of ``width`` ids per row: ``input_ids`` and ``attention_mask`` (1 on real
    tokens, 0 on padding). The ids are taken as given; callers check them.
    """
    input_ids, attention_mask = [], []
    for row in rows:
        row = list(row[:width])
        input_ids.append(row + [pad_token_id] * (width - len(row)))
        attention_mask.append([1] * len(row) + [0] * (width - len(row)))
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def id_lists_to_tensors(batch: Mapping[str, List[List[int]]]) -> Dict[str, torch.Tensor]:
    """The ``(B, width)`` long tensors of the lists returned by the ``prepare_*_ids_arlm`` helpers."""
    return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}


def _width(rows: List[List[int]], max_seq_len: Optional[int], truncate: Optional[str]) -> int:
    """The padded width of the ``prepare_*_ids_arlm`` helpers (their docstrings give the rule)."""
    if truncate == "block":
        return max_seq_len
    longest = max(len(row) for row in rows)
    return max(longest, max_seq_len or 0) if truncate == "max" else longest


def check_id_rows(name: str, rows: Any) -> List[List[int]]:
    """``rows`` (lists, tensors or arrays of ids) as a list of lists of Python ints.

    The one check of token-id rows, for these helpers and the collators alike: floats (``7.9``
    would become 7), booleans (``True`` would become 1) and negative ids raise ``ValueError``,
    a row that is not a sequence ``TypeError``, each naming ``name[i]`` and the value."""
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
        bad = [t for t in row if not is_int(t) or t < 0]
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
        if not is_int(value) or value < 0:
            expected = "a non-negative integer" + (" or None" if optional else "")
            raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(pad), None if bos is None else int(bos), None if eos is None else int(eos)


def _check_options(max_seq_len: Any, truncate: Any, add_bos: Any, add_eos: Any) -> None:
    if max_seq_len is not None and (not is_int(max_seq_len) or max_seq_len < 1):
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
