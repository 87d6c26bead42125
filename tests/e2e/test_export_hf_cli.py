"""A real ``xlm job_type=train`` checkpoint through ``xlm job_type=export_hf``: the Hugging Face
directory loads with the Auto classes and gives the trained network's logits exactly."""

import pytest
import torch
from torch_ema import ExponentialMovingAverage
from transformers import AutoModelForCausalLM, AutoTokenizer
from xlm.datamodule import SimpleSpaceTokenizer

from arlm import ArlowForCausalLM, ArlowTokenizerFast, RotaryTransformerARLMModel
from tests.e2e.xlm_cli import (
    REPO_ROOT, STAR_SIZES, TINY_MODEL, TINY_TRAIN, checkpoint_dir, offline_env, run_xlm,
)

pytestmark = pytest.mark.slow
STAR = ["experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL]


@pytest.fixture(scope="module")
def last_checkpoint(star_data_dir, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("export_run") / "logs"
    env = offline_env(star_data_dir, log_dir)
    run_xlm(["job_type=train", *STAR, *TINY_TRAIN], cwd=REPO_ROOT, env=env)
    return env, checkpoint_dir(log_dir) / "last.ckpt"


def xlm_model_from(checkpoint: dict, use_ema: bool) -> RotaryTransformerARLMModel:
    """The trained network rebuilt by hand: recorded kwargs (xlm-core leaves the tokenizer's
    values as literal ``${tokenizer:...}``), ``model.`` keys, torch_ema's copy."""
    kwargs = {k: v for k, v in checkpoint["hyper_parameters"]["model"].items() if k != "_target_"}
    assert kwargs["num_embeddings"] == "${tokenizer:full_vocab_size}"
    tokenizer = SimpleSpaceTokenizer.for_numbers(20)
    kwargs.update(num_embeddings=tokenizer.full_vocab_size, padding_idx=tokenizer.pad_token_id)
    model = RotaryTransformerARLMModel(**kwargs)
    prefix = "model."
    model.load_state_dict({k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)})
    if use_ema:
        ema = ExponentialMovingAverage([p for p in model.parameters() if p.requires_grad], decay=0.5)
        ema.load_state_dict(checkpoint["ema"])
        ema.copy_to()
    return model.eval()


@pytest.mark.parametrize("apply_ema", [None, False])
def test_export_hf_job_reproduces_the_trained_network(last_checkpoint, tmp_path, apply_ema):
    env, ckpt_path = last_checkpoint
    out = tmp_path / "hf"
    ema_flag = [] if apply_ema is None else [f"+export_hf.apply_ema={str(apply_ema).lower()}"]
    proc = run_xlm(
        ["job_type=export_hf", *STAR, f"+export_hf.checkpoint_path={ckpt_path}",
         f"+export_hf.output_dir={out}", *ema_flag],
        cwd=REPO_ROOT, env=env,
    )
    assert f"Exported {ckpt_path} to {out}" in proc.stdout
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert isinstance(hf, ArlowForCausalLM) and isinstance(tokenizer, ArlowTokenizerFast)
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    reference = xlm_model_from(checkpoint, use_ema=apply_ema is None)
    ids = torch.randint(7, hf.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, reference(ids))
    star_tokenizer = SimpleSpaceTokenizer.for_numbers(20)
    assert tokenizer.encode("3 4 5 [EOS]") == star_tokenizer.encode("3 4 5 [EOS]")
    assert len(tokenizer) == hf.config.vocab_size == star_tokenizer.full_vocab_size


def test_export_hf_job_without_paths_says_what_it_needs(last_checkpoint):
    env, _ = last_checkpoint
    proc = run_xlm(["job_type=export_hf", *STAR], cwd=REPO_ROOT, env=env, check=False)
    assert proc.returncode != 0
    assert "export_hf needs +export_hf.checkpoint_path" in proc.stdout
