"""``model=rotary_transformer_llama_arlm``: the RMSNorm + SwiGLU network composes into every STAR
experiment, trains, and exports as transformers' own ``LlamaForCausalLM`` (grouped-query
attention through ``model.num_kv_heads``) and, with ``+export_hf.format=gguf``, as a GGUF file
that transformers (no arlm) and llama.cpp run with the export's greedy STAR answers."""

import json
import os
import re
import subprocess
import sys

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_TRAIN, checkpoint_dir, offline_env, run_xlm
from tests.hf_without_arlm import run_without_arlm

pytestmark = pytest.mark.slow
LLAMA = "model=rotary_transformer_llama_arlm"
TINY_LLAMA = ["model.d_model=32", "model.num_layers=1", "model.nhead=4", "model.num_kv_heads=2"]
STAR_LLAMA = ["experiment=star_easy_arlm", LLAMA, *STAR_SIZES, *TINY_LLAMA]
LLAMA_CPP_PYTHON = os.environ.get("ARLM_LLAMA_CPP_PYTHON", sys.executable)
"""The interpreter with ``llama-cpp-python`` for the llama.cpp test (docs/using-exports.md)."""


def test_llama_model_composes_with_the_llama_network(tmp_path):
    out = run_xlm(["job_type=name", "experiment=star_easy_arlm", LLAMA], cwd=REPO_ROOT,
                  env=offline_env(tmp_path / "data", tmp_path / "logs")).stdout
    assert "star_easy__arlm_seq2seq__rotary_transformer_llama_arlm" in out


@pytest.fixture(scope="module")
def llama_run(star_data_dir, tmp_path_factory):
    """A tiny trained Llama-shaped STAR run exported as the native directory (``hf``) and as f32
    GGUF (``gguf_f32``), with the lines each export job printed."""
    root = tmp_path_factory.mktemp("llama_run")
    env = offline_env(star_data_dir, root / "logs")
    run_xlm(["job_type=train", *STAR_LLAMA, *TINY_TRAIN], cwd=REPO_ROOT, env=env)
    ckpt = checkpoint_dir(root / "logs") / "last.ckpt"
    printed = {}
    for name, flags in (("hf", ["+export_hf.architecture=native"]),
                        ("gguf_f32", ["+export_hf.format=gguf"])):
        printed[name] = run_xlm(["job_type=export_hf", *STAR_LLAMA, f"+export_hf.checkpoint_path={ckpt}",
                                 f"+export_hf.output_dir={root / name}", *flags], cwd=REPO_ROOT, env=env).stdout
    return root, printed


def star_prompts(star_data_dir, tokenizer, count=8):
    """The first ``count`` STAR-easy test graphs as prompts in the training format, ``<prompt> [BOS]``."""
    rows = datasets.load_from_disk(str(star_data_dir / "dhruveshpatel" / "star-small" / "test"))
    return [tokenizer.decode(row["prompt_token_ids"] + [tokenizer.bos_token_id]).strip() for row in rows.select(range(count))]


def export_answers(hf_dir, prompts):
    """The native export's greedy answers (its generation_config: stop at EOS or the length limit)."""
    model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    answers = []
    for prompt in prompts:
        batch = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**batch)
        answers.append(tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return answers


def test_tiny_llama_run_exports_as_llama_for_causal_lm(llama_run):
    root, printed = llama_run
    assert "as LlamaForCausalLM (native" in printed["hf"]
    config = json.loads((root / "hf" / "config.json").read_text())
    assert (config["model_type"], config["num_key_value_heads"], config["head_dim"]) == ("llama", 2, 8)
    assert config["hidden_act"] == "silu" and not config["attention_bias"] and "auto_map" not in config
    assert config["intermediate_size"] == 32 * 8 // 3
    assert type(AutoModelForCausalLM.from_pretrained(root / "hf")) is LlamaForCausalLM


READ_GGUF = r'''
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

prompts = json.load(open("prompts.json"))
model = AutoModelForCausalLM.from_pretrained("gguf_f32", gguf_file="model-f32.gguf").eval()
model.generation_config = GenerationConfig.from_pretrained("gguf_f32")
tokenizer = AutoTokenizer.from_pretrained("gguf_f32")
answers, logits = [], []
for prompt in prompts:
    batch = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        logits.append(model(**batch).logits[0].tolist())
        out = model.generate(**batch)
    answers.append(tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip())
json.dump({"answers": answers, "logits": logits}, open("gguf_read.json", "w"))
'''


def test_gguf_export_read_by_transformers_without_arlm_gives_the_star_answers(llama_run, star_data_dir):
    root, printed = llama_run
    assert f"to {root / 'gguf_f32' / 'model-f32.gguf'} (GGUF, llama.cpp's llama architecture)" in printed["gguf_f32"]
    prompts = star_prompts(star_data_dir, AutoTokenizer.from_pretrained(root / "hf"))
    (root / "prompts.json").write_text(json.dumps(prompts))
    run_without_arlm(READ_GGUF, [], root)
    read = json.loads((root / "gguf_read.json").read_text())
    model, tokenizer = AutoModelForCausalLM.from_pretrained(root / "hf").eval(), AutoTokenizer.from_pretrained(root / "hf")
    for prompt, logits in zip(prompts, read["logits"]):
        with torch.no_grad():
            expected = model(**tokenizer(prompt, return_tensors="pt")).logits[0]
        torch.testing.assert_close(torch.tensor(logits), expected, atol=1e-6, rtol=0)
    assert read["answers"] == export_answers(root / "hf", prompts)


RUN_LLAMA_CPP = r'''
import json, sys
import llama_cpp
import numpy as np

request = json.load(open(sys.argv[1]))
result = {"answers": [], "ids": [], "max_logit_diff": {}}
for cache in ("f32", "f16"):
    kinds = {"f32": llama_cpp.GGML_TYPE_F32, "f16": llama_cpp.GGML_TYPE_F16}[cache]
    llm = llama_cpp.Llama(model_path=request["model"], n_ctx=request["n_ctx"], logits_all=True,
                          type_k=kinds, type_v=kinds, n_threads=1, verbose=False)
    worst = 0.0
    for ids, expected in zip(request["ids"], request["logits"]):
        llm.reset()
        llm.eval(ids)
        worst = max(worst, float(np.abs(np.array(llm.scores[:len(ids)]) - np.array(expected)).max()))
    result["max_logit_diff"][cache] = worst
    if cache == "f32":
        for prompt in request["prompts"]:
            ids = llm.tokenize(prompt.encode(), special=True)
            out = llm.create_completion(prompt, max_tokens=request["max_length"] - len(ids), temperature=0.0)
            result["ids"].append(ids)
            result["answers"].append(out["choices"][0]["text"].strip())
json.dump(result, open(sys.argv[2], "w"))
'''


def llama_cpp_available() -> bool:
    proc = subprocess.run([LLAMA_CPP_PYTHON, "-c", "import llama_cpp"], capture_output=True)
    return proc.returncode == 0


@pytest.mark.llamacpp
@pytest.mark.skipif(not llama_cpp_available(), reason=f"llama_cpp does not import in {LLAMA_CPP_PYTHON} "
                    "(set ARLM_LLAMA_CPP_PYTHON, docs/using-exports.md)")
def test_llama_cpp_runs_the_gguf_export_with_its_logits_and_star_answers(llama_run, star_data_dir):
    """Opt-in: needs llama-cpp-python (built from source) in ``ARLM_LLAMA_CPP_PYTHON`` or this
    interpreter. llama.cpp's logits with an f32 KV cache are within 1e-4 of the export's, its
    default tokenization of a text prompt gives the export tokenizer's ids, and its greedy
    completion of each text prompt is the export's STAR answer."""
    root, _ = llama_run
    model, tokenizer = AutoModelForCausalLM.from_pretrained(root / "hf").eval(), AutoTokenizer.from_pretrained(root / "hf")
    prompts = star_prompts(star_data_dir, tokenizer)
    ids = [tokenizer(prompt)["input_ids"] for prompt in prompts]
    with torch.no_grad():
        logits = [model(torch.tensor([row])).logits[0].tolist() for row in ids]
    request = {"model": str(root / "gguf_f32" / "model-f32.gguf"), "n_ctx": model.config.max_position_embeddings,
               "max_length": model.generation_config.max_length, "prompts": prompts, "ids": ids, "logits": logits}
    (root / "llama_cpp_request.json").write_text(json.dumps(request))
    subprocess.run([LLAMA_CPP_PYTHON, "-c", RUN_LLAMA_CPP, root / "llama_cpp_request.json", root / "llama_cpp.json"],
                   check=True, timeout=600)
    result = json.loads((root / "llama_cpp.json").read_text())
    print(f"llama.cpp max |logit diff| vs the export: {result['max_logit_diff']}")
    assert result["max_logit_diff"]["f32"] < 1e-4
    assert result["ids"] == ids
    assert result["answers"] == export_answers(root / "hf", prompts)
    card = (root / "gguf_f32" / "README.md").read_text()
    (recipe,) = [block for block in re.findall(r"```python\n(.*?)```", card, flags=re.DOTALL) if "llama_cpp" in block]
    printed = subprocess.run([LLAMA_CPP_PYTHON, "-c", recipe], cwd=root, capture_output=True, text=True, check=True).stdout
    example = re.search(r"prompt = '(.*)'", recipe).group(1)
    assert printed.strip() == export_answers(root / "hf", [example])[0]  # the card's own recipe
