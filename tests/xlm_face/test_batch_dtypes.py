"""Tensor dtypes and target values the model and the loss do not take are refused naming the
tensor, the dtype or value and the conversion (before: the embedding's or cross entropy's own
RuntimeError/IndexError; uint8 targets were taken, and their -100 wrapped to 156)."""

import pytest
import torch

from arlm.loss_arlm import ARLMLoss
from arlm.model_arlm import RotaryTransformerARLMModel

VOCAB = 27


@pytest.fixture(scope="module")
def loss_fn():
    torch.manual_seed(0)
    return ARLMLoss(RotaryTransformerARLMModel(num_embeddings=VOCAB, d_model=32, num_layers=1, nhead=2, rotary_emb_dim=16))


def _batch(**changes):
    ids = torch.randint(0, VOCAB, (2, 5))
    targets = ids.clone()
    targets[:, 0] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones(2, 5, dtype=torch.bool), "target_ids": targets}
    return {**batch, **{k: v(batch[k]) for k, v in changes.items()}}


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.float32, torch.complex64])
def test_token_ids_of_other_dtypes_are_refused(loss_fn, dtype):
    with pytest.raises(ValueError, match=rf"token ids must be an int64 or int32 integer tensor, got dtype {dtype}.*ids.long\(\)"):
        loss_fn(_batch(input_ids=lambda ids: ids.to(dtype)))


def test_int32_token_ids_are_taken(loss_fn):
    reference = loss_fn(_batch())["loss"]
    torch.manual_seed(0)
    assert torch.isfinite(loss_fn(_batch(input_ids=lambda ids: ids.int()))["loss"])
    assert torch.isfinite(reference)


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.float32, torch.bool])
def test_targets_other_than_int64_are_refused(loss_fn, dtype):
    with pytest.raises(ValueError, match=rf"target_ids must be an int64 tensor .* got dtype {dtype}"):
        loss_fn(_batch(target_ids=lambda t: t.to(dtype)))


@pytest.mark.parametrize("value", [VOCAB, 1000, -5, -101])
def test_targets_outside_the_vocabulary_are_named(loss_fn, value):
    def corrupt(targets):
        targets = targets.clone()
        targets[1, 3] = value
        return targets

    with pytest.raises(ValueError, match=rf"target_ids\[1, 3\] = {value} is outside \[0, {VOCAB}\)"):
        loss_fn(_batch(target_ids=corrupt))
