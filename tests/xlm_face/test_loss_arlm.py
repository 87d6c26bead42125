import math

import pytest
import torch
import torch.nn.functional as F

from arlm.loss_arlm import ARLMLoss
from arlm.model_arlm import RotaryTransformerARLMModel
from tests.conftest import TINY_MODEL_KWARGS, VOCAB_SIZE


def make_batch(batch=4, seq=32, seed=0, pad_last_row=0, right_padded=None):
    """Right-padded LM batch: targets are the inputs shifted left, -100 at the end and on pads;
    ``right_padded``: the collator's declaration (None: absent)."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(7, VOCAB_SIZE, (batch, seq), generator=g)
    attention_mask = torch.ones(batch, seq, dtype=torch.long)
    if pad_last_row:
        attention_mask[-1, -pad_last_row:] = 0
        input_ids[-1, -pad_last_row:] = 0
    target_ids = torch.cat([input_ids[:, 1:], torch.full((batch, 1), -100)], dim=1)
    target_ids = target_ids.masked_fill(~attention_mask.roll(-1, dims=1).bool(), -100)
    target_ids[:, -1] = -100
    out = {"input_ids": input_ids, "attention_mask": attention_mask, "target_ids": target_ids}
    if right_padded is not None:
        out["right_padded"] = right_padded
    return out


@pytest.fixture
def loss_fn():
    torch.manual_seed(0)
    loss = ARLMLoss()
    loss.model = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS)
    return loss


def test_built_without_arguments_then_injected():
    loss = ARLMLoss()
    assert loss.model is None and loss.tokenizer is None
    loss.configure(pl_module=None)


def test_loss_is_finite_scalar_with_grad(loss_fn):
    out = loss_fn(make_batch(), 0, 0, "lm")
    loss = out["loss"]
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in loss_fn.model.parameters())
    assert out["nlls"].shape == (4, 32) and not out["nlls"].requires_grad
    assert out["batch_loss"] == loss.detach()


def test_untrained_loss_is_near_log_vocab(loss_fn):
    loss = loss_fn(make_batch())["loss"].item()
    assert abs(loss - math.log(VOCAB_SIZE)) < 0.5


def test_changing_targets_changes_loss(loss_fn):
    batch = make_batch()
    before = loss_fn(batch)["loss"]
    batch["target_ids"] = torch.where(
        batch["target_ids"] == -100, -100, (batch["target_ids"] - 6) % (VOCAB_SIZE - 7) + 7
    )
    assert not torch.isclose(before, loss_fn(batch)["loss"])


def test_equals_hand_computed_shifted_cross_entropy(loss_fn):
    batch = make_batch(pad_last_row=5)
    out = loss_fn(batch)
    logits = loss_fn.model(batch["input_ids"])
    terms = []
    for b in range(4):
        n = int(batch["attention_mask"][b].sum())
        for i in range(n - 1):
            terms.append(-F.log_softmax(logits[b, i], -1)[batch["input_ids"][b, i + 1]])
    expected = torch.stack(terms).mean()
    torch.testing.assert_close(out["loss"], expected, atol=1e-5, rtol=1e-5)
    assert int(out["target_mask"].sum()) == len(terms)
    assert (out["nlls"][~out["target_mask"]] == 0).all()


def test_all_ignored_targets_give_exactly_zero(loss_fn):
    batch = make_batch()
    batch["target_ids"].fill_(-100)
    loss = loss_fn(batch)["loss"]
    assert loss.item() == 0.0
    loss.backward()


def test_left_padded_batch_gets_a_mask_and_matches_unpadded(loss_fn):
    """In eager mode a batch that breaks the right-padding contract is still computed right."""
    right = make_batch(batch=1, seq=12)
    pad = 4
    left = {
        "input_ids": torch.cat([torch.zeros(1, pad, dtype=torch.long), right["input_ids"]], 1),
        "attention_mask": torch.cat([torch.zeros(1, pad, dtype=torch.long), right["attention_mask"]], 1),
        "target_ids": torch.cat([torch.full((1, pad), -100), right["target_ids"]], 1),
    }
    torch.testing.assert_close(loss_fn(left)["loss"], loss_fn(right)["loss"], atol=1e-5, rtol=1e-5)


def test_missing_key(loss_fn):
    batch = make_batch()
    del batch["target_ids"]
    with pytest.raises(KeyError, match=r"missing \['target_ids'\]"):
        loss_fn(batch)


def test_empty_batch(loss_fn):
    batch = {k: v[:0] for k, v in make_batch().items()}
    with pytest.raises(ValueError, match=r"non-empty .* got shape \(0, 32\)"):
        loss_fn(batch)


def test_mismatched_shapes(loss_fn):
    batch = make_batch()
    batch["target_ids"] = batch["target_ids"][:, :-1]
    with pytest.raises(ValueError, match=r"target_ids must have the shape of input_ids \(4, 32\)"):
        loss_fn(batch)


@pytest.mark.parametrize("right_padded", [True, None])
def test_training_step_compiles_without_graph_breaks(loss_fn, right_padded):
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(loss_fn.loss_fn)(make_batch(pad_last_row=3, right_padded=right_padded))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_right_padded_training_batch_reaches_sdpa_without_a_mask(loss_fn, sdpa_calls):
    loss_fn(make_batch(pad_last_row=7, right_padded=True))
    assert sdpa_calls and all(mask is None and causal for mask, causal in sdpa_calls)


def test_mask_is_built_once_per_forward_not_per_layer(monkeypatch):
    import arlm.network.decoder

    calls = []
    build = arlm.network.decoder.attention_inputs

    def counting_build(*args, **kwargs):
        calls.append(1)
        return build(*args, **kwargs)

    monkeypatch.setattr(arlm.network.decoder, "attention_inputs", counting_build)
    model = RotaryTransformerARLMModel(**dict(TINY_MODEL_KWARGS, num_layers=3))
    model(make_batch()["input_ids"], torch.ones(4, 32, dtype=torch.long))
    assert len(calls) == 1


def _loss_and_grads(loss_fn, batch):
    out = loss_fn(batch)
    grads = torch.autograd.grad(out["loss"], list(loss_fn.model.parameters()))
    return out, grads


@pytest.mark.parametrize("tied", [False, True])
def test_chunked_loss_has_the_values_and_gradients_of_the_whole_batch(loss_fn, monkeypatch, tied):
    import arlm.loss_arlm

    torch.manual_seed(0)
    loss_fn.model = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS, tie_word_embeddings=tied)
    batch = make_batch(pad_last_row=5)
    whole, whole_grads = _loss_and_grads(loss_fn, batch)
    calls = []
    loss_fn.logits_per_chunk = 20 * VOCAB_SIZE  # 128 tokens -> 7 chunks
    monkeypatch.setattr(arlm.loss_arlm, "checkpoint", lambda *a, **k: calls.append(1) or torch.utils.checkpoint.checkpoint(*a, **k))
    chunked, chunked_grads = _loss_and_grads(loss_fn, batch)
    assert len(calls) == 7
    torch.testing.assert_close(chunked["loss"], whole["loss"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(chunked["nlls"], whole["nlls"], atol=1e-6, rtol=1e-6)
    assert torch.equal(chunked["target_mask"], whole["target_mask"])
    for got, want in zip(chunked_grads, whole_grads):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_a_model_without_decoder_and_head_is_scored_on_its_logits():
    torch.manual_seed(0)
    network = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS)

    class LogitsOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = network

        def forward(self, ids, attention_mask=None):
            return self.inner(ids, attention_mask=attention_mask)

    batch = make_batch()
    want = ARLMLoss(model=network)(batch)
    got = ARLMLoss(model=LogitsOnly(), logits_per_chunk=20 * VOCAB_SIZE)(batch)
    torch.testing.assert_close(got["nlls"], want["nlls"], atol=1e-6, rtol=1e-6)


def test_chunked_training_step_compiles_without_graph_breaks(loss_fn):
    loss_fn.logits_per_chunk = 40 * VOCAB_SIZE
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(loss_fn.loss_fn)(make_batch(right_padded=True))
    assert explanation.graph_break_count == 0, explanation.break_reasons


@pytest.mark.parametrize("value", [0, -5, 2.5, "1024", True])
def test_a_bad_chunk_size_is_refused(value):
    with pytest.raises(ValueError, match="loss.logits_per_chunk"):
        ARLMLoss(logits_per_chunk=value)


def test_chunking_can_be_turned_off(loss_fn, monkeypatch):
    import arlm.loss_arlm

    calls = []
    monkeypatch.setattr(arlm.loss_arlm, "checkpoint", lambda *a, **k: calls.append(1))
    loss_fn.logits_per_chunk = None
    loss_fn(make_batch(batch=64, seq=64))
    assert calls == []
