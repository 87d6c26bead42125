"""``val/lm/perplexity`` and ``val/lm/token_nll`` of ``xlm job_type=eval`` are the corpus values:
``exp(sum of target-token NLL / number of target tokens)`` over the whole split, computed here by
hand, one row at a time, from the checkpoint (LM1B fixture whose rows differ in length)."""

import math
import re

import datasets
import pytest
import torch
import torch.nn.functional as F
from torch_ema import ExponentialMovingAverage
from xlm.datamodule import GPT2TokenizerFast

from arlm.model_arlm import RotaryTransformerARLMModel
from tests.e2e.fixtures_data import train_tokenizer, write_text_fixture
from tests.e2e.xlm_cli import TINY_MODEL, checkpoint_dir, offline_env, run_xlm

pytestmark = pytest.mark.slow
DATASET = "billion-word-benchmark/lm1b"
BLOCK_SIZE = 32


def logged(stdout: str, name: str) -> float:
    """The value of ``name`` in Lightning's results table."""
    match = re.search(re.escape(name) + r"\s*│\s*([-+0-9.eE]+)", stdout)
    assert match, f"{name} not in the eval output:\n{stdout[-3000:]}"
    return float(match.group(1))


def ema_model(checkpoint: dict, tokenizer) -> RotaryTransformerARLMModel:
    """The evaluated network: recorded kwargs, ``model.`` weights, then the EMA weights (eval
    restores xlm-core's EMA callback, which swaps them in for validation)."""
    kwargs = {k: v for k, v in checkpoint["hyper_parameters"]["model"].items() if k != "_target_"}
    kwargs.update(num_embeddings=tokenizer.full_vocab_size, padding_idx=tokenizer.pad_token_id, max_length=BLOCK_SIZE)
    model = RotaryTransformerARLMModel(**kwargs)
    model.load_state_dict({k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")})
    ema = ExponentialMovingAverage([p for p in model.parameters() if p.requires_grad], decay=0.5)
    ema.load_state_dict(checkpoint["ema"])
    ema.copy_to()
    return model.eval()


def test_eval_reports_corpus_perplexity_of_the_whole_split(tmp_path):
    tokenizer_dir = train_tokenizer(write_text_fixture(tmp_path, DATASET, {"train": 300, "test": 64}), tmp_path / "tok")
    env = offline_env(tmp_path / "data", tmp_path / "logs")
    args = [
        "experiment=lm1b_arlm", "global_components.tokenizer._target_=xlm.datamodule.GPT2TokenizerFast.from_pretrained",
        f"global_components.tokenizer.pretrained_model_name_or_path={tokenizer_dir}",
        "model=rotary_transformer_tiny_arlm", *TINY_MODEL, f"block_size={BLOCK_SIZE}",
        "per_device_batch_size=4", "global_batch_size=4", "num_dataloader_workers=0", "num_dataset_workers=1",
        "dataloader_prefetch_factor=null",
    ]
    run_xlm(
        ["job_type=train", *args, "trainer.max_steps=2", "trainer.val_check_interval=2",
         "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0"],
        cwd=tmp_path, env=env,
    )
    ckpt = checkpoint_dir(tmp_path / "logs") / "last.ckpt"
    out = run_xlm(["job_type=eval", *args, f"+eval.ckpt_path={ckpt}"], cwd=tmp_path, env=env).stdout

    tokenizer = GPT2TokenizerFast.from_pretrained(str(tokenizer_dir))
    model = ema_model(torch.load(ckpt, map_location="cpu", weights_only=False), tokenizer)
    rows = datasets.load_from_disk(str(tmp_path / "data" / DATASET / "test"))["token_ids"]
    assert len({min(len(r), BLOCK_SIZE) for r in rows}) > 3, "the fixture rows should differ in length"
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor(row[:BLOCK_SIZE])
            nll = F.cross_entropy(model(ids[None])[0, :-1].double(), ids[1:], reduction="sum").item()
            total, count = total + nll, count + len(ids) - 1
    assert math.isclose(logged(out, "val/lm/token_nll"), total / count, rel_tol=1e-4)
    assert math.isclose(logged(out, "val/lm/perplexity"), math.exp(total / count), rel_tol=1e-4)
