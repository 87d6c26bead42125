import math

import pytest
import torch

from arlm.network.sampling import Sampler

NUCLEUS_PROBS = torch.tensor([[0.05, 0.5, 0.15, 0.3]])  # sorted: 0.5 (id 1), 0.3 (3), 0.15 (2), 0.05 (0)


def random_logits(batch=64, vocab=50, seed=0):
    return torch.randn(batch, vocab, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_is_argmax():
    logits = random_logits()
    assert torch.equal(Sampler("greedy")(logits), logits.argmax(-1))


def test_top_k_1_equals_greedy_and_keeps_only_the_argmax():
    logits = random_logits()
    sampler = Sampler("sample_top_k", top_k=1)
    assert torch.equal(sampler(logits), logits.argmax(-1))
    kept = torch.isfinite(sampler.filter_logits(logits))
    assert torch.equal(kept, torch.nn.functional.one_hot(logits.argmax(-1), 50).bool())


def test_top_k_keeps_the_k_most_likely():
    logits = random_logits()
    kept = torch.isfinite(Sampler("sample_top_k", top_k=5).filter_logits(logits))
    assert (kept.sum(-1) == 5).all()
    expected = torch.zeros_like(kept).scatter(1, logits.topk(5).indices, True)
    assert torch.equal(kept, expected)


@pytest.mark.parametrize(
    "p, nucleus", [(0.45, {1}), (0.75, {1, 3}), (0.9, {1, 3, 2}), (1.0, {0, 1, 2, 3})]
)
def test_top_p_keeps_exactly_the_nucleus(p, nucleus):
    logits = NUCLEUS_PROBS.log()
    kept = torch.isfinite(Sampler("sample_top_p", top_p=p).filter_logits(logits))[0]
    assert set(kept.nonzero().flatten().tolist()) == nucleus
    draws = Sampler("sample_top_p", top_p=p)(
        logits.expand(2000, -1), generator=torch.Generator().manual_seed(0)
    )
    assert set(draws.unique().tolist()) == nucleus


def test_top_p_renormalises_over_the_nucleus():
    draws = Sampler("sample_top_p", top_p=0.75)(
        NUCLEUS_PROBS.log().expand(20000, -1), generator=torch.Generator().manual_seed(0)
    )
    share_of_id_1 = (draws == 1).float().mean().item()
    assert share_of_id_1 == pytest.approx(0.5 / 0.8, abs=0.02)


def test_sample_follows_the_full_distribution():
    probs = torch.tensor([[0.7, 0.2, 0.1]])
    draws = Sampler("sample")(probs.log().expand(20000, -1), torch.Generator().manual_seed(0))
    freqs = torch.bincount(draws, minlength=3).float() / draws.numel()
    assert torch.allclose(freqs, probs[0], atol=0.02)


def test_temperature_divides_logits_and_sharpens():
    logits = random_logits()
    assert torch.allclose(Sampler("sample", temperature=0.5).filter_logits(logits), logits / 0.5)
    cold = Sampler("sample", temperature=1e-6)(logits, torch.Generator().manual_seed(0))
    assert torch.equal(cold, logits.argmax(-1))


def test_same_generator_seed_gives_same_draws():
    logits = random_logits()
    sampler = Sampler("sample_top_p", top_p=0.9, temperature=1.3)
    a = sampler(logits, torch.Generator().manual_seed(7))
    b = sampler(logits, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="beam"), "sampling_method must be one of"),
        (dict(top_k=0), "top \\(top-k\\) must be an integer >= 1, got 0"),
        (dict(top_k=2.5), "top \\(top-k\\) must be an integer >= 1"),
        (dict(top_k=True), "top \\(top-k\\) must be an integer >= 1, got True"),
        (dict(temperature=False), "temperature must be a number, got False"),
        (dict(top_p=0.0), "p \\(top-p\\) must be in \\(0, 1\\], got 0.0"),
        (dict(top_p=1.5), "p \\(top-p\\) must be in \\(0, 1\\], got 1.5"),
        (dict(top_p=math.nan), "p \\(top-p\\) must be in \\(0, 1\\]"),
        (dict(temperature=0.0), "temperature must be > 0, got 0.0"),
        (dict(temperature=-1.0), "temperature must be > 0"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sampler(**kwargs)
