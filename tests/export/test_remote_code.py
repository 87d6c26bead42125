"""A non-native (Arlow) export carries its code: ``auto_map`` plus the modeling files, rewritten to
import each other relatively and to need only torch and transformers, so that
``trust_remote_code=True`` loads it where arlm cannot be imported; without it the user is told
what to pass. Native exports carry no code. PEFT's LoRA defaults cover Arlow. Runs on
transformers 4 and 5 (the PEFT tests where PEFT is installed)."""

import json
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.dynamic_module_utils import get_imports

from arlm.export.exporter import export_checkpoint_to_hf
from arlm.export.remote_code import AUTO_MAP, BUNDLE, bundle_sources, rewrite_imports
from arlm.model_arlm import XLM_MODEL_TARGET

from tests.hf_without_arlm import run_without_arlm
from tests.export.test_native import BASE, LLAMA, NEOX_GQA, word_tokenizer, xlm_model

STANDARD_LIBRARY = set(sys.stdlib_module_names)
NEEDED_BY_THE_BUNDLE = {"torch", "transformers", "numpy"}  # numpy: a dependency of transformers


def test_rewrite_makes_arlm_imports_relative_and_replaces_jaxtyping():
    source = (
        "import torch\n"
        "from jaxtyping import Float, Integer\n"
        "from arlm.network.config import (\n    DecoderConfig,\n    channels_per_head as heads,\n)\n"
        "def f():\n    from arlm.network.rope import RotaryEmbedding\n    return RotaryEmbedding\n"
    )
    assert rewrite_imports(source, "example") == (
        "import torch\n"
        "from .shape_annotations import Float, Integer\n"
        "from .decoder_config import DecoderConfig, channels_per_head as heads\n"
        "def f():\n    from .rope import RotaryEmbedding\n    return RotaryEmbedding\n"
    )
    with pytest.raises(ValueError, match="example imports arlm.model_arlm, which is not in the Arlow bundle"):
        rewrite_imports("from arlm.model_arlm import RotaryTransformerARLMModel\n", "example")
    with pytest.raises(ValueError, match="`import arlm.hf` cannot be bundled"):
        rewrite_imports("import arlm.hf\n", "example")


def test_bundle_needs_only_torch_and_transformers_and_is_complete(tmp_path):
    sources = bundle_sources()
    assert set(sources) == {f"{name}.py" for name in BUNDLE.values()}
    for name, source in sources.items():
        (tmp_path / name).write_text(source)
    for name in sources:
        # transformers' own check of a remote-code file: the packages it imports must be installed
        assert set(get_imports(tmp_path / name)) - STANDARD_LIBRARY <= NEEDED_BY_THE_BUNDLE, name
    for entry in {ref.split(".")[0] for ref in AUTO_MAP.values()}:
        imported = {line.split()[1][1:] for line in sources[f"{entry}.py"].splitlines() if line.startswith("from .")}
        needed = _closure(entry, sources)
        assert needed - {entry} <= imported, f"{entry} must import every bundled file it needs itself (transformers 4)"


def _closure(entry, sources):
    seen, todo = set(), [entry]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [line.split()[1][1:] for line in sources[f"{name}.py"].splitlines() if line.strip().startswith("from .")]
    return seen


def write_run(tmp_path, overrides) -> torch.nn.Module:
    tokenizer = word_tokenizer()
    xlm = xlm_model(len(tokenizer), **overrides)
    kwargs = {"_target_": XLM_MODEL_TARGET, "num_embeddings": len(tokenizer), **BASE, **overrides}
    torch.save({"state_dict": {f"model.{k}": v for k, v in xlm.state_dict().items()},
                "hyper_parameters": {"model": kwargs}}, tmp_path / "last.ckpt")
    return xlm


def test_native_export_carries_no_code_and_no_auto_map(tmp_path):
    write_run(tmp_path, LLAMA)
    export_checkpoint_to_hf(tmp_path / "last.ckpt", tmp_path / "hf", word_tokenizer())
    assert "auto_map" not in json.loads((tmp_path / "hf" / "config.json").read_text())
    assert not list((tmp_path / "hf").glob("*.py"))


def test_arlow_export_names_its_classes_and_loads_with_arlm_as_before(tmp_path):
    xlm = write_run(tmp_path, dict(final_layer_without_normalization=True))
    export_checkpoint_to_hf(tmp_path / "last.ckpt", tmp_path / "hf", word_tokenizer())
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["auto_map"] == AUTO_MAP
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")  # arlm is imported: no remote code
    assert type(loaded).__module__ == "arlm.hf.modeling_arlow"
    ids = torch.randint(4, 54, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, xlm(ids))


REFUSED = r'''
import sys
from transformers import AutoModelForCausalLM
try:
    AutoModelForCausalLM.from_pretrained(sys.argv[1], **({"trust_remote_code": False} if sys.argv[2] == "false" else {}))
except ValueError as error:
    print("REFUSED:", error)
'''


@pytest.mark.parametrize("trust", ["unset", "false"])
def test_without_trust_remote_code_the_user_is_told_what_to_pass(tmp_path, trust):
    write_run(tmp_path, NEOX_GQA)
    export_checkpoint_to_hf(tmp_path / "last.ckpt", tmp_path / "hf", word_tokenizer(), architecture="arlow")
    out = run_without_arlm(REFUSED, [tmp_path / "hf", trust], tmp_path / "child").stdout
    assert f"REFUSED: The repository {tmp_path / 'hf'} contains custom code" in out
    assert "Please pass the argument `trust_remote_code=True`" in out
    assert "upgrade transformers" not in out and "does not recognize this architecture" not in out


LORA = r'''
import sys, torch
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model

trust = {"trust_remote_code": True} if sys.argv[2] == "remote" else {}
if not trust:
    import arlm  # noqa: F401
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], **trust)
peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False))
targets = sorted(n for n, _ in peft_model.named_modules() if n.endswith("lora_A"))
assert targets and all(".q_proj." in n or ".v_proj." in n for n in targets), targets
optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
ids = torch.randint(4, 54, (4, 12), generator=torch.Generator().manual_seed(0))
losses = []
for _ in range(5):
    loss = peft_model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    losses.append(loss.item())
assert losses[-1] < losses[0], losses
with torch.no_grad():
    adapted = peft_model(input_ids=ids).logits
merged = peft_model.merge_and_unload()
with torch.no_grad():
    torch.testing.assert_close(merged(input_ids=ids).logits, adapted, atol=1e-5, rtol=0)
merged.save_pretrained(sys.argv[3])
reloaded = AutoModelForCausalLM.from_pretrained(sys.argv[3], **trust)
with torch.no_grad():
    torch.testing.assert_close(reloaded(input_ids=ids).logits, adapted, atol=1e-5, rtol=0)
print("LORA OK", len(targets), losses[0], losses[-1])
'''


@pytest.mark.parametrize("loading", ["remote", "arlm"])
def test_lora_with_peft_defaults_trains_merges_and_reloads(tmp_path, loading):
    pytest.importorskip("peft")
    write_run(tmp_path, NEOX_GQA)
    export_checkpoint_to_hf(tmp_path / "last.ckpt", tmp_path / "hf", word_tokenizer(), architecture="arlow")
    if loading == "remote":
        out = run_without_arlm(LORA, [tmp_path / "hf", loading, tmp_path / "merged"], tmp_path / "child").stdout
    else:
        import subprocess

        proc = subprocess.run([sys.executable, "-c", LORA, str(tmp_path / "hf"), loading, str(tmp_path / "merged")],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
        out = proc.stdout
    assert "LORA OK 4 " in out  # q_proj and v_proj of each of the 2 layers


def test_the_bundle_is_arlm_hf_and_the_network_modules_it_imports():
    """``arlm/hf`` holds exactly what an Arlow export carries: each of its modules imports nothing of
    arlm but ``arlm.network`` and ``arlm.hf``, and the bundle is all of them plus the network
    modules they import (none other)."""
    import ast
    import importlib.util
    import pkgutil
    from pathlib import Path

    import arlm.hf

    face = {f"arlm.hf.{info.name}" for info in pkgutil.iter_modules(arlm.hf.__path__)}
    for module in face:
        tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("arlm")}
        assert all(name.startswith(("arlm.hf.", "arlm.network.")) for name in imported), (module, imported)
    assert {module for module in BUNDLE if module.startswith("arlm.hf.")} == face
    assert all(module.startswith("arlm.network.") for module in set(BUNDLE) - face)
    assert "arlm.network.sampling" not in BUNDLE  # no bundled module imports it
