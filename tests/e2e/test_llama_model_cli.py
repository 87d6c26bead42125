"""``model=rotary_transformer_llama_arlm``: the RMSNorm + SwiGLU network composes into every STAR
experiment, trains, and exports as transformers' own ``LlamaForCausalLM`` (grouped-query
attention through ``model.num_kv_heads``)."""

import json

import pytest
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_TRAIN, checkpoint_dir, offline_env, run_xlm

pytestmark = pytest.mark.slow
LLAMA = "model=rotary_transformer_llama_arlm"


def test_llama_model_composes_with_the_llama_network(tmp_path):
    out = run_xlm(["job_type=name", "experiment=star_easy_arlm", LLAMA], cwd=REPO_ROOT,
                  env=offline_env(tmp_path / "data", tmp_path / "logs")).stdout
    assert "star_easy__arlm_seq2seq__rotary_transformer_llama_arlm" in out


def test_tiny_llama_run_exports_as_llama_for_causal_lm(star_data_dir, tmp_path):
    env = offline_env(star_data_dir, tmp_path / "logs")
    tiny = ["model.d_model=32", "model.num_layers=1", "model.nhead=4", "model.num_kv_heads=2"]
    run_xlm(["job_type=train", "experiment=star_easy_arlm", LLAMA, *STAR_SIZES, *tiny, *TINY_TRAIN], cwd=REPO_ROOT, env=env)
    ckpt = checkpoint_dir(tmp_path / "logs") / "last.ckpt"
    out = tmp_path / "hf"
    proc = run_xlm(["job_type=export_hf", "experiment=star_easy_arlm", LLAMA, *STAR_SIZES, *tiny,
                    f"+export_hf.checkpoint_path={ckpt}", f"+export_hf.output_dir={out}", "+export_hf.architecture=native"],
                   cwd=REPO_ROOT, env=env)
    assert "as LlamaForCausalLM (native" in proc.stdout
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["num_key_value_heads"], config["head_dim"]) == ("llama", 2, 8)
    assert config["hidden_act"] == "silu" and not config["attention_bias"] and "auto_map" not in config
    assert config["intermediate_size"] == 32 * 8 // 3
    assert type(AutoModelForCausalLM.from_pretrained(out)) is LlamaForCausalLM
