"""``ARLMPredictor``: left-to-right generation for xlm-core, prefilled once and then decoded one
token per step through an explicit KV cache (prompt -> predictor -> cache -> sampler -> text)."""

import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Integer
from torch import Tensor

from arlm.attention import build_attention_mask
from arlm.datamodule_arlm import id_lists_to_tensors, prepare_prefix_ids_arlm
from arlm.kv_cache import DynamicKVCache, StaticKVCache
from arlm.rope import positions_from_padding_mask
from arlm.sampling import Sampler
from arlm.types_arlm import ARLMPredictionDict

CACHE_KINDS = ("dynamic", "static")


class ARLMPredictor:
    """Generate continuations of left-padded prompt batches (``ARLMSeq2SeqPredCollator`` output).

    Built from config without a model; xlm-core then sets ``model``, ``tokenizer`` and
    ``noise_schedule`` (accepted for symmetry with the other families, unused). A plain object,
    not an ``nn.Module``: it has no parameters of its own, and the model stays registered once,
    under the Harness.

    Args:
        max_steps: most tokens generated per prompt.
        max_length: most tokens per row, prompt width included; generation stops at
            ``min(max_steps, max_length - prompt width)`` new tokens (none when the prompts
            already fill ``max_length``).
        sampling_method, top, p, temperature: see :class:`arlm.sampling.Sampler`
            (``top`` is top-k, ``p`` is top-p; ``sample_top_k`` with ``top=1`` is greedy).
        cache: ``dynamic`` (grows per step) or ``static`` (preallocated to the output width).
        compile: ``torch.compile`` the one-token decode step (needs ``cache="static"`` so that
            every step has the same shapes and the compiled step is reused).

    Rows stop independently at EOS (emitting ``pad_token_id`` afterwards); the batch stops when
    every row has. The model's train/eval mode is left as the caller set it.
    """

    def __init__(
        self,
        max_steps: int,
        max_length: int,
        tokenizer: Any = None,
        noise_schedule: Any = None,
        sampling_method: str = "sample",
        top: int = 1000,
        p: float = 0.9,
        model: Optional[torch.nn.Module] = None,
        temperature: float = 1.0,
        cache: str = "dynamic",
        compile: bool = False,
    ):
        for name, value, least in (("max_steps", max_steps, 1), ("max_length", max_length, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if cache not in CACHE_KINDS:
            raise ValueError(f"cache must be one of {CACHE_KINDS}, got {cache!r}")
        if compile and cache != "static":
            raise ValueError(
                "compile=True needs cache='static': a growing cache changes shapes every step "
                "and would recompile"
            )
        self.max_steps = max_steps
        self.max_length = max_length
        self.sampler = Sampler(sampling_method, top, p, temperature)
        self.cache = cache
        self.compile = compile
        self.tokenizer = tokenizer
        self.noise_schedule = noise_schedule
        self.model = model
        self._compiled_step = None

    @torch.no_grad()
    def predict(
        self,
        batch: Mapping[str, Any],
        batch_idx: Optional[int] = None,
        dataloader_idx: Optional[int] = None,
        dataloader_name: Optional[str] = None,
    ) -> ARLMPredictionDict:
        """Continue every prompt of ``batch`` (``input_ids``, ``attention_mask``; left-padded).

        Returns ids ``(B, P + N)`` with ``N = max(0, min(max_steps, max_length - P))`` whatever the
        step the batch stopped at: the prompt, then the generated tokens, then ``pad_token_id``
        after a row's EOS. ``attention_mask`` is 1 on real prompt tokens and generated tokens up
        to and including EOS; ``positions`` are the RoPE positions of every column;
        ``time_taken[i]`` is the wall time from the call until row ``i`` ended. A prompt as wide
        as ``max_length`` (or wider) has reached it: its row comes back unchanged, text ``""``.
        """
        start = time.perf_counter()
        self._require_components()
        pad_id, eos_id = self._special_ids()
        input_ids, prompt_mask = self._prompt_tensors(batch)
        P = input_ids.shape[1]
        max_new = max(0, min(self.max_steps, self.max_length - P))
        if max_new == 0:
            return self._prompts_only(input_ids, prompt_mask, start)
        ids, positions, last_step, step_end_times = self._generate(
            input_ids, prompt_mask, max_new, pad_id, eos_id
        )
        ends, rows = last_step.tolist(), ids.tolist()
        generated = torch.arange(max_new, device=ids.device)[None, :] <= last_step[:, None]
        return {
            "text": self._decode([row[P : P + end + 1] for row, end in zip(rows, ends)]),
            "text_with_spl_tokens": self.tokenizer.batch_decode(rows, skip_special_tokens=False),
            "ids": ids,
            "attention_mask": torch.cat([prompt_mask.long(), generated.long()], dim=1),
            "positions": positions,
            "time_taken": [step_end_times[end] - start for end in ends],
            "output_start_idx": P,
        }

    def _prompts_only(
        self, input_ids: Tensor, prompt_mask: Tensor, start: float
    ) -> ARLMPredictionDict:
        """The result of :meth:`predict` when there is no room for a new token."""
        rows = input_ids.tolist()
        elapsed = time.perf_counter() - start
        return {
            "text": [""] * len(rows),
            "text_with_spl_tokens": self.tokenizer.batch_decode(rows, skip_special_tokens=False),
            "ids": input_ids,
            "attention_mask": prompt_mask.long(),
            "positions": positions_from_padding_mask(prompt_mask),
            "time_taken": [elapsed] * len(rows),
            "output_start_idx": input_ids.shape[1],
        }

    def _generate(
        self,
        input_ids: Integer[Tensor, "batch prompt_len"],
        prompt_mask: Bool[Tensor, "batch prompt_len"],
        max_new: int,
        pad_id: int,
        eos_id: int,
    ) -> Tuple[Integer[Tensor, "batch width"], Integer[Tensor, "batch width"], Integer[Tensor, " batch"], List[float]]:
        """Prefill once, then sample and feed one token per step.

        Returns ids and positions ``(B, P + max_new)``, the step at which each row ended (its
        EOS, or the last step run) and the ``time.perf_counter()`` at the end of every step.
        """
        B, P = input_ids.shape
        width = P + max_new
        ids = input_ids.new_full((B, width), pad_id)
        ids[:, :P] = input_ids
        key_mask = torch.zeros((B, width), dtype=torch.bool, device=ids.device)
        key_mask[:, :P] = prompt_mask
        positions = generation_positions(prompt_mask, max_new)

        cache = self._new_cache(B, width)
        key_len = width if isinstance(cache, StaticKVCache) else None  # None: keys grow
        logits = self.model(
            input_ids,
            attention_mask=prefill_attention_mask(prompt_mask, key_len or P),
            positions=positions[:, :P],
            cache=cache,
        )[:, -1]
        if not bool(torch.isfinite(logits).all()):  # NaN weights: greedy would decode '' silently
            raise ValueError(
                "the model's logits for the prompt hold NaN/Inf: its weights (or the checkpoint "
                "they came from) are probably NaN/Inf; load a checkpoint written before the divergence"
            )
        step = self._decode_step()
        finished = torch.zeros(B, dtype=torch.bool, device=ids.device)
        last_step = torch.full((B,), max_new - 1, dtype=torch.long, device=ids.device)
        step_end_times = []
        for t in range(max_new):
            token = self.sampler(logits).masked_fill(finished, pad_id)  # (B,)
            ids[:, P + t] = token
            step_end_times.append(time.perf_counter())
            ended = (token == eos_id) & ~finished
            last_step.masked_fill_(ended, t)
            finished |= ended
            if t == max_new - 1 or bool(finished.all()):  # the one host sync per step
                break
            key_mask[:, P + t] = True
            step_mask = key_mask[:, None, : key_len or P + t + 1]  # (B, 1, keys)
            logits = step(token[:, None], positions[:, P + t : P + t + 1], step_mask, cache)
        return ids, positions, last_step, step_end_times

    def to_dict(
        self,
        batch: Mapping[str, Any],
        preds: Mapping[str, Any],
        batch_idx: Optional[int] = None,
        dataloader_idx: Optional[int] = None,
        dataloader_name: Optional[str] = None,
    ) -> List[Dict[str, Any]]:
        """One JSON-serialisable row per example, in batch order.

        Keys: ``text`` (prompt and continuation), ``generated_text`` (continuation only),
        ``prompt``, ``text_with_spl_tokens``, ``generated_length`` (tokens generated, EOS
        included), ``time_taken``; ``answer`` and ``truth`` (decoded ``target_ids``) when the
        batch has them; every ``metric_*`` entry of ``preds``, per row when it is per-sample.
        Special tokens are removed from every text but ``text_with_spl_tokens``.
        """
        ids, mask = preds["ids"].tolist(), preds["attention_mask"].tolist()
        start = preds["output_start_idx"]
        prompts = self._decode([_real(r[:start], m[:start]) for r, m in zip(ids, mask)])
        full = self._decode([_real(r, m) for r, m in zip(ids, mask)])
        truths = self._decode(batch["target_ids"].tolist()) if "target_ids" in batch else None
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

    def generate(self, prompts: List[str]) -> List[str]:
        """Continuations (special tokens removed) of raw text prompts, one per prompt."""
        if len(prompts) == 0:
            raise ValueError("generate() got an empty list of prompts; give at least one")
        self._require_components()
        token_ids = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        batch = prepare_prefix_ids_arlm(
            token_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            truncate=None,
            add_bos="output",
        )
        return self.predict(id_lists_to_tensors(batch))["text"]

    def _decode_step(self):
        """The one-token step ``(token, position, mask, cache) -> logits (B, V)``, compiled once
        per predictor when asked (static shapes: reused by every step of every same-shaped batch)."""
        if not self.compile:
            return self._step_logits
        if self._compiled_step is None:
            self._compiled_step = torch.compile(self._step_logits, fullgraph=True, dynamic=False)
        return self._compiled_step

    def _step_logits(
        self,
        tokens: Integer[Tensor, "batch 1"],
        positions: Integer[Tensor, "batch 1"],
        mask: Bool[Tensor, "batch 1 keys"],
        cache: Any,
    ) -> Tensor:
        return self.model(tokens, attention_mask=mask, positions=positions, cache=cache)[:, -1]

    def _new_cache(self, batch_size: int, width: int) -> Any:
        """A fresh cache for one ``predict`` call (static: ``width`` slots)."""
        if self.cache == "dynamic":
            return DynamicKVCache()
        param = next(self.model.parameters())
        return StaticKVCache.for_decoder(
            self.model.config, batch_size, width, param.dtype, param.device
        )

    def _prompt_tensors(self, batch: Mapping[str, Any]) -> Tuple[Tensor, Tensor]:
        """``input_ids`` and ``attention_mask`` (bool) on the model's device, checked."""
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
        if not mask.any(dim=1).all():
            raise ValueError("a prompt row has no real token (attention_mask all 0)")
        if (mask[:, 1:] < mask[:, :-1]).any():
            raise ValueError(
                "prompts must be left-padded (attention_mask 0...0 1...1 in every row), as "
                "ARLMSeq2SeqPredCollator makes them"
            )
        device = next(self.model.parameters()).device
        return input_ids.to(device), mask.to(device)

    def _require_components(self) -> None:
        for name in ("model", "tokenizer"):
            if getattr(self, name) is None:
                raise ValueError(
                    f"ARLMPredictor.{name} is not set; xlm-core sets it after building the "
                    f"predictor, or pass {name}= to the constructor"
                )

    def _special_ids(self) -> Tuple[int, int]:
        pad_id, eos_id = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        if pad_id is None or eos_id is None:
            raise ValueError(
                f"the tokenizer needs a pad and an EOS token to generate, got pad_token_id="
                f"{pad_id}, eos_token_id={eos_id}"
            )
        vocab = getattr(getattr(self.model, "lm_head", None), "out_features", None)
        for name, value in (("pad_token_id", pad_id), ("eos_token_id", eos_id), ("bos_token_id", getattr(self.tokenizer, "bos_token_id", None))):
            if vocab is not None and value is not None and not 0 <= value < vocab:
                raise ValueError(f"tokenizer {name}={value} is outside the model's vocabulary [0, {vocab}); use the tokenizer the model was built for")
        return pad_id, eos_id

    def _decode(self, rows: List[List[int]]) -> List[str]:
        """Text of each row without special tokens (removed here too, since some tokenizers,
        e.g. xlm-core's SimpleSpaceTokenizer, ignore ``skip_special_tokens``)."""
        special = set(getattr(self.tokenizer, "all_special_ids", ()))
        rows = [[t for t in row if t not in special] for row in rows]
        return self.tokenizer.batch_decode(rows, skip_special_tokens=True)


def generation_positions(
    prompt_mask: Bool[Tensor, "batch prompt_len"], max_new: int
) -> Integer[Tensor, "batch width"]:
    """RoPE positions of the prompt (``cumsum - 1`` of its padding mask) and of ``max_new``
    tokens after it, so a left-padded prompt is positioned exactly as it would be alone."""
    real = prompt_mask.long().sum(dim=1, keepdim=True)  # (B, 1)
    new = real + torch.arange(max_new, device=prompt_mask.device)[None, :]  # (B, max_new)
    return torch.cat([positions_from_padding_mask(prompt_mask), new], dim=1)


def prefill_attention_mask(
    prompt_mask: Bool[Tensor, "batch prompt_len"], key_len: int
) -> Bool[Tensor, "batch prompt_len keys"]:
    """Causal attention among real prompt tokens, as ``(B, P, key_len)`` with ``key_len >= P``:
    the keys past the prompt (unwritten slots of a static cache) are False."""
    P = prompt_mask.shape[1]
    mask, _ = build_attention_mask(prompt_mask, P, 0, prompt_mask.device)  # (B, 1, P, P)
    return F.pad(mask[:, 0], (0, key_len - P), value=False)


@torch.no_grad()
def greedy_decode_without_cache(
    model: torch.nn.Module,
    input_ids: Integer[Tensor, "batch prompt_len"],
    attention_mask: Integer[Tensor, "batch prompt_len"],
    max_new_tokens: int,
) -> Integer[Tensor, "batch width"]:
    """The quadratic reference: re-run the whole prefix for every new token (argmax, no EOS
    stop). Tests and the benchmark compare the cached predictor against it."""
    ids, mask = input_ids, attention_mask.long()
    for _ in range(max_new_tokens):
        positions = positions_from_padding_mask(mask)
        logits = model(ids, attention_mask=mask, positions=positions)[:, -1]
        ids = torch.cat([ids, logits.argmax(dim=-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return ids


def _real(row: List[int], mask: List[int]) -> List[int]:
    return [t for t, m in zip(row, mask) if m]


def _row_value(value: Any, i: int, batch_size: int) -> Any:
    """Row ``i`` of a per-sample metric (list or tensor of length ``batch_size``), else the value."""
    if isinstance(value, Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and len(value) == batch_size:
        return value[i]
    return value
