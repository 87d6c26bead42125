"""The STAR planning-choice diagnostic: the reference read from hand-made and generated graphs,
and the metric on hand-made predictions, fed through xlm-core's metric wrapper."""

import pytest
import torch
from xlm.datamodule import SimpleSpaceTokenizer
from xlm.metrics import ExactMatch, MeanMetricWithComputedValue, MetricWrapper
from xlm.tasks.star import preprocess_fn

from arlm.datamodule_arlm import ARLMSeq2SeqPredCollator
from arlm.dataprep.star import STAR_LEVELS, generate_star_split
from arlm.metrics_arlm import seq2seq_exact_match_update_fn, star_planning_choice_update_fn, star_planning_prefix
from arlm.prediction_io import prediction_rows

# STAR-easy shape: the source 0 is the centre, arms 0-1-2, 0-3-4, 0-5-6; the goal 4 is on the second.
EASY = {"edge_list": [[3, 4], [0, 1], [5, 6], [0, 5], [1, 2], [0, 3]], "source": 0, "goal": 4,
        "path": [0, 3, 4]}
# STAR-medium shape: the source 10 leads through 11 into the centre 12, which 19 also enters; arms
# 12-13-14, 12-15-16-17, 12-18-7; the goal 17 is on the second.
MEDIUM = {"edge_list": [[12, 13], [16, 17], [10, 11], [12, 18], [11, 12], [13, 14], [19, 12], [12, 15],
                        [15, 16], [18, 7]],
          "source": 10, "goal": 17, "path": [10, 11, 12, 15, 16, 17]}


def prompt_of(graph):
    return [n for edge in graph["edge_list"] for n in edge] + [graph["source"], graph["goal"]]


def test_easy_prefix_is_the_source_and_the_first_node_of_the_goal_arm():
    assert star_planning_prefix(prompt_of(EASY)) == [0, 3]


def test_medium_prefix_runs_from_the_source_through_the_centre_to_the_chosen_arm():
    assert star_planning_prefix(prompt_of(MEDIUM)) == [10, 11, 11, 12, 12, 15]


@pytest.mark.parametrize("level", sorted(STAR_LEVELS))
def test_prefix_is_the_start_of_the_target_on_generated_graphs(level):
    """On xlm-core's own generators and preprocessing, the reference from the prompt is the start
    of the real target and ends with the edge leaving the centre (the node with out-degree
    ``degree``); on medium and hard the centre falls at several places along the path."""
    tokenizer = SimpleSpaceTokenizer.for_numbers(STAR_LEVELS[level]["kwargs"]["vocab_size"])
    degree = STAR_LEVELS[level]["kwargs"]["degree"]
    centre_positions = set()
    for graph in generate_star_split(level, "validation", 200, seed=1):
        row = preprocess_fn(dict(graph), tokenizer)
        prefix = star_planning_prefix(row["prompt_token_ids"])
        assert row["input_token_ids"][: len(prefix)] == prefix
        centre = prefix[-2]
        assert row["prompt_token_ids"][:-2][0::2].count(centre) == degree
        centre_positions.add(len(prefix) // 2 - 1)
    if level == "star-small":
        assert centre_positions == {0}
    else:
        assert len(centre_positions) >= 3


def prediction(tokenizer, graphs, continuations, **collator_options):
    """The prediction batch of ``graphs`` and a predictor output whose continuations are
    ``continuations`` (node lists; EOS and padding appended)."""
    rows = [preprocess_fn(dict(g), tokenizer) for g in graphs]
    batch = ARLMSeq2SeqPredCollator(tokenizer, block_size=48, **collator_options)(
        [{"prompt_ids": r["prompt_token_ids"], "input_ids": r["input_token_ids"]} for r in rows]
    )
    width = 14
    suffix = []
    for nodes in continuations:
        ids = tokenizer.convert_tokens_to_ids([str(n) for n in nodes]) + [tokenizer.eos_token_id]
        suffix.append((ids + [tokenizer.pad_token_id] * width)[:width])
    ids = torch.cat([batch["input_ids"], torch.tensor(suffix)], dim=1)
    return batch, {"ids": ids, "output_start_idx": batch["input_ids"].shape[1]}


@pytest.fixture
def tokenizer():
    return SimpleSpaceTokenizer.for_numbers(20)


def test_metric_scores_the_planning_choice_not_the_whole_path(tokenizer):
    graphs = [MEDIUM, MEDIUM, MEDIUM, MEDIUM, EASY, EASY, MEDIUM]
    continuations = [
        [10, 11, 11, 12, 12, 15, 15, 16, 16, 17],  # right
        [10, 11, 11, 12, 12, 13, 13, 14],           # follows edges, wrong arm at the centre
        [10, 11, 11, 12, 12, 15, 15, 16],           # right choice, stops one edge short
        [10, 19, 19, 12, 12, 15, 15, 16, 16, 17],   # wrong before the centre
        [0, 3, 3, 4],                               # easy, right
        [0, 5, 5, 6],                               # easy, wrong arm
        [10, 11, 11],                               # ends before the choice
    ]
    batch, preds = prediction(tokenizer, graphs, continuations)
    values = star_planning_choice_update_fn(batch, preds, tokenizer)["value"]
    assert values.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    exact = ExactMatch()
    exact.update(**seq2seq_exact_match_update_fn(batch, preds, tokenizer))
    assert exact._computed_value.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]


def test_metric_wrapper_averages_over_batches_as_configured(tokenizer):
    wrapper = MetricWrapper(
        name="planning_choice_accuracy", metric=MeanMetricWithComputedValue(), prefix="val/prediction",
        update_fn="arlm.metrics_arlm.star_planning_choice_update_fn",
    )
    wrapper.update(*prediction(tokenizer, [EASY, EASY], [[0, 3, 3, 4], [0, 1, 1, 2]]), tokenizer)
    wrapper.update(*prediction(tokenizer, [MEDIUM], [[10, 11, 11, 12, 12, 15]]), tokenizer)
    assert wrapper.full_name == "val/prediction/planning_choice_accuracy"
    assert wrapper.compute().item() == pytest.approx(2 / 3)
    assert wrapper._computed_value.tolist() == [1.0]  # per graph of the last batch, for the JSONL


def test_prompts_the_collator_cut_are_left_out_and_the_others_judged(tokenizer):
    """With ``on_overflow=truncate`` a cut prompt has lost part of its graph: no planning choice
    can be judged on it, so it is NaN (left out of the mean, null in the JSONL), not refused or scored."""
    easy_width = len(preprocess_fn(dict(EASY), tokenizer)["prompt_token_ids"]) + 1
    with pytest.warns(UserWarning, match="2 prompts keep only their last"):
        batch, preds = prediction(
            tokenizer, [EASY, MEDIUM, EASY, MEDIUM], [[0, 3], [10, 11], [0, 5], [10]],
            input_block_size=easy_width, on_overflow="truncate",
        )
    assert batch["prompt_cut"].tolist() == [False, True, False, True]
    values = star_planning_choice_update_fn(batch, preds, tokenizer)["value"]
    assert values[[0, 2]].tolist() == [1.0, 0.0] and values[[1, 3]].isnan().all()
    wrapper = MetricWrapper(
        name="planning_choice_accuracy", metric=MeanMetricWithComputedValue(nan_strategy="ignore"),
        prefix="val/prediction", update_fn="arlm.metrics_arlm.star_planning_choice_update_fn",
    )
    wrapper.update(batch, preds, tokenizer)
    assert wrapper.compute().item() == 0.5
    rows = prediction_rows(tokenizer, batch, {
        **preds, "attention_mask": (preds["ids"] != tokenizer.pad_token_id).long(), "text": [""] * 4,
        "text_with_spl_tokens": [""] * 4, "time_taken": [0.0] * 4,
        "metric_planning_choice_accuracy": values.tolist(),
    })
    assert [r["metric_planning_choice_accuracy"] for r in rows] == [1.0, None, 0.0, None]


@pytest.mark.parametrize("prompt, message", [
    ([0, 1, 0, 2, 0], "even number >= 4 of tokens; got 5"),
    ([0, 1], "even number >= 4 of tokens; got 2"),
    ([0, 1, 1, 2, 0, 2], "exactly one node with several outgoing edges (its centre); this one has 0"),
    ([0, 1, 0, 2, 3, 4, 3, 5, 0, 5], "this one has 2: [0, 3]"),
    ([5, 0, 0, 1, 0, 2, 9, 2], "no walk along single edges from the source 9 to the centre 0"),
    ([5, 0, 0, 1, 0, 2, 5, 5], "before the goal 5"),
    ([0, 1, 0, 2, 0, 7], "the goal 7 must lie on exactly one arm leaving the centre 0; it lies on 0"),
    ([0, 1, 0, 2, 1, 3, 2, 3, 0, 3], "it lies on 2"),
])
def test_prompts_that_are_not_star_graphs_are_refused(prompt, message):
    with pytest.raises(ValueError) as error:
        star_planning_prefix(prompt)
    assert message in str(error.value)


def test_metric_names_the_row_of_a_malformed_prompt(tokenizer):
    batch, preds = prediction(tokenizer, [EASY, EASY], [[0, 3], [0, 3]])
    batch["input_ids"][1, -3] = tokenizer.mask_token_id
    with pytest.raises(ValueError, match=r"row 1 of the prediction batch is not a STAR graph prompt "
                                         r"\(STAR nodes are number tokens; the prompt also has \['\[MASK\]'\]\)"):
        star_planning_choice_update_fn(batch, preds, tokenizer)


def test_metric_refuses_a_prompt_without_bos_and_a_missing_tokenizer(tokenizer):
    batch, preds = prediction(tokenizer, [EASY], [[0, 3]])
    batch["input_ids"][0, -1] = tokenizer.convert_tokens_to_ids("4")
    with pytest.raises(ValueError, match=r"row 0 .* ends with BOS \(id 4\).*Prompt: '3 4 0 1"):
        star_planning_choice_update_fn(batch, preds, tokenizer)
    with pytest.raises(ValueError, match="needs the tokenizer"):
        star_planning_choice_update_fn(batch, preds, None)


def test_a_tokenizer_without_bos_is_named_with_the_fix(tokenizer):
    """Round 4, cryptic: "a STAR prediction prompt ends with BOS (id None)"."""
    batch, preds = prediction(tokenizer, [EASY], [[0, 3, 3, 4]])

    class NoBos:
        bos_token_id = None

    with pytest.raises(ValueError, match=r"needs a tokenizer with a BOS token.*NoBos has none.*Fix: use the experiment's tokenizer"):
        star_planning_choice_update_fn(batch, preds, NoBos())
