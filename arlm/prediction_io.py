"""What goes into and comes out of :class:`arlm.predictor_arlm.ARLMPredictor`: the prompt batch
checks and the JSON-serialisable rows of a prediction."""

import math
from typing import Any, Dict, List, Mapping, Tuple

import torch
from torch import Tensor

from arlm.network.inputs import reads_values_for_free


def prompt_tensors(batch: Mapping[str, Any], device: torch.device) -> Tuple[Tensor, Tensor]:
    """``input_ids`` and ``attention_mask`` (bool) of a left-padded prompt batch, on ``device``.

    Shapes are always checked; that every row has a real token and is left-padded is checked
    where it costs no device synchronisation (a batch still on the CPU, as the ARLM prediction
    collator builds it).
    """
    for key in ("input_ids", "attention_mask"):
        if key not in batch:
            raise KeyError(f"prediction batch has no {key!r} (it has {sorted(batch)})")
    input_ids, mask = batch["input_ids"], batch["attention_mask"]
    if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(
            f"empty or malformed prompt batch: input_ids of shape {tuple(input_ids.shape)}; "
            f"expected (batch >= 1, prompt_len >= 1)"
        )
    if tuple(mask.shape) != tuple(input_ids.shape):
        raise ValueError(
            f"attention_mask shape {tuple(mask.shape)} differs from input_ids shape "
            f"{tuple(input_ids.shape)}"
        )
    mask = mask.bool()
    if reads_values_for_free(mask):
        if not mask.any(dim=1).all():
            raise ValueError("a prompt row has no real token (attention_mask all 0)")
        if (mask[:, 1:] < mask[:, :-1]).any():
            raise ValueError(
                "prompts must be left-padded (attention_mask 0...0 1...1 in every row), as "
                "ARLMSeq2SeqPredCollator makes them"
            )
    return input_ids.to(device), mask.to(device)


def special_ids(tokenizer: Any, vocab_size: int) -> Tuple[int, int]:
    """The tokenizer's ``(pad_token_id, eos_token_id)``, both needed to generate; ``ValueError``
    when one is missing or a special id (BOS included) is outside ``[0, vocab_size)``."""
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    if pad_id is None or eos_id is None:
        raise ValueError(
            f"the tokenizer needs a pad and an EOS token to generate, got pad_token_id="
            f"{pad_id}, eos_token_id={eos_id}"
        )
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None and not 0 <= value < vocab_size:
            raise ValueError(
                f"tokenizer {name}={value} is outside the model's vocabulary [0, {vocab_size}); "
                f"use the tokenizer the model was built for"
            )
    return pad_id, eos_id


def decode_without_special(tokenizer: Any, rows: List[List[int]]) -> List[str]:
    """Text of each row without special tokens (removed here too, since some tokenizers,
    e.g. xlm-core's SimpleSpaceTokenizer, ignore ``skip_special_tokens``)."""
    special = set(getattr(tokenizer, "all_special_ids", ()))
    return tokenizer.batch_decode([[t for t in row if t not in special] for row in rows], skip_special_tokens=True)


def prediction_rows(tokenizer: Any, batch: Mapping[str, Any], preds: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """One JSON-serialisable row per example of ``preds`` (what ``ARLMPredictor.predict``
    returned for ``batch``), in batch order.

    Keys: ``text`` (prompt and continuation), ``generated_text`` (continuation only),
    ``prompt``, ``text_with_spl_tokens``, ``generated_length`` (tokens generated, EOS
    included), ``time_taken``; ``answer`` and ``truth`` (decoded ``target_ids``) when the
    batch has them; every ``metric_*`` entry of ``preds``, per row when it is per-sample.
    Special tokens are removed from every text but ``text_with_spl_tokens``.
    """
    ids, mask = preds["ids"].tolist(), preds["attention_mask"].tolist()
    start = preds["output_start_idx"]
    prompts = decode_without_special(tokenizer, [_real(r[:start], m[:start]) for r, m in zip(ids, mask)])
    full = decode_without_special(tokenizer, [_real(r, m) for r, m in zip(ids, mask)])
    truths = decode_without_special(tokenizer, batch["target_ids"].tolist()) if "target_ids" in batch else None
    rows = []
    for i in range(len(ids)):
        row = {
            "text": full[i],
            "generated_text": preds["text"][i],
            "prompt": prompts[i],
            "text_with_spl_tokens": preds["text_with_spl_tokens"][i],
            "generated_length": sum(mask[i][start:]),
            "time_taken": float(preds["time_taken"][i]),
        }
        if "answer" in batch:
            row["answer"] = batch["answer"][i]
        if truths is not None:
            row["truth"] = truths[i]
        for key, value in preds.items():
            if key.startswith("metric_"):
                row[key] = _row_value(value, i, len(ids))
        rows.append(row)
    return rows


def _real(row: List[int], mask: List[int]) -> List[int]:
    return [t for t, m in zip(row, mask) if m]


def _row_value(value: Any, i: int, batch_size: int) -> Any:
    """Row ``i`` of a per-sample metric (list or tensor of length ``batch_size``), else the value;
    NaN (a row the metric could not judge) becomes ``None``, JSON's null."""
    if isinstance(value, Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and len(value) == batch_size:
        value = value[i]
    return None if isinstance(value, float) and math.isnan(value) else value
