"""``xlm job_type=generate_arlm`` decodes with the checkpoint's EMA weights by default and with its
raw weights under ``+generation.use_ema=false``; the EMA output is what the exported Hugging Face
model (written as its native transformers twin) generates greedily."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM
from xlm.datamodule import SimpleSpaceTokenizer

from tests.e2e.xlm_cli import (
    REPO_ROOT, STAR_SIZES, TINY_MODEL, TINY_TRAIN, checkpoint_dir, offline_env, run_xlm,
)

pytestmark = pytest.mark.slow
STAR = ["experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL]
STAR_EASY_MAX_LENGTH = 36  # the predictor's max_length: block_size 36 + input_block_size 0


@pytest.fixture(scope="module")
def diverged_checkpoint(star_data_dir, tmp_path_factory):
    """A trained checkpoint whose raw output layer is negated, so that its raw and EMA weights
    are certain to decode differently (argmin against argmax of similar logits)."""
    root = tmp_path_factory.mktemp("ema_run")
    env = offline_env(star_data_dir, root / "logs")
    run_xlm(["job_type=train", *STAR, *TINY_TRAIN], cwd=REPO_ROOT, env=env)
    checkpoint = torch.load(checkpoint_dir(root / "logs") / "last.ckpt", map_location="cpu", weights_only=False)
    assert "ema" in checkpoint
    checkpoint["state_dict"]["model.lm_head.weight"] = -checkpoint["state_dict"]["model.lm_head.weight"]
    path = root / "diverged.ckpt"
    torch.save(checkpoint, path)
    return env, path


def _generate(env, ckpt, out_dir, *extra):
    run_xlm(
        ["job_type=generate_arlm", *STAR, "+generation.device=cpu", f"+generation.ckpt_path={ckpt}",
         f"+generation.output_dir={out_dir}", *extra],
        cwd=REPO_ROOT, env=env,
    )
    return [json.loads(line) for line in open(out_dir / "prediction.jsonl")]


def test_generate_arlm_uses_ema_weights_unless_told_otherwise(diverged_checkpoint, tmp_path):
    env, ckpt = diverged_checkpoint
    with_ema = _generate(env, ckpt, tmp_path / "ema")
    raw = _generate(env, ckpt, tmp_path / "raw", "+generation.use_ema=false")
    assert [r["prompt"] for r in with_ema] == [r["prompt"] for r in raw]
    assert [r["generated_text"] for r in with_ema] != [r["generated_text"] for r in raw]

    hf_dir = tmp_path / "hf"
    run_xlm(
        ["job_type=export_hf", *STAR, f"+export_hf.checkpoint_path={ckpt}", f"+export_hf.output_dir={hf_dir}"],
        cwd=REPO_ROOT, env=env,
    )
    hf = AutoModelForCausalLM.from_pretrained(hf_dir).eval()  # the native export (GPT-NeoX)
    tokenizer = SimpleSpaceTokenizer.for_numbers(20)
    special = set(tokenizer.all_special_ids)
    for row in with_ema:
        ids = tokenizer.encode(row["prompt"], add_special_tokens=False) + [tokenizer.bos_token_id]
        with torch.no_grad():
            out = hf.generate(
                torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=STAR_EASY_MAX_LENGTH - len(ids), do_sample=False,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            )
        generated = [t for t in out[0, len(ids):].tolist() if t not in special]
        assert tokenizer.decode(generated) == row["generated_text"], row["prompt"]
