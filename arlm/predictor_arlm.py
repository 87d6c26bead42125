"""``ARLMPredictor``: left-to-right generation for xlm-core, prefilled once and then decoded one
token per step through an explicit KV cache (prompt -> predictor -> cache -> sampler -> text)."""

import time
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from jaxtyping import Bool, Integer
from torch import Tensor

from arlm.network.attention import positions_from_padding_mask
from arlm.network.kv_cache import CACHE_KINDS, KVCache, new_cache
from arlm.network.sampling import Sampler
from arlm.network.value_checks import check_int_at_least
from arlm.prediction_io import decode_without_special, prediction_rows, prompt_tensors, special_ids
from arlm.prompt_ids import id_lists_to_tensors, prepare_prefix_ids_arlm
from arlm.types_arlm import ARLMModel, ARLMPredictionDict


class ARLMPredictor:
    """Generate continuations of left-padded prompt batches (``ARLMSeq2SeqPredCollator`` output).

    Built from config without a model; xlm-core then sets ``model``, ``tokenizer`` and
    ``noise_schedule`` (accepted for symmetry with the other families, unused). A plain object,
    not an ``nn.Module``: it has no parameters of its own, and the model stays registered once,
    under the Harness. ``model`` is either face, ``RotaryTransformerARLMModel`` or
    ``ArlowForCausalLM``: both hold the decoder as ``.model`` and the head as ``.lm_head``
    (:class:`arlm.types_arlm.ARLMModel`).

    Args:
        max_steps: most tokens generated per prompt.
        max_length: most tokens per row, prompt width included; generation stops at
            ``min(max_steps, max_length - prompt width)`` new tokens. Prompts that fill it get
            none (with a warning); prompts wider than it are an error.
        sampling_method, top, p, temperature: see :class:`arlm.network.sampling.Sampler`
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
        model: Optional[ARLMModel] = None,
        temperature: float = 1.0,
        cache: str = "dynamic",
        compile: bool = False,
    ):
        max_steps, max_length = check_int_at_least("max_steps", max_steps, 1), check_int_at_least("max_length", max_length, 2)
        if cache not in CACHE_KINDS:
            raise ValueError(f"cache must be one of {CACHE_KINDS}, got {cache!r}")
        if compile and cache != "static":
            raise ValueError(
                "compile=True needs cache='static': a growing cache changes shapes every step "
                "and would recompile"
            )
        self.max_steps, self.max_length = max_steps, max_length
        self.sampler = Sampler(sampling_method, top, p, temperature)
        self.cache, self.compile = cache, compile
        self.tokenizer, self.noise_schedule, self.model = tokenizer, noise_schedule, model
        self._compiled_logits = None

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
        ``time_taken[i]`` is the wall time from the call until row ``i`` ended. Prompts as wide
        as ``max_length`` have reached it: their rows come back unchanged, text ``""``, with a
        warning; wider prompts raise ``ValueError`` naming both widths and the fix.
        """
        start = time.perf_counter()
        self._require_components()
        pad_id, eos_id = special_ids(self.tokenizer, self.model.lm_head.out_features)
        input_ids, prompt_mask = prompt_tensors(batch, next(self.model.parameters()).device)
        self._check_room(input_ids.shape[1])
        (B, P), max_new = input_ids.shape, max(0, min(self.max_steps, self.max_length - input_ids.shape[1]))
        ids, last_step, end_times = input_ids, torch.full((B,), -1, device=input_ids.device), []
        if max_new > 0:
            ids, last_step, end_times = self._generate(input_ids, prompt_mask, max_new, pad_id, eos_id)
        ends, rows = last_step.tolist(), ids.tolist()
        generated = torch.arange(max_new, device=ids.device)[None, :] <= last_step[:, None]
        return {
            "text": decode_without_special(self.tokenizer, [row[P : P + end + 1] for row, end in zip(rows, ends)]),
            "text_with_spl_tokens": self.tokenizer.batch_decode(rows, skip_special_tokens=False),
            "ids": ids,
            "attention_mask": torch.cat([prompt_mask.long(), generated.long()], dim=1),
            "positions": positions_from_padding_mask(torch.cat([prompt_mask, torch.ones_like(generated)], dim=1)),
            "time_taken": [(end_times[end] if end_times else time.perf_counter()) - start for end in ends],
            "output_start_idx": P,
        }

    def _check_room(self, width: int) -> None:
        """Refuse prompts wider than ``max_length``; warn when they leave no room to generate."""
        fix = (
            f"Fix: raise max_length (predictor.max_length, now {self.max_length}) to at least {width} + the "
            f"tokens to generate, or give shorter prompts"
        )
        if width > self.max_length:
            raise ValueError(
                f"the prompts are {width} tokens wide (left-padded to the longest), more than max_length="
                f"{self.max_length}, which counts prompt and generated tokens together: nothing can be "
                f"generated for them. {fix}"
            )
        if width == self.max_length:
            warnings.warn(f"the prompts are {width} tokens wide and fill max_length={self.max_length}: no token is generated. {fix}")

    def _generate(
        self,
        input_ids: Integer[Tensor, "batch prompt_len"],
        prompt_mask: Bool[Tensor, "batch prompt_len"],
        max_new: int,
        pad_id: int,
        eos_id: int,
    ) -> Tuple[Integer[Tensor, "batch width"], Integer[Tensor, " batch"], List[float]]:
        """Prefill once, then sample and feed one token per step.

        Returns ids ``(B, P + max_new)``, the step at which each row ended (its EOS, or the last
        step run) and the ``time.perf_counter()`` at the end of every step. One padding mask,
        as wide as the output, is filled in as tokens are generated; the decoder derives the
        positions and the attention mask from it and the cache.
        """
        (B, P), device = input_ids.shape, input_ids.device
        ids = torch.cat([input_ids, input_ids.new_full((B, max_new), pad_id)], dim=1)
        mask = torch.cat([prompt_mask, prompt_mask.new_zeros((B, max_new))], dim=1)
        param = next(self.model.parameters())
        cache = new_cache(self.cache, self.model.model.config, B, P + max_new, param.dtype, device)
        logits = self._next_token_logits(input_ids, mask, cache)
        if not bool(torch.isfinite(logits).all()):  # NaN weights: greedy would decode '' silently
            raise ValueError(
                "the model's logits for the prompt hold NaN/Inf: its weights (or the checkpoint "
                "they came from) are probably NaN/Inf; load a checkpoint written before the divergence"
            )
        step = self._decode_step()
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        last_step = torch.full((B,), max_new - 1, dtype=torch.long, device=device)
        end_times = []
        for t in range(max_new):
            token = self.sampler(logits).masked_fill(finished, pad_id)  # (B,)
            ids[:, P + t] = token
            end_times.append(time.perf_counter())
            ended = (token == eos_id) & ~finished
            last_step.masked_fill_(ended, t)
            finished |= ended
            if t == max_new - 1 or bool(finished.all()):  # the one host sync per step
                break
            mask[:, P + t] = True
            logits = step(token[:, None], mask, cache)
        return ids, last_step, end_times

    def _next_token_logits(
        self, tokens: Integer[Tensor, "batch seq"], mask: Bool[Tensor, "batch width"], cache: KVCache
    ) -> Tensor:
        """Logits ``(B, V)`` after ``tokens``, fed through ``cache`` (the head runs on the last
        position only)."""
        hidden = self.model.last_hidden_state(tokens, attention_mask=mask, cache=cache)
        return self.model.lm_head(hidden[:, -1])

    def _decode_step(self):
        """:meth:`_next_token_logits` for the one-token steps, compiled once per predictor when
        asked (static shapes: reused by every step of every same-shaped batch)."""
        if not self.compile:
            return self._next_token_logits
        if self._compiled_logits is None:
            self._compiled_logits = torch.compile(self._next_token_logits, fullgraph=True, dynamic=False)
        return self._compiled_logits

    def to_dict(
        self,
        batch: Mapping[str, Any],
        preds: Mapping[str, Any],
        batch_idx: Optional[int] = None,
        dataloader_idx: Optional[int] = None,
        dataloader_name: Optional[str] = None,
    ) -> List[Dict[str, Any]]:
        """One JSON-serialisable row per example, in batch order (:func:`arlm.prediction_io.prediction_rows`)."""
        return prediction_rows(self.tokenizer, batch, preds)

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

    def _require_components(self) -> None:
        for name in ("model", "tokenizer"):
            if getattr(self, name) is None:
                raise ValueError(
                    f"ARLMPredictor.{name} is not set; xlm-core sets it after building the "
                    f"predictor, or pass {name}= to the constructor"
                )
        if not isinstance(self.model, ARLMModel):
            raise TypeError(
                f"ARLMPredictor.model must hold the decoder as .model and the output projection as "
                f".lm_head (RotaryTransformerARLMModel or ArlowForCausalLM), got {type(self.model).__name__}"
            )
