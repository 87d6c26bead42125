"""No host synchronisation in the training step or the decode step, and no graph break either.

A tensor on the ``meta`` device has a shape but no values: any code that reads a value on the
host (``.item()``, ``bool(tensor)``, ``.tolist()``) raises there. Running the training step and
the decode step on ``meta`` therefore proves that on an accelerator they never wait for the
device, which is what checks such as "is this batch right-padded?" or "are these ids in range?"
would cost at every step. The same steps compile with ``fullgraph=True`` and no graph break.
"""

import pytest
import torch

from arlm.network.kv_cache import new_cache
from arlm.loss_arlm import ARLMLoss
from arlm.model_arlm import RotaryTransformerARLMModel
from arlm.predictor_arlm import ARLMPredictor
from tests.conftest import TINY_MODEL_KWARGS

B, PROMPT, WIDTH = 3, 6, 10
KWARGS = dict(TINY_MODEL_KWARGS, num_layers=2, nhead=4, num_kv_heads=2, rotary_emb_dim=4)


def training_batch(device):
    ids = torch.randint(7, 57, (B, 12), device=device)
    mask = torch.ones(B, 12, dtype=torch.long, device=device)
    mask[0, 8:] = 0  # right padding
    return {"input_ids": ids, "attention_mask": mask, "target_ids": ids.masked_fill(mask == 0, -100)}


def decode_inputs(model, kind, device):
    """(predictor, prompt, step token, whole-width padding mask, cache) on ``device``."""
    predictor = ARLMPredictor(max_steps=4, max_length=WIDTH, model=model, sampling_method="greedy", cache=kind)
    mask = torch.zeros(B, WIDTH, dtype=torch.bool, device=device)
    mask[:, 2:PROMPT + 1] = True  # left-padded prompts and the first generated token
    mask[1, :2] = True
    cache = new_cache(kind, model.config, B, WIDTH, torch.float32, device)
    prompt = torch.randint(7, 57, (B, PROMPT), device=device)
    return predictor, prompt, prompt[:, -1:], mask, cache


def test_training_step_reads_no_value_on_the_host():
    with torch.device("meta"):
        model = RotaryTransformerARLMModel(**KWARGS)
    loss = ARLMLoss(model)(training_batch("meta"))["loss"]
    loss.backward()
    assert loss.device.type == "meta" and model.lm_head.weight.grad is not None


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_decode_step_reads_no_value_on_the_host(kind):
    with torch.device("meta"):
        model = RotaryTransformerARLMModel(**KWARGS)
    predictor, prompt, token, mask, cache = decode_inputs(model, kind, "meta")
    predictor._next_token_logits(prompt, mask, cache)
    logits = predictor._next_token_logits(token, mask, cache)
    assert logits.shape == (B, 57) and logits.device.type == "meta"


def test_the_same_steps_on_the_cpu_still_check_their_input():
    """The checks the meta run skipped are done where reading values is free."""
    model = RotaryTransformerARLMModel(**KWARGS)
    batch = training_batch("cpu")
    batch["input_ids"][0, 0] = 57
    with pytest.raises(ValueError, match=r"token id 57 is outside \[0, 57\)"):
        ARLMLoss(model)(batch)


def test_decode_step_compiles_to_one_graph_with_the_checks_on():
    torch._dynamo.reset()
    model = RotaryTransformerARLMModel(**KWARGS).eval()
    predictor, prompt, token, mask, cache = decode_inputs(model, "static", "cpu")
    with torch.no_grad():
        predictor._next_token_logits(prompt, mask, cache)
        explanation = torch._dynamo.explain(predictor._next_token_logits)(token, mask, cache)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    torch._dynamo.reset()
