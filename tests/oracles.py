"""Reference implementations the tests (and the generation benchmark) compare the package against."""

import torch
from jaxtyping import Integer
from torch import Tensor


@torch.no_grad()
def greedy_decode_without_cache(
    model: torch.nn.Module,
    input_ids: Integer[Tensor, "batch prompt_len"],
    attention_mask: Integer[Tensor, "batch prompt_len"],
    max_new_tokens: int,
) -> Integer[Tensor, "batch width"]:
    """The quadratic reference: re-run the whole prefix for every new token (argmax, no EOS
    stop); ``model`` is the xLM face, called as ``model(ids, attention_mask=...)``."""
    ids, mask = input_ids, attention_mask.long()
    for _ in range(max_new_tokens):
        logits = model(ids, attention_mask=mask)[:, -1]
        ids = torch.cat([ids, logits.argmax(dim=-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return ids
