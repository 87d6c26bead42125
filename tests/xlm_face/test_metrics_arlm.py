"""Worked examples of the metric update functions, fed through xlm-core's metric classes."""

import math

import pytest
import torch
from torchmetrics import MeanMetric
from xlm.metrics import ExactMatch, TokenAccuracy

from arlm import metrics_arlm as m

PAD, EOS, X = 0, 3, -100


def prediction_case():
    """Two prompts of width 2; the generator wrote 4 columns; targets are 3 wide."""
    batch = {
        "input_ids": torch.tensor([[10, 4], [11, 4]]),
        "target_ids": torch.tensor([[20, 21, EOS], [22, EOS, PAD]]),
    }
    preds = {
        "ids": torch.tensor([[10, 4, 20, 21, EOS, PAD], [11, 4, 22, 25, EOS, PAD]]),
        "output_start_idx": 2,
    }
    return batch, preds


def test_exact_match_compares_the_generated_suffix(simple_tokenizer):
    batch, preds = prediction_case()
    kwargs = m.seq2seq_exact_match_update_fn(batch, preds, simple_tokenizer)
    assert kwargs["pred"].tolist() == [[20, 21, EOS], [22, 25, EOS]]
    metric = ExactMatch()
    metric.update(**kwargs)
    assert metric.compute().item() == 0.5


def test_token_accuracy_counts_every_target_position(simple_tokenizer):
    batch, preds = prediction_case()
    metric = TokenAccuracy()
    metric.update(**m.seq2seq_token_accuracy_update_fn(batch, preds, simple_tokenizer))
    assert math.isclose(metric.compute().item(), (3 / 3 + 1 / 3) / 2, rel_tol=1e-6)


def test_short_prediction_is_padded_to_target_width(simple_tokenizer):
    batch = {"target_ids": torch.tensor([[20, EOS, PAD, PAD]])}
    preds = {"ids": torch.tensor([[4, 20, EOS]]), "output_start_idx": 1}
    kwargs = m.seq2seq_exact_match_update_fn(batch, preds, simple_tokenizer)
    assert kwargs["pred"].tolist() == [[20, EOS, PAD, PAD]]


def lm_case():
    batch = {
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]),
        "target_ids": torch.tensor([[5, 6, X, X], [7, 8, 9, X]]),
    }
    nlls = torch.tensor([[1.0, 3.0, 0.0, 0.0], [2.0, 2.0, 2.0, 0.0]])
    loss_dict = {"loss": torch.tensor(2.0, requires_grad=True), "nlls": nlls}
    return batch, loss_dict


def test_mean_metric_prefers_batch_loss():
    batch, loss_dict = lm_case()
    assert not m.mean_metric_update_fn(batch, loss_dict)["value"].requires_grad
    loss_dict["batch_loss"] = torch.tensor(9.0)
    assert m.mean_metric_update_fn(batch, loss_dict)["value"].item() == 9.0


def test_perplexity_per_sequence():
    batch, loss_dict = lm_case()
    value = m.perplexity_metric_update_fn(batch, loss_dict)["value"]
    torch.testing.assert_close(value, torch.tensor([math.exp(2.0), math.exp(2.0)]))


def test_perplexity_skips_rows_without_targets():
    batch, loss_dict = lm_case()
    batch["target_ids"][0] = X
    assert m.perplexity_metric_update_fn(batch, loss_dict)["value"].shape == (1,)


def test_token_nll_averages_over_target_tokens():
    batch, loss_dict = lm_case()
    metric = MeanMetric()
    metric.update(**m.token_nll_metric_update_fn(batch, loss_dict))
    assert math.isclose(metric.compute().item(), (1 + 3 + 2 + 2 + 2) / 5, rel_tol=1e-6)


def test_sequence_length_and_valid_tokens():
    batch, loss_dict = lm_case()
    assert m.sequence_length_metric_update_fn(batch, loss_dict)["value"].tolist() == [3.0, 4.0]
    assert m.valid_tokens_metric_update_fn(batch, loss_dict)["value"].tolist() == [2.0, 3.0]


def test_perplexity_without_a_target_mask_is_exp_of_the_mean_nll():
    """The seed's contract: ``perplexity_metric_update_fn(batch, {"nlls": nlls})`` with no
    ``target_ids`` gives ``exp(nlls.mean())``."""
    nlls = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    value = m.perplexity_metric_update_fn({"input_ids": torch.zeros(2, 2)}, {"nlls": nlls})["value"]
    torch.testing.assert_close(value, torch.tensor(math.exp(2.0)))


def test_token_nll_passes_nlls_through_without_a_target_mask():
    nlls = torch.tensor([[1.0, 3.0], [2.0, 0.5]])
    assert m.token_nll_metric_update_fn({}, {"nlls": nlls})["value"] is nlls


def test_loss_target_mask_takes_precedence_over_target_ids():
    batch, loss_dict = lm_case()
    loss_dict["target_mask"] = torch.tensor([[True, False, False, False], [True, True, True, False]])
    assert m.token_nll_metric_update_fn(batch, loss_dict)["value"].tolist() == [1.0, 2.0, 2.0, 2.0]


def test_corpus_metrics_pool_tokens_over_batches_of_different_lengths():
    batches = [lm_case(), lm_case()]
    batches[1][1]["nlls"] = torch.tensor([[4.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.0]])
    batches[1][0]["target_ids"] = torch.tensor([[5, X, X, X], [7, 8, 9, X]])
    ppl, nll = m.CorpusPerplexity(), m.CorpusTokenNLL()
    for batch, loss_dict in batches:
        kwargs = m.corpus_nll_metric_update_fn(batch, loss_dict)
        ppl.update(**kwargs)
        nll.update(**kwargs)
    total, count = (1 + 3 + 2 + 2 + 2) + (4 + 0.5 * 3), 5 + 4
    assert math.isclose(nll.compute().item(), total / count, rel_tol=1e-6)
    assert math.isclose(ppl.compute().item(), math.exp(total / count), rel_tol=1e-6)
    per_sequence = MeanMetric()
    for batch, loss_dict in batches:
        per_sequence.update(**m.perplexity_metric_update_fn(batch, loss_dict))
    assert per_sequence.compute().item() > ppl.compute().item() * 1.05  # a mean of exponentials is biased up


def test_corpus_metric_states_sum_across_processes():
    """What a distributed sync does (``dist_reduce_fx="sum"``), with two metric copies."""
    (b1, l1), (b2, l2) = lm_case(), lm_case()
    l2["nlls"] = l2["nlls"] * 2
    one, two, both = m.CorpusPerplexity(), m.CorpusPerplexity(), m.CorpusPerplexity()
    one.update(**m.corpus_nll_metric_update_fn(b1, l1))
    two.update(**m.corpus_nll_metric_update_fn(b2, l2))
    both.update(**m.corpus_nll_metric_update_fn(b1, l1))
    both.update(**m.corpus_nll_metric_update_fn(b2, l2))
    one.merge_state(two)
    torch.testing.assert_close(one.compute(), both.compute())


def test_corpus_metric_without_target_mask_counts_every_entry():
    kwargs = m.corpus_nll_metric_update_fn({}, {"nlls": torch.tensor([[1.0, 3.0]])})
    metric = m.CorpusTokenNLL()
    metric.update(**kwargs)
    assert metric.compute().item() == 2.0
    with pytest.raises(ValueError, match=r"nlls shape \(1, 2\) differs from mask shape \(2,\)"):
        metric.update(torch.zeros(1, 2), torch.ones(2, dtype=torch.bool))


def test_corpus_metrics_accumulate_in_float64():
    """2**24 + 1 + 1 is 2**24 in float32; the corpus sums keep every token."""
    nll, ppl = m.CorpusTokenNLL(), m.CorpusPerplexity()
    for metric in (nll, ppl):
        metric.update(torch.tensor([[2.0**24, 1.0, 1.0]]), torch.ones(1, 3, dtype=torch.bool))
        assert metric.mean_value.dtype == metric.weight.dtype == torch.float64
    assert nll.compute().dtype == torch.float32
    assert nll.compute().item() == (2**24 + 2) / 3
    nll.reset()
    assert nll.mean_value.dtype == torch.float64


def test_corpus_metrics_keep_a_nan_nll():
    metric = m.CorpusTokenNLL()
    metric.update(torch.tensor([[1.0, math.nan]]), torch.ones(1, 2, dtype=torch.bool))
    assert math.isnan(metric.compute().item())


def test_every_update_function_is_used_by_a_config():
    """The seed's four update functions of the LM rows (per-sequence perplexity, target-token NLL,
    sequence length, tokens carrying loss) were kept but used by no config."""
    from pathlib import Path

    configs = "\n".join(path.read_text() for path in (Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))
    functions = [name for name in dir(m) if name.endswith("_update_fn") and not name.startswith("_")]
    assert len(functions) == 9
    assert [name for name in functions if f"arlm.metrics_arlm.{name}" not in configs] == []
