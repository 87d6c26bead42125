"""A training batch means the same on every device: its padding layout is declared by the
collator that builds it (``right_padded``, a Python bool), never guessed from tensor values that
only the CPU can read for free.

The accelerator path is the one where no tensor value is read on the host: the ``meta`` device
(shapes only: any read raises) and, to compare numbers on the CPU, the same code under
``torch.compile`` or with :func:`arlm.network.inputs.reads_values_for_free` answering False.
"""

import sys

import pytest
import torch

from arlm.datamodule_arlm import ARLMSeq2SeqCollator, DefaultARLMCollator
from arlm.loss_arlm import ARLMLoss
from arlm.model_arlm import RotaryTransformerARLMModel
from tests.conftest import TINY_MODEL_KWARGS, VOCAB_SIZE

PAD = 0
KWARGS = dict(TINY_MODEL_KWARGS, num_layers=2)


def padded_batch(layout: str, device: str = "cpu") -> dict:
    """Three LM rows of 5, 8 and 3 real tokens in 10 columns, padding placed per ``layout``
    (``left``, ``middle``: a gap of padding inside each short row, ``right``); no declaration."""
    g = torch.Generator().manual_seed(0)
    lengths, width = (5, 8, 3), 10
    input_ids = torch.full((3, width), PAD)
    mask = torch.zeros(3, width, dtype=torch.long)
    for b, n in enumerate(lengths):
        gap = width - n
        columns = {
            "left": range(gap, width),
            "right": range(n),
            "middle": [*range(n // 2), *range(n // 2 + gap, width)],
        }[layout]
        columns = torch.tensor(list(columns))
        input_ids[b, columns] = torch.randint(7, VOCAB_SIZE, (n,), generator=g)
        mask[b, columns] = 1
    target_ids = torch.full_like(input_ids, -100)
    for b in range(3):
        real = mask[b].nonzero().flatten()
        target_ids[b, real[:-1]] = input_ids[b, real[1:]]
    batch = {"input_ids": input_ids, "attention_mask": mask, "target_ids": target_ids}
    return {key: value.to(device) for key, value in batch.items()}


def model(device: str = "cpu") -> RotaryTransformerARLMModel:
    torch.manual_seed(0)
    with torch.device(device):
        return RotaryTransformerARLMModel(**KWARGS)


def read_no_values(monkeypatch) -> None:
    """Make every ``arlm`` module answer "reading tensor values is not free", as on an accelerator."""
    for name, module in list(sys.modules.items()):
        if name.startswith("arlm") and hasattr(module, "reads_values_for_free"):
            monkeypatch.setattr(module, "reads_values_for_free", lambda tensor: False)


@pytest.mark.parametrize("layout", ["left", "middle"])
def test_padded_batch_on_the_accelerator_path_gets_exactly_the_cpu_loss(layout, monkeypatch):
    """The batch does not declare itself right-padded, so the loss gives the model its padding
    mask on every path; the numbers are bit for bit those of the CPU in eager mode."""
    loss = ARLMLoss(model())
    batch = padded_batch(layout)
    on_cpu = loss(batch)
    compiled = torch.compile(loss.loss_fn, backend="eager", fullgraph=True)(batch)
    torch._dynamo.reset()
    read_no_values(monkeypatch)
    unread = loss(batch)
    for other in (compiled, unread):
        assert torch.equal(other["loss"], on_cpu["loss"])
        assert torch.equal(other["nlls"], on_cpu["nlls"])


@pytest.mark.parametrize("layout", ["left", "middle"])
def test_padded_batch_means_what_its_rows_mean_alone(layout):
    """Each row's loss terms are those of the row without its padding (positions count real
    tokens only, padding is never attended to)."""
    loss = ARLMLoss(model())
    batch = padded_batch(layout)
    nlls = loss(batch)["nlls"]
    for b in range(3):
        real = batch["attention_mask"][b].bool()
        alone = {key: value[b : b + 1, real] for key, value in batch.items()}
        torch.testing.assert_close(nlls[b, real], loss(alone)["nlls"][0], atol=1e-5, rtol=1e-5)


def test_left_padded_batch_on_meta_reads_no_value_and_passes_its_mask(sdpa_calls):
    loss = ARLMLoss(model("meta"))(padded_batch("left", "meta"))["loss"]
    loss.backward()
    assert loss.device.type == "meta"
    assert sdpa_calls and all(mask is not None for mask, _ in sdpa_calls)


def test_declared_right_padded_batch_runs_without_a_mask_on_meta(sdpa_calls):
    batch = dict(padded_batch("right", "meta"), right_padded=True)
    ARLMLoss(model("meta"))(batch)["loss"].backward()
    assert sdpa_calls and all(mask is None and causal for mask, causal in sdpa_calls)


def test_declared_and_undeclared_right_padded_batches_agree():
    loss = ARLMLoss(model())
    batch = padded_batch("right")
    declared = loss(dict(batch, right_padded=True))
    real = batch["target_ids"] != -100
    torch.testing.assert_close(declared["nlls"][real], loss(batch)["nlls"][real], atol=1e-5, rtol=1e-5)


def test_false_declaration_is_an_error_where_it_can_be_checked_for_free():
    batch = dict(padded_batch("left"), right_padded=True)
    with pytest.raises(ValueError, match=r"declares right_padded=True but row 0 .* real token at column 5 after padding"):
        ARLMLoss(model())(batch)


@pytest.mark.parametrize("value", ["yes", 1, torch.tensor(True)])
def test_declaration_must_be_a_python_bool(value):
    with pytest.raises(ValueError, match=r"batch\['right_padded'\] must be True or False"):
        ARLMLoss(model())(dict(padded_batch("right"), right_padded=value))


@pytest.fixture
def collated(simple_tokenizer) -> dict:
    return {
        "lm": DefaultARLMCollator(simple_tokenizer, block_size=8)([{"input_ids": [9, 10, 11]}, {"input_ids": [12] * 9}]),
        "seq2seq": ARLMSeq2SeqCollator(simple_tokenizer, block_size=10)(
            [{"prompt_ids": [9, 10], "input_ids": [11]}, {"prompt_ids": [12], "input_ids": [13, 14, 15]}]
        ),
    }


def test_training_collators_declare_right_padding(collated):
    for batch in collated.values():
        assert batch["right_padded"] is True


def test_declaration_survives_the_harness_device_transfer(collated):
    """xlm-core's Harness keeps Lightning's ``transfer_batch_to_device``, which moves tensors and
    leaves other values as they are; on the moved batch the loss runs without a mask."""
    Harness = pytest.importorskip("xlm.harness").Harness
    for batch in collated.values():
        moved = Harness.transfer_batch_to_device(None, batch, torch.device("meta"), 0)
        assert moved["right_padded"] is True and moved["input_ids"].device.type == "meta"
        ARLMLoss(model("meta"))(moved)["loss"].backward()


def test_no_query_is_left_without_keys(monkeypatch):
    """Some SDPA kernels (cuDNN's) answer a query that sees no key with NaN, which the next layer
    spreads to real tokens; the decoder's mask never leaves a query without a key, so such a
    kernel still gives the CPU loss."""
    loss = ARLMLoss(model())
    batch = padded_batch("left")
    on_cpu = loss(batch)["loss"]
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def nan_for_queries_without_keys(q, k, v, attn_mask=None, **kwargs):
        out = sdpa(q, k, v, attn_mask=attn_mask, **kwargs)
        if attn_mask is None:
            return out
        return out.masked_fill(~attn_mask.any(dim=-1, keepdim=True), float("nan"))

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", nan_for_queries_without_keys)
    assert torch.equal(loss(batch)["loss"], on_cpu)
