"""Our documented generation recipes print no warning on the installed transformers (CI: 4.57
here, 5.x and 4.56 in the Hugging Face environment), and ``generate()`` with an export's
defaults still stops at EOS and at the run's length limit.

The recipes are run as written, in a process where arlm cannot be imported: the Python examples
of README.md, docs/huggingface.md and docs/using-exports.md that generate, and those of the model
cards of a native and a GGUF export. Every ``warnings.warn`` and every transformers log record at
warning level or above during the recipe counts, except transformers 4's "Device set to use
cpu" notice of ``pipeline()``, which is about placement, not generation."""

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from arlm.export.exporter import export_checkpoint_to_hf
from arlm.model_arlm import XLM_MODEL_TARGET

from tests.export.test_native import BASE, LLAMA, word_tokenizer, xlm_model
from tests.hf_without_arlm import greedy_reference, run_without_arlm

REPO_ROOT = Path(__file__).resolve().parents[2]
LENGTH_LIMIT = 24
"""The run's predictor ``max_length`` = ``max_steps``, as STAR's (``block_size``): the limit binds."""
DOCUMENTS = ("README.md", "docs/huggingface.md", "docs/using-exports.md")
OTHER_TOOLS = ("ctranslate2", "onnx", "llama_cpp", "lm_eval", "peft")
RUN_QUIETLY = r'''
import contextlib, io, json, logging, sys, warnings
import torch, transformers  # imported first: only what the recipes do is checked

heard = []

class Keep(logging.Handler):
    def emit(self, record):
        heard.append(f"{record.name}: {record.getMessage()}")

logging.getLogger("transformers").addHandler(Keep(logging.WARNING))
with open(sys.argv[1]) as listing:
    recipes = json.load(listing)
report = {}
for path in recipes:
    with open(path) as source:
        recipe = compile(source.read(), path, "exec")
    heard.clear()
    printed = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
        warnings.simplefilter("always")
        exec(recipe, {"__name__": "__main__"})
    heard += [f"{w.category.__name__}: {w.message}" for w in caught]
    kept = [m for m in heard if not m.startswith("transformers.pipelines.base: Device set to use")]
    report[path] = {"printed": printed.getvalue(), "warnings": kept}
with open(sys.argv[2], "w") as out:
    json.dump(report, out)
'''


def python_blocks(text: str):
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def generation_recipes(text: str):
    """The Python blocks of ``text`` that generate with transformers and need no other tool."""
    return [
        block for block in python_blocks(text)
        if "from transformers import" in block and ("generate(" in block or "pipeline(" in block)
        and not any(f"import {tool}" in block or f"from {tool}" in block for tool in OTHER_TOOLS)
    ]


def eos_stopping_model(tokenizer):
    """A Llama-shaped network whose greedy continuation of ``"3 4 5 [BOS]"`` ends with EOS after a
    few tokens (EOS outscores the token it would take third), while ``"12 [BOS]"`` runs to the
    length limit."""
    model = xlm_model(len(tokenizer), **LLAMA)
    third = greedy_reference(model, [tokenizer.encode("3 4 5 [BOS]")], 3, None, tokenizer.pad_token_id)[0][2]
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] = 1.5 * model.lm_head.weight[third]
    return model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """``hf_model`` (native) and, with the gguf package, ``gguf_model`` exports of a STAR-like
    seq2seq run; ``(directory, xlm model, tokenizer)``."""
    root = tmp_path_factory.mktemp("quiet")
    tokenizer = word_tokenizer()
    model = eos_stopping_model(tokenizer)
    kwargs = {"_target_": XLM_MODEL_TARGET, "num_embeddings": len(tokenizer), **BASE, **LLAMA}
    predictor = {"max_steps": LENGTH_LIMIT, "max_length": LENGTH_LIMIT, "sampling_method": "greedy"}
    collator = {"_target_": "arlm.datamodule_arlm.ARLMSeq2SeqCollator"}
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model": kwargs, "predictor": predictor,
                                     "datamodule": {"dataset_managers": {"train": {"lm": {"collator": collator}}}}}},
               root / "last.ckpt")
    export_checkpoint_to_hf(root / "last.ckpt", root / "hf_model", tokenizer)
    try:
        from arlm.export.gguf_export import export_checkpoint_to_gguf

        export_checkpoint_to_gguf(root / "last.ckpt", root / "gguf_model", tokenizer)
    except ImportError:  # the gguf package is an optional extra
        pass
    return root, model, tokenizer


def recipes(root: Path):
    found = [(name, block) for name in DOCUMENTS for block in generation_recipes((REPO_ROOT / name).read_text())]
    for export in ("hf_model", "gguf_model"):
        if (root / export).is_dir():
            found += [(f"{export}/README.md", block) for block in generation_recipes((root / export / "README.md").read_text())]
    return found


def test_documented_generation_recipes_print_no_warning(run_dir):
    root, _, _ = run_dir
    found = [(name, block) for name, block in recipes(root) if "gguf_file=" not in block or (root / "gguf_model").is_dir()]
    names = {name for name, _ in found}
    assert {"README.md", "docs/huggingface.md", "hf_model/README.md"} <= names, names
    files = []
    for index, (_, block) in enumerate(found):
        files.append(str(root / f"recipe_{index}.py"))
        Path(files[-1]).write_text(block)
    (root / "recipes.json").write_text(json.dumps(files))
    run_without_arlm(RUN_QUIETLY, [root / "recipes.json", root / "report.json"], root)
    report = json.loads((root / "report.json").read_text())
    for path, (name, block) in zip(files, found):
        assert report[path]["printed"].strip(), f"the recipe of {name} printed nothing:\n{block}"
        assert report[path]["warnings"] == [], f"the recipe of {name} warned:\n{block}"


@pytest.mark.parametrize("export", ["hf_model", "gguf_model"])
def test_generate_with_the_exports_defaults_stops_at_eos_and_at_the_length_limit(run_dir, export):
    root, model, tokenizer = run_dir
    if not (root / export).is_dir():
        pytest.skip("the gguf package is not installed")
    gguf_file = {"gguf_file": "model-f32.gguf"} if export == "gguf_model" else {}
    exported = AutoModelForCausalLM.from_pretrained(root / export, **gguf_file).eval()
    exported.generation_config = GenerationConfig.from_pretrained(root / export)  # as the recipes do
    exported_tokenizer = AutoTokenizer.from_pretrained(root / export)
    lengths = {}
    for prompt in ("3 4 5 [BOS]", "12 [BOS]"):
        ids = exported_tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = exported.generate(ids)[0].tolist()
        expected = greedy_reference(model, [ids[0].tolist()], LENGTH_LIMIT - ids.shape[1], tokenizer.eos_token_id, -1)[0]
        assert out[ids.shape[1]:] == [token for token in expected if token != -1], prompt
        lengths[prompt] = (len(out), out[-1] == tokenizer.eos_token_id)
    assert lengths["3 4 5 [BOS]"][0] < LENGTH_LIMIT and lengths["3 4 5 [BOS]"][1]  # stopped at EOS
    assert lengths["12 [BOS]"] == (LENGTH_LIMIT, False)  # stopped at the run's length limit
