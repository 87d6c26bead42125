import json

import pytest
import torch
import torch._dynamo.testing

from arlm.network.decoder import DecoderOutput
from arlm.datamodule_arlm import ARLMSeq2SeqPredCollator, id_lists_to_tensors, prepare_prefix_ids_arlm
from arlm.metrics_arlm import seq2seq_exact_match_update_fn
from arlm.model_arlm import RotaryTransformerARLMModel
from arlm.predictor_arlm import ARLMPredictor
from tests.oracles import greedy_decode_without_cache
from tests.conftest import TINY_MODEL_KWARGS, VOCAB_SIZE

PAD, EOS, BOS = 0, 3, 4
PROMPTS = [[7, 8, 9, 10, 11, 12], [13], [14, 15, 16]]


@pytest.fixture
def peaked_model():
    """Two layers, grouped-query attention, partial RoPE; weights large enough that the
    next-token logits have clear winners (no near-ties for float noise to flip)."""
    torch.manual_seed(0)
    kwargs = dict(TINY_MODEL_KWARGS, num_layers=2, nhead=4, num_kv_heads=2, rotary_emb_dim=4)
    model = RotaryTransformerARLMModel(**kwargs).eval()
    model.reset_parameters(std=0.3)
    return model


def prompt_batch(prompts=PROMPTS):
    return id_lists_to_tensors(
        prepare_prefix_ids_arlm(prompts, pad_token_id=PAD, bos_token_id=BOS, truncate=None, add_bos="output")
    )


def greedy(model, tokenizer, **kwargs):
    kwargs = dict(dict(max_steps=12, max_length=40), **kwargs)
    return ARLMPredictor(
        tokenizer=tokenizer, model=model, sampling_method="greedy", **kwargs
    )


def pad_after_first_eos(ids, start):
    """What the predictor must output for reference ids: padding after each row's first EOS."""
    ids = ids.clone()
    for row in ids:
        eos = (row[start:] == EOS).nonzero()
        if len(eos):
            row[start + eos[0, 0] + 1 :] = PAD
    return ids


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["batch1", "ragged"])
def test_cached_greedy_equals_full_recompute(peaked_model, simple_tokenizer, cache, prompts):
    batch = prompt_batch(prompts)
    out = greedy(peaked_model, simple_tokenizer, cache=cache).predict(batch)
    reference = greedy_decode_without_cache(
        peaked_model, batch["input_ids"], batch["attention_mask"], max_new_tokens=12
    )
    P = batch["input_ids"].shape[1]
    assert out["output_start_idx"] == P
    assert torch.equal(out["ids"], pad_after_first_eos(reference, P))


def test_left_padded_batch_equals_each_prompt_alone(peaked_model, simple_tokenizer):
    predictor = greedy(peaked_model, simple_tokenizer)
    together = predictor.predict(prompt_batch())
    for i, prompt in enumerate(PROMPTS):
        alone = predictor.predict(prompt_batch([prompt]))
        assert torch.equal(together["ids"][i, -12:], alone["ids"][0, -12:])
        assert together["text"][i] == alone["text"][0]


class ScriptedModel(torch.nn.Module):
    """Emits ``script[k]`` (one token per row) at the k-th call, whatever the input: its decoder
    returns one-hot hidden states that an identity head turns into logits."""

    def __init__(self, script):
        super().__init__()
        self.model = ScriptedDecoder(script)
        self.lm_head = torch.nn.Linear(VOCAB_SIZE, VOCAB_SIZE, bias=False)
        torch.nn.init.eye_(self.lm_head.weight)

    def last_hidden_state(self, input_ids, attention_mask=None, positions=None, cache=None):
        return self.model(input_ids, attention_mask=attention_mask, cache=cache).last_hidden_state


class ScriptedDecoder(torch.nn.Module):
    config = None  # the predictor's dynamic cache does not need one

    def __init__(self, script):
        super().__init__()
        self.script = torch.tensor(script)
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, cache=None):
        hidden = torch.full((input_ids.shape[0], input_ids.shape[1], VOCAB_SIZE), -1.0)
        hidden[:, -1].scatter_(1, self.script[self.calls][:, None], 1.0)
        self.calls += 1
        return DecoderOutput(last_hidden_state=hidden)


def test_rows_stop_at_eos_then_pad_and_the_batch_stops_when_all_ended(simple_tokenizer):
    script = [[7, 7, 7], [EOS, 8, 8], [9, 9, EOS], [9, EOS, 9], [9, 9, 9], [9, 9, 9]]
    model = ScriptedModel(script)
    out = greedy(model, simple_tokenizer, max_steps=6).predict(prompt_batch())
    P = out["output_start_idx"]
    assert out["ids"][:, P:].tolist() == [
        [7, EOS, PAD, PAD, PAD, PAD],
        [7, 8, 9, EOS, PAD, PAD],
        [7, 8, EOS, PAD, PAD, PAD],
    ]
    assert model.model.calls == 4  # prefill + 3 steps: the last row ended at the 4th token
    assert out["attention_mask"][:, P:].tolist() == [
        [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0],
    ]
    assert out["text"] == ["0", "0 1 2", "0 1"]
    assert out["time_taken"][0] <= out["time_taken"][2] <= out["time_taken"][1]


def test_stops_at_max_steps_and_max_length(peaked_model, simple_tokenizer):
    batch = prompt_batch()  # width 7
    assert greedy(peaked_model, simple_tokenizer, max_steps=5).predict(batch)["ids"].shape == (3, 12)
    assert greedy(peaked_model, simple_tokenizer, max_length=10).predict(batch)["ids"].shape == (3, 10)


def test_output_fields_shapes_and_positions(peaked_model, simple_tokenizer):
    batch = prompt_batch()
    out = greedy(peaked_model, simple_tokenizer).predict(batch)
    assert out["ids"].shape == out["attention_mask"].shape == out["positions"].shape == (3, 19)
    assert ((out["ids"] >= 0) & (out["ids"] < VOCAB_SIZE)).all()
    assert torch.equal(out["attention_mask"][:, :7], batch["attention_mask"])
    lengths = batch["attention_mask"].sum(1)
    real = out["attention_mask"].bool()
    for i in range(3):  # real tokens sit at consecutive positions 0, 1, 2, ...
        assert out["positions"][i][real[i]].tolist() == list(range(int(real[i].sum())))
        assert out["positions"][i, 7] == lengths[i]
    assert all(t > 0 for t in out["time_taken"]) and len(out["time_taken"]) == 3
    assert len(out["text"]) == len(out["text_with_spl_tokens"]) == 3


@pytest.mark.parametrize(
    "method, extra", [("sample", {}), ("sample_top_k", {"top": 5}), ("sample_top_p", {"p": 0.5})]
)
def test_sampling_is_in_vocab_and_deterministic_under_a_seed(
    peaked_model, simple_tokenizer, method, extra
):
    predictor = ARLMPredictor(
        max_steps=12, max_length=40, tokenizer=simple_tokenizer, model=peaked_model,
        sampling_method=method, temperature=2.0, **extra,
    )
    torch.manual_seed(123)
    first = predictor.predict(prompt_batch())["ids"]
    torch.manual_seed(123)
    second = predictor.predict(prompt_batch())["ids"]
    assert torch.equal(first, second)
    assert ((first >= 0) & (first < VOCAB_SIZE)).all()


def test_works_on_collator_batches_and_metrics_read_it(peaked_model, simple_tokenizer):
    collator = ARLMSeq2SeqPredCollator(simple_tokenizer, block_size=24, input_block_size=8)
    examples = [
        {"prompt_ids": p, "input_ids": [20, 21], "answer": str(i)} for i, p in enumerate(PROMPTS)
    ]
    batch = collator(examples)
    out = greedy(peaked_model, simple_tokenizer, max_steps=16, max_length=24).predict(batch)
    match = seq2seq_exact_match_update_fn(batch, out, simple_tokenizer)
    assert match["pred"].shape == batch["target_ids"].shape


def test_to_dict_round_trips_the_fields(peaked_model, simple_tokenizer):
    batch = dict(prompt_batch(), answer=["a", "b", "c"], target_ids=torch.tensor([[20, EOS, PAD]] * 3))
    predictor = greedy(peaked_model, simple_tokenizer)
    out = predictor.predict(batch)
    out["metric_exact_match"] = [1.0, 0.0, 1.0]
    rows = json.loads(json.dumps(predictor.to_dict(batch, out)))
    P = out["output_start_idx"]
    assert len(rows) == 3
    for i, row in enumerate(rows):
        generated = out["ids"][i, P:][out["attention_mask"][i, P:].bool()].tolist()
        special = set(simple_tokenizer.all_special_ids)
        assert row["generated_text"] == out["text"][i] == simple_tokenizer.decode(
            [t for t in generated if t not in special]
        )
        assert row["prompt"] == simple_tokenizer.decode(PROMPTS[i])
        assert row["text"] == " ".join(s for s in (row["prompt"], row["generated_text"]) if s)
        assert row["generated_length"] == len(generated)
        assert row["time_taken"] == out["time_taken"][i]
        assert row["text_with_spl_tokens"] == out["text_with_spl_tokens"][i]
        assert row["answer"] == "abc"[i] and row["truth"] == "13"
        assert row["metric_exact_match"] == [1.0, 0.0, 1.0][i]


def test_generate_continues_text_prompts(peaked_model, simple_tokenizer):
    predictor = greedy(peaked_model, simple_tokenizer, max_steps=5)
    texts = predictor.generate(["0 1 2 3 4 5", "6"])
    batch = prompt_batch([[7, 8, 9, 10, 11, 12], [13]])
    assert texts == predictor.predict(batch)["text"]


def test_built_without_components_exposes_them_for_injection():
    predictor = ARLMPredictor(max_steps=4, max_length=16)
    assert predictor.model is None and predictor.tokenizer is None
    assert predictor.noise_schedule is None
    with pytest.raises(ValueError, match="ARLMPredictor.model is not set"):
        predictor.predict(prompt_batch())


def test_a_model_without_decoder_and_head_is_named(simple_tokenizer):
    """Only what :class:`ARLMModel` describes is used: a bare module is refused by name."""
    predictor = ARLMPredictor(max_steps=4, max_length=16, tokenizer=simple_tokenizer, model=torch.nn.Linear(4, 4))
    with pytest.raises(TypeError, match=r"\.model .* \.lm_head .* got Linear"):
        predictor.predict(prompt_batch())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(top=0), "top \\(top-k\\) must be an integer >= 1, got 0"),
        (dict(p=0.0), "p \\(top-p\\) must be in \\(0, 1\\], got 0.0"),
        (dict(p=1.2), "p \\(top-p\\) must be in \\(0, 1\\], got 1.2"),
        (dict(sampling_method="beam"), "sampling_method must be one of .* got 'beam'"),
        (dict(temperature=0.0), "temperature must be > 0"),
        (dict(max_steps=0), "max_steps must be an integer >= 1, got 0"),
        (dict(max_steps=True), "max_steps must be an integer >= 1, got True"),
        (dict(max_length=16.0), "max_length must be an integer >= 2, got 16.0"),
        (dict(cache="paged"), "cache must be one of"),
        (dict(compile=True), "compile=True needs cache='static'"),
    ],
)
def test_bad_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ARLMPredictor(**dict(dict(max_steps=4, max_length=16), **kwargs))


def test_bad_prompt_batches_raise(peaked_model, simple_tokenizer):
    predictor = greedy(peaked_model, simple_tokenizer, max_length=7)
    empty = {"input_ids": torch.zeros(0, 3, dtype=torch.long), "attention_mask": torch.zeros(0, 3)}
    with pytest.raises(ValueError, match="empty or malformed prompt batch: input_ids of shape \\(0, 3\\)"):
        predictor.predict(empty)
    right_padded = {"input_ids": torch.tensor([[7, 4, 0]]), "attention_mask": torch.tensor([[1, 1, 0]])}
    with pytest.raises(ValueError, match="prompts must be left-padded"):
        greedy(peaked_model, simple_tokenizer).predict(right_padded)
    with pytest.raises(ValueError, match="empty list of prompts"):
        predictor.generate([])


def test_prompts_that_fill_max_length_come_back_unchanged(peaked_model, simple_tokenizer):
    """The seed: generation stops when max_length is reached, here before the first token."""
    batch = prompt_batch()
    assert batch["input_ids"].shape[1] == 7
    with pytest.warns(UserWarning, match="the prompts are 7 tokens wide and fill max_length=7: no token is generated"):
        out = greedy(peaked_model, simple_tokenizer, max_length=7).predict(batch)
    assert torch.equal(out["ids"], batch["input_ids"]) and out["output_start_idx"] == 7
    assert torch.equal(out["attention_mask"], batch["attention_mask"])
    assert out["text"] == ["", "", ""] and len(out["time_taken"]) == 3
    rows = greedy(peaked_model, simple_tokenizer, max_length=7).to_dict(batch, out)
    assert [r["generated_length"] for r in rows] == [0, 0, 0]


def test_prompts_wider_than_max_length_are_refused(peaked_model, simple_tokenizer):
    """Before, a 12-token prompt under max_length=10 came back with empty text, silently."""
    predictor = greedy(peaked_model, simple_tokenizer, max_length=10)
    with pytest.raises(ValueError, match=(
        r"the prompts are 13 tokens wide \(left-padded to the longest\), more than max_length=10, .* "
        r"Fix: raise max_length \(predictor.max_length, now 10\) to at least 13")):
        predictor.generate([" ".join(str(i) for i in range(12))])
    with pytest.raises(ValueError, match="the prompts are 7 tokens wide .* more than max_length=5"):
        greedy(peaked_model, simple_tokenizer, max_length=5).predict(prompt_batch())


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_static_step_is_traced_once_for_every_step(
    peaked_model, simple_tokenizer, fresh_dynamo, monkeypatch
):
    """Dynamo's guards (not the backend) decide recompiles, so count traced frames with a
    counting backend: one trace serves every step of two same-shaped batches."""
    counter = torch._dynamo.testing.CompileCounter()
    compile_fn = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_fn(fn, backend=counter, **kw))
    predictor = greedy(peaked_model, simple_tokenizer, cache="static", compile=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        out = predictor.predict(prompt_batch())
        predictor.predict(prompt_batch())
    assert counter.frame_count == 1
    assert torch.equal(out["ids"], greedy(peaked_model, simple_tokenizer).predict(prompt_batch())["ids"])


@pytest.mark.slow
def test_inductor_compiled_step_matches_eager_without_recompiling(
    peaked_model, simple_tokenizer, fresh_dynamo
):
    predictor = greedy(peaked_model, simple_tokenizer, cache="static", compile=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        out = predictor.predict(prompt_batch())
        again = predictor.predict(prompt_batch())
    eager = greedy(peaked_model, simple_tokenizer).predict(prompt_batch())
    assert torch.equal(out["ids"], eager["ids"]) and torch.equal(again["ids"], eager["ids"])
