"""Collator contracts on hand-written examples (exact tensors) and on random lengths."""

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arlm.datamodule_arlm import (
    ARLMEmptyDataset,
    ARLMSeq2SeqCollator,
    ARLMSeq2SeqPredCollator,
    DefaultARLMCollator,
    id_lists_to_tensors,
    prepare_prefix_ids_arlm,
    prepare_suffix_ids_arlm,
    print_batch_arlm,
)

PAD, EOS, BOS = 0, 3, 4
X = -100


class NoBosTokenizer:
    """Qwen2-like: no BOS."""

    pad_token_id, eos_token_id, bos_token_id = 0, 3, None


def t(rows):
    return torch.tensor(rows, dtype=torch.long)


# --- DefaultARLMCollator -------------------------------------------------------------------


def test_default_collator_exact(simple_tokenizer):
    batch = DefaultARLMCollator(simple_tokenizer, block_size=6)(
        [{"input_ids": [10, 11, 12, 13]}, {"input_ids": [20, 21, 22, 23, 24, 25, 26, 27]}]
    )
    assert torch.equal(batch["input_ids"], t([[10, 11, 12, 13, PAD, PAD], [20, 21, 22, 23, 24, 25]]))
    assert torch.equal(batch["attention_mask"], t([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]))
    assert torch.equal(batch["target_ids"], t([[11, 12, 13, X, X, X], [21, 22, 23, 24, 25, X]]))


def test_default_collator_ignores_extra_keys(simple_tokenizer):
    batch = DefaultARLMCollator(simple_tokenizer, block_size=4)(
        [{"input_ids": [10, 11], "token_ids": [1], "attention_mask": [1, 1]}]
    )
    assert set(batch) == {"input_ids", "attention_mask", "target_ids", "right_padded"}


# --- ARLMSeq2SeqCollator -------------------------------------------------------------------


def test_seq2seq_collator_exact(simple_tokenizer):
    batch = ARLMSeq2SeqCollator(simple_tokenizer, block_size=9)(
        [
            {"prompt_ids": [10, 11, 12], "input_ids": [20, 21]},
            {"prompt_ids": [13], "input_ids": [22, 23, 24]},
        ]
    )
    # [prompt][BOS][target][EOS][pad]
    assert torch.equal(
        batch["input_ids"],
        t([[10, 11, 12, BOS, 20, 21, EOS, PAD, PAD], [13, BOS, 22, 23, 24, EOS, PAD, PAD, PAD]]),
    )
    # BOS predicts the first target token; the prompt and padding carry no loss.
    assert torch.equal(
        batch["target_ids"],
        t([[X, X, X, 20, 21, EOS, X, X, X], [X, 22, 23, 24, EOS, X, X, X, X]]),
    )
    assert torch.equal(batch["attention_mask"], t([[1] * 7 + [0] * 2, [1] * 6 + [0] * 3]))
    assert torch.equal(batch["token_type_ids"], t([[0, 0, 0, 0, 1, 1, 1, 2, 2], [0, 0, 1, 1, 1, 1, 2, 2, 2]]))


def test_seq2seq_collator_without_bos_puts_loss_right_after_prompt():
    batch = ARLMSeq2SeqCollator(NoBosTokenizer(), block_size=6)(
        [{"prompt_ids": [10, 11], "target_ids": [20, 21]}]
    )
    assert torch.equal(batch["input_ids"], t([[10, 11, 20, 21, EOS, PAD]]))
    assert torch.equal(batch["target_ids"], t([[X, 20, 21, EOS, X, X]]))


def test_seq2seq_collator_prefers_target_ids_over_input_ids(simple_tokenizer):
    batch = ARLMSeq2SeqCollator(simple_tokenizer, block_size=6)(
        [{"prompt_ids": [10], "target_ids": [30], "input_ids": [99]}]
    )
    assert batch["input_ids"][0].tolist() == [10, BOS, 30, EOS, PAD, PAD]


def test_seq2seq_collator_refuses_rows_longer_than_block_size(simple_tokenizer):
    with pytest.raises(ValueError, match=r"block_size=4 is too small: an example needs 7 tokens \(prompt 2 \+ separator 1 \+ target 3 \+ EOS 1\).*at least 7"):
        ARLMSeq2SeqCollator(simple_tokenizer, block_size=4)([{"prompt_ids": [10, 11], "input_ids": [20, 21, 22]}])


def test_seq2seq_collator_truncates_to_block_size_when_asked(simple_tokenizer):
    with pytest.warns(UserWarning, match="block_size=4 is too small"):
        batch = ARLMSeq2SeqCollator(simple_tokenizer, block_size=4, on_overflow="truncate")(
            [{"prompt_ids": [10, 11], "input_ids": [20, 21, 22]}]
        )
    assert batch["input_ids"].tolist() == [[10, 11, BOS, 20]]
    assert batch["target_ids"].tolist() == [[X, X, 20, X]]


def test_seq2seq_collator_with_loss_on_prompt_exact(simple_tokenizer):
    examples = [
        {"prompt_ids": [10, 11, 12], "input_ids": [20, 21]},
        {"prompt_ids": [13], "input_ids": [22, 23, 24]},
    ]
    batch = ARLMSeq2SeqCollator(simple_tokenizer, block_size=9, loss_on_prompt=True)(examples)
    default = ARLMSeq2SeqCollator(simple_tokenizer, block_size=9)(examples)
    # Every token after a row's first is a target: prompt tokens 2.., BOS, the target, EOS.
    assert torch.equal(
        batch["target_ids"],
        t([[11, 12, BOS, 20, 21, EOS, X, X, X], [BOS, 22, 23, 24, EOS, X, X, X, X]]),
    )
    # The target region and everything else are the default's.
    answer = default["target_ids"] != X
    assert torch.equal(batch["target_ids"][answer], default["target_ids"][answer])
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[key], default[key])
    assert batch["right_padded"] is True


def test_seq2seq_collator_with_loss_on_prompt_without_bos():
    batch = ARLMSeq2SeqCollator(NoBosTokenizer(), block_size=6, loss_on_prompt=True)(
        [{"prompt_ids": [10, 11], "target_ids": [20, 21]}]
    )
    assert torch.equal(batch["target_ids"], t([[11, 20, 21, EOS, X, X]]))


def test_seq2seq_collator_with_loss_on_prompt_truncates_like_the_default(simple_tokenizer):
    with pytest.warns(UserWarning, match="block_size=4 is too small"):
        batch = ARLMSeq2SeqCollator(simple_tokenizer, block_size=4, on_overflow="truncate", loss_on_prompt=True)(
            [{"prompt_ids": [10, 11], "input_ids": [20, 21, 22]}]
        )
    assert batch["target_ids"].tolist() == [[11, BOS, 20, X]]


@pytest.mark.parametrize("value", ["true", "no", 1, 0, None])
def test_seq2seq_collator_refuses_a_loss_on_prompt_that_is_not_a_bool(simple_tokenizer, value):
    with pytest.raises(ValueError, match=rf"loss_on_prompt must be true or false, got {re.escape(repr(value))}"):
        ARLMSeq2SeqCollator(simple_tokenizer, block_size=8, loss_on_prompt=value)


# --- ARLMSeq2SeqPredCollator ---------------------------------------------------------------


def test_prediction_collator_left_pads_prompt_and_keeps_target(simple_tokenizer):
    batch = ARLMSeq2SeqPredCollator(simple_tokenizer, block_size=8)(
        [
            {"prompt_ids": [10, 11, 12], "input_ids": [20, 21], "answer": "7"},
            {"prompt_ids": [13], "input_ids": [22], "answer": 8},
        ]
    )
    assert torch.equal(batch["input_ids"], t([[10, 11, 12, BOS], [PAD, PAD, 13, BOS]]))
    assert torch.equal(batch["attention_mask"], t([[1, 1, 1, 1], [0, 0, 1, 1]]))
    assert torch.equal(batch["token_type_ids"], t([[0, 0, 0, 0], [2, 2, 0, 0]]))
    # target width = block_size - prompt width; padded with pad ids (decodable), not -100
    assert torch.equal(batch["target_ids"], t([[20, 21, EOS, PAD], [22, EOS, PAD, PAD]]))
    assert batch["answer"] == ["7", "8"]


def test_prediction_collator_fixed_input_block_size(simple_tokenizer):
    batch = ARLMSeq2SeqPredCollator(simple_tokenizer, block_size=8, input_block_size=5)(
        [{"prompt_ids": [10, 11], "input_ids": [20]}]
    )
    assert batch["input_ids"].tolist() == [[PAD, PAD, 10, 11, BOS]]
    assert batch["target_ids"].tolist() == [[20, EOS, PAD]]


def test_prediction_collator_keeps_the_end_of_a_long_prompt_when_asked_to_cut(simple_tokenizer):
    collator = ARLMSeq2SeqPredCollator(simple_tokenizer, block_size=8, input_block_size=3, on_overflow="truncate")
    with pytest.warns(UserWarning, match=(
        r"input_block_size=3 is too small for 1 of the 2 prompts of this batch: they need up to 5 tokens "
        r".*1 prompts keep only their last 3 tokens \(on_overflow=truncate\)")):
        batch = collator([{"prompt_ids": [10, 11, 12, 13], "input_ids": [20]}, {"prompt_ids": [10], "input_ids": [20]}])
    assert batch["input_ids"].tolist() == [[12, 13, BOS], [PAD, 10, BOS]]


def test_prediction_collator_refuses_a_prompt_longer_than_input_block_size(simple_tokenizer):
    collator = ARLMSeq2SeqPredCollator(simple_tokenizer, block_size=8, input_block_size=3)
    with pytest.raises(ValueError, match=(
        r"input_block_size=3 is too small for 1 of the 1 prompts of this batch: they need up to 5 tokens "
        r"\(prompt \+ separator 1\); their first tokens would be cut .* Fix: set input_block_size to at "
        r"least 5 \(or 0: .*on_overflow=truncate")):
        collator([{"prompt_ids": [10, 11, 12, 13], "input_ids": [20]}])
    with pytest.raises(ValueError, match="on_overflow must be one of"):
        ARLMSeq2SeqPredCollator(simple_tokenizer, block_size=8, on_overflow="cut")
    for bad in (True, 2.5, -1):
        with pytest.raises(ValueError, match=f"input_block_size must be an integer >= 0, got {bad}"):
            ARLMSeq2SeqPredCollator(simple_tokenizer, block_size=8, input_block_size=bad)


def test_prediction_collator_with_prompt_only_rows(simple_tokenizer):
    batch = ARLMSeq2SeqPredCollator(simple_tokenizer, block_size=4)(
        [{"prompt_ids": [10], "input_ids": [], "answer": "3"}]
    )
    assert batch["target_ids"].tolist() == [[PAD, PAD]]
    assert "answer" in batch


def test_prepare_prefix_ids_bos_and_eos_placement():
    out = prepare_prefix_ids_arlm([[10, 11], []], PAD, BOS, truncate=None, add_bos="output")
    assert out == {
        "input_ids": [[10, 11, BOS], [PAD, PAD, BOS]],
        "attention_mask": [[1, 1, 1], [0, 0, 1]],
        "token_type_ids": [[0, 0, 0], [2, 2, 0]],
    }
    first = prepare_prefix_ids_arlm([[10, 11], [12]], PAD, BOS, EOS, truncate=None, add_bos="input", add_eos=True)
    assert first["input_ids"] == [[BOS, 10, 11, EOS], [PAD, BOS, 12, EOS]]
    no_bos = prepare_prefix_ids_arlm([[10, 11], []], PAD, eos_token_id=EOS, truncate=None, add_bos="output")
    assert no_bos["input_ids"] == [[10, 11], [PAD, EOS]]
    with pytest.raises(ValueError, match="neither a BOS to add .* nor an eos_token_id"):
        prepare_prefix_ids_arlm([[]], PAD, truncate=None)


def test_prepare_prefix_ids_truncation_modes():
    rows = [[10, 11, 12, 13], [14]]
    block = prepare_prefix_ids_arlm(rows, PAD, BOS, max_seq_len=3, add_bos="output")
    assert block["input_ids"] == [[12, 13, BOS], [PAD, 14, BOS]]  # the end of a long prompt is kept
    assert block["attention_mask"] == [[1, 1, 1], [0, 1, 1]]
    at_least = prepare_prefix_ids_arlm(rows, PAD, max_seq_len=6, truncate="max")
    assert at_least["input_ids"] == [[PAD, PAD, 10, 11, 12, 13], [PAD] * 5 + [14]]
    assert prepare_prefix_ids_arlm(rows, PAD, max_seq_len=2, truncate="max")["input_ids"][0] == [10, 11, 12, 13]
    assert prepare_prefix_ids_arlm(rows, PAD, max_seq_len=2, truncate=None)["input_ids"][1] == [PAD, PAD, PAD, 14]


def test_prepare_suffix_ids_pads_right_and_keeps_the_start():
    out = prepare_suffix_ids_arlm([[20, 21, 22], [23], []], PAD, BOS, EOS, max_seq_len=3, add_bos="output", add_eos=True)
    assert out["input_ids"] == [[BOS, 20, 21], [BOS, 23, EOS], [BOS, EOS, PAD]]
    assert out["attention_mask"] == [[1, 1, 1], [1, 1, 1], [1, 1, 0]]
    assert out["target_ids"] == out["input_ids"] and out["target_ids"] is not out["input_ids"]
    longest = prepare_suffix_ids_arlm([[20, 21], []], PAD, BOS, EOS, truncate=None, add_bos="input", add_eos=True)
    assert longest["input_ids"] == [[20, 21, EOS], [EOS, PAD, PAD]]  # "input": the BOS belongs to the prefix
    assert prepare_suffix_ids_arlm([[]], PAD, truncate="max", max_seq_len=2)["input_ids"] == [[PAD, PAD]]


def test_prepared_ids_accept_numpy_and_tensor_rows():
    import numpy as np

    out = prepare_prefix_ids_arlm([np.array([10, 11]), torch.tensor([12])], np.int64(PAD), truncate=None)
    assert out["input_ids"] == [[10, 11], [PAD, 12]]
    assert id_lists_to_tensors(out)["input_ids"].dtype == torch.long


@pytest.mark.parametrize("fn", [prepare_prefix_ids_arlm, prepare_suffix_ids_arlm])
@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        (([],), {}, ValueError, r"_ids must be a non-empty list of token-id lists, got \[\]"),
        (("10 11",), {}, ValueError, r"_ids must be a non-empty list of token-id lists, got '10 11'"),
        (([5],), {}, TypeError, r"_ids\[0\] must be a list of token ids, got 5"),
        (([[10, 1.5]],), {}, ValueError, r"_ids\[0\] must hold non-negative integer token ids, got 1.5"),
        (([[10, -100]],), {}, ValueError, r"got -100 in \[10, -100\]"),
        (([[10]],), {"pad_token_id": None}, ValueError, "pad_token_id must be a non-negative integer, got None"),
        (([[10]],), {"bos_token_id": "4"}, ValueError, "bos_token_id must be a non-negative integer or None, got '4'"),
        (([[10]],), {"eos_token_id": True}, ValueError, "eos_token_id must be a non-negative integer or None, got True"),
        (([[10]],), {"max_seq_len": 0}, ValueError, "max_seq_len must be a positive integer or None, got 0"),
        (([[10]],), {"truncate": "longest"}, ValueError, r"truncate must be one of \('block', 'max', None\), got 'longest'"),
        (([[10]],), {"max_seq_len": None}, ValueError, "truncate='block' pads and cuts every row to max_seq_len, which is None"),
        (([[10]],), {"add_bos": "left"}, ValueError, r"add_bos must be one of \(None, 'input', 'output'\), got 'left'"),
        (([[10]],), {"add_eos": "yes"}, ValueError, "add_eos must be True or False, got 'yes'"),
    ],
)
def test_prepared_ids_reject_bad_input_naming_the_value(fn, args, kwargs, error, message):
    kwargs = {"pad_token_id": PAD, "max_seq_len": 4, **kwargs}
    with pytest.raises(error, match=message):
        fn(*args, **kwargs)


def test_empty_dataset_feeds_the_prediction_collator(simple_tokenizer):
    rows = list(ARLMEmptyDataset(simple_tokenizer, num_examples=3))
    assert len(rows) == 3
    batch = ARLMSeq2SeqPredCollator(simple_tokenizer, block_size=8)(rows)
    assert batch["input_ids"].tolist() == [[BOS]] * 3


def test_print_batch(simple_tokenizer, capsys):
    batch = ARLMSeq2SeqCollator(simple_tokenizer, block_size=6)([{"prompt_ids": [10], "input_ids": [20]}])
    print_batch_arlm(batch, "train", simple_tokenizer, "lm")
    out = capsys.readouterr().out
    assert "train/lm" in out and "target_ids: [-100, 20, 3, -100, -100, -100]" in out


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [DefaultARLMCollator, ARLMSeq2SeqCollator, ARLMSeq2SeqPredCollator])
def test_empty_list_of_examples(simple_tokenizer, cls):
    with pytest.raises(ValueError, match=f"{cls.__name__} got an empty list of examples"):
        cls(simple_tokenizer, block_size=8)([])


@pytest.mark.parametrize(
    "cls, example, key",
    [
        (DefaultARLMCollator, {"prompt_ids": [1]}, "input_ids"),
        (ARLMSeq2SeqCollator, {"input_ids": [1]}, "prompt_ids"),
        (ARLMSeq2SeqPredCollator, {"input_ids": [1]}, "prompt_ids"),
    ],
)
def test_missing_key(simple_tokenizer, cls, example, key):
    with pytest.raises(KeyError, match=f"example 0 has no '{key}'"):
        cls(simple_tokenizer, block_size=8)([example])


@pytest.mark.parametrize("block_size", [None, 1])
def test_bad_block_size(simple_tokenizer, block_size):
    with pytest.raises(ValueError, match=f"block_size must be an integer >= 2, got {block_size}"):
        DefaultARLMCollator(simple_tokenizer, block_size=block_size)


# --- properties on random lengths ----------------------------------------------------------

token_lists = st.lists(st.integers(7, 56), min_size=0, max_size=12)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.lists(st.integers(7, 56), min_size=1, max_size=40), min_size=1, max_size=5),
       block_size=st.integers(2, 24))
def test_default_collator_properties(simple_tokenizer, rows, block_size):
    batch = DefaultARLMCollator(simple_tokenizer, block_size)([{"input_ids": r} for r in rows])
    assert batch["input_ids"].shape == (len(rows), block_size)
    for b, row in enumerate(rows):
        n = min(len(row), block_size)
        assert batch["attention_mask"][b].tolist() == [1] * n + [0] * (block_size - n)
        assert batch["target_ids"][b, : n - 1].tolist() == row[1:n]
        assert (batch["target_ids"][b, n - 1 :] == X).all()


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(token_lists, token_lists), min_size=1, max_size=5),
       block_size=st.integers(2, 30))
@pytest.mark.parametrize("loss_on_prompt", [False, True])
def test_seq2seq_collator_properties(simple_tokenizer, pairs, block_size, loss_on_prompt):
    batch = ARLMSeq2SeqCollator(simple_tokenizer, block_size, on_overflow="truncate", loss_on_prompt=loss_on_prompt)(
        [{"prompt_ids": p, "input_ids": q} for p, q in pairs]
    )
    assert batch["input_ids"].shape == (len(pairs), block_size)
    for b, (prompt, target) in enumerate(pairs):
        full = (prompt + [BOS] + target + [EOS])[:block_size]
        n = len(full)
        assert batch["input_ids"][b, :n].tolist() == full
        # loss exactly on the target and EOS that fit in the block (and the prompt after its
        # first token when asked)
        expected = [X] * block_size
        for i in range(0 if loss_on_prompt else len(prompt), n - 1):
            expected[i] = full[i + 1]
        assert batch["target_ids"][b].tolist() == expected


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(token_lists, token_lists), min_size=1, max_size=5))
def test_prediction_collator_properties(simple_tokenizer, pairs):
    batch = ARLMSeq2SeqPredCollator(simple_tokenizer, block_size=32)(
        [{"prompt_ids": p, "input_ids": q} for p, q in pairs]
    )
    width = max(len(p) for p, _ in pairs) + 1
    assert batch["input_ids"].shape == (len(pairs), width)
    assert (batch["input_ids"][:, -1] == BOS).all()
    for b, (prompt, target) in enumerate(pairs):
        assert batch["input_ids"][b, width - len(prompt) - 1 :].tolist() == prompt + [BOS]
        assert batch["attention_mask"][b].sum() == len(prompt) + 1
        expected = (target + [EOS]) if target else []
        assert batch["target_ids"][b, : len(expected)].tolist() == expected
        assert (batch["target_ids"][b, len(expected) :] == PAD).all()


@pytest.mark.parametrize("make, example, message", [
    (DefaultARLMCollator, {"input_ids": [7.9, 8.5]}, r"input_ids\[1\] must hold non-negative integer token ids, got 7.9 in \[7.9, 8.5\]"),
    (DefaultARLMCollator, {"input_ids": torch.tensor([7.9, 8.5])}, r"input_ids\[1\] .* got 7.9"),
    (DefaultARLMCollator, {"input_ids": [True, 8]}, r"input_ids\[1\] .* got True in \[True, 8\]"),
    (ARLMSeq2SeqCollator, {"prompt_ids": [10, 11.0], "input_ids": [20]}, r"prompt_ids\[1\] .* got 11.0"),
    (ARLMSeq2SeqCollator, {"prompt_ids": [10], "input_ids": [False, 20]}, r"input_ids\[1\] .* got False"),
    (ARLMSeq2SeqCollator, {"prompt_ids": [10], "target_ids": [-1]}, r"target_ids\[1\] .* got -1"),
    (ARLMSeq2SeqPredCollator, {"prompt_ids": [True], "input_ids": [20]}, r"prompt_ids\[1\] .* got True"),
    (ARLMSeq2SeqPredCollator, {"prompt_ids": [10], "input_ids": [20.5]}, r"input_ids\[1\] .* got 20.5"),
])
def test_collators_refuse_float_and_boolean_ids_as_prepare_prefix_ids_does(simple_tokenizer, make, example, message):
    """Before, ``torch.tensor(rows, dtype=long)`` made 7.9 into 7 and True into 1, silently."""
    good = {key: [10] for key in example}
    with pytest.raises(ValueError, match=message):
        make(simple_tokenizer, block_size=8)([good, example])


def test_collators_take_integer_tensors_and_arrays(simple_tokenizer):
    batch = DefaultARLMCollator(simple_tokenizer, block_size=4)([{"input_ids": torch.tensor([10, 11])}])
    assert batch["input_ids"].tolist() == [[10, 11, PAD, PAD]]
    batch = ARLMSeq2SeqCollator(simple_tokenizer, block_size=6)([{"prompt_ids": torch.tensor([10]), "input_ids": torch.tensor([20])}])
    assert batch["input_ids"].tolist() == [[10, BOS, 20, EOS, PAD, PAD]]


def test_seq2seq_training_row_without_a_target_is_named(simple_tokenizer):
    with pytest.raises(KeyError, match="ARLMSeq2SeqCollator: example 0 has neither 'target_ids' nor 'input_ids'"):
        ARLMSeq2SeqCollator(simple_tokenizer, block_size=6)([{"prompt_ids": [10]}])
