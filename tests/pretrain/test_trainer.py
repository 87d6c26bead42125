"""The pretraining entry point: streams local files, checkpoints gradients, learns."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arlm import ArlowForCausalLM
from arlm.pretrain.trainer import PackedTextDataset, main
from arlm.pretrain.tokenizer import train_arlow_tokenizer

SENTENCES = [
    "the cat sat on the mat and looked at the dog",
    "a quick brown fox jumps over the lazy dog",
    "one two three four five six seven eight nine ten",
]


@pytest.fixture
def corpus(tmp_path):
    text = tmp_path / "train.txt"
    text.write_text("\n".join(SENTENCES * 30) + "\n")
    rows = tmp_path / "train.jsonl"
    rows.write_text("\n".join(json.dumps({"text": s, "id": i}) for i, s in enumerate(SENTENCES * 30)))
    return text, rows


def test_packed_dataset_streams_fixed_blocks_with_eos_between_documents(corpus):
    text, rows = corpus
    tokenizer = train_arlow_tokenizer([text], vocab_size=320)
    blocks = list(PackedTextDataset([text, rows], tokenizer, block_size=16))
    tokens_per_pass = sum(len(tokenizer.encode(s)) + 1 for s in SENTENCES * 60)
    assert len(blocks) == tokens_per_pass // 16
    assert all(b["input_ids"].shape == (16,) and torch.equal(b["input_ids"], b["labels"]) for b in blocks)
    stream = torch.cat([b["input_ids"] for b in blocks]).tolist()
    first = tokenizer.encode(SENTENCES[0])
    assert stream[: len(first) + 1] == first + [tokenizer.eos_token_id]
    with pytest.raises(ValueError, match="block_size must be at least 2"):
        PackedTextDataset([text], tokenizer, block_size=1)
    with pytest.raises(ValueError, match="text file not found"):
        PackedTextDataset([text.parent / "nope.txt"], tokenizer, block_size=8)


@pytest.mark.slow  # ~10 s alone, ~25 s on a busy 2-core machine
def test_pretraining_runs_with_gradient_checkpointing_and_loss_decreases(corpus, tmp_path):
    text, rows = corpus
    out = tmp_path / "run"
    trainer = main([
        "--train-files", str(text), str(rows), "--output-dir", str(out), "--vocab-size", "320",
        "--hidden-size", "32", "--num-hidden-layers", "2", "--num-attention-heads", "4",
        "--num-key-value-heads", "2", "--block-size", "32", "--batch-size", "8",
        "--max-steps", "30", "--logging-steps", "5", "--learning-rate", "3e-3",
    ])
    assert trainer.model.is_gradient_checkpointing
    assert trainer.args.report_to == []
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0]
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert isinstance(model, ArlowForCausalLM) and len(tokenizer) == model.config.vocab_size == 320
    assert not model.config.cross_attention
