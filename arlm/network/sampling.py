"""The one next-token sampler (greedy, temperature, top-k, top-p), shared by both faces.

Filtering reuses Hugging Face's logits warpers (``TemperatureLogitsWarper``,
``TopKLogitsWarper``, ``TopPLogitsWarper``), so ``top_p`` keeps the smallest set of tokens whose
probability reaches ``p`` exactly as ``generate()`` does; greedy is an argmax.
"""

import math
from typing import Optional, Tuple

import torch
from jaxtyping import Float, Integer
from torch import Tensor
from transformers.generation.logits_process import (
    LogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from arlm.network.value_checks import check_int_at_least, is_number

SAMPLING_METHODS = ("greedy", "sample", "sample_top_k", "sample_top_p")


class Sampler:
    """Pick one token per row from next-token logits.

    Args:
        method: ``greedy`` (argmax), ``sample`` (the full distribution), ``sample_top_k``
            (the ``top_k`` most likely tokens) or ``sample_top_p`` (the nucleus of mass ``top_p``).
            ``sample_top_k`` with ``top_k=1`` is greedy.
        top_k: tokens kept by ``sample_top_k``, at least 1.
        top_p: probability mass kept by ``sample_top_p``, in (0, 1].
        temperature: logits are divided by it before sampling, > 0 (greedy ignores it).

    All arguments are checked whatever the method, so a bad config fails when it is built.
    """

    def __init__(
        self,
        method: str = "sample",
        top_k: int = 1000,
        top_p: float = 0.9,
        temperature: float = 1.0,
    ):
        if method not in SAMPLING_METHODS:
            raise ValueError(f"sampling_method must be one of {SAMPLING_METHODS}, got {method!r}")
        top_k = check_int_at_least("top (top-k)", top_k, 1)
        for name, value in (("p (top-p)", top_p), ("temperature", temperature)):
            if not is_number(value):
                raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__}); e.g. p=0.9, not p='0.9'")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"p (top-p) must be in (0, 1], got {top_p!r}")
        if not temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if not math.isfinite(temperature):
            raise ValueError(f"temperature must be finite, got {temperature!r}")
        self.method, self.top_k, self.top_p, self.temperature = method, top_k, top_p, temperature
        self.greedy = method == "greedy" or (method == "sample_top_k" and top_k == 1)
        warpers = []
        if temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(temperature))
        if method == "sample_top_k":
            warpers.append(TopKLogitsWarper(top_k))
        elif method == "sample_top_p" and top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
        self.warpers: Tuple[LogitsProcessor, ...] = tuple(warpers)

    def filter_logits(
        self, logits: Float[Tensor, "batch vocab"]
    ) -> Float[Tensor, "batch vocab"]:
        """Temperature-scaled logits with every token outside the kept set at ``-inf``."""
        for warper in self.warpers:
            logits = warper(None, logits)  # HF warpers take (input_ids, scores); these ignore input_ids
        return logits

    def __call__(
        self,
        logits: Float[Tensor, "batch vocab"],
        generator: Optional[torch.Generator] = None,
    ) -> Integer[Tensor, " batch"]:
        """One token id per row (long); random draws use ``generator`` or the global RNG."""
        if self.greedy:
            return logits.argmax(dim=-1)
        probs = self.filter_logits(logits).float().softmax(dim=-1)
        try:
            return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
        except RuntimeError as error:
            if bool(torch.isfinite(logits).all()):
                raise
            raise ValueError(
                "the model's next-token logits hold NaN/Inf, so no token can be sampled; its "
                "weights (or the checkpoint they came from) are probably NaN/Inf"
            ) from error
