"""The Hugging Face example of README.md and docs/huggingface.md, run as written on an export in a
process where arlm cannot be imported: it prints the xLM face's greedy continuations of prompts
in the training format (``<prompt> [BOS]``), with the words separated as in the data. Runs on
transformers 4 and 5."""

import re
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from arlm.export.exporter import export_checkpoint_to_hf
from arlm.model_arlm import XLM_MODEL_TARGET

from tests.hf_without_arlm import greedy_reference, run_without_arlm
from tests.export.test_native import BASE, word_tokenizer, xlm_model

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_MARKER = 'from_pretrained("hf_model")'


def example_of(document: Path) -> str:
    """The ```python block of ``document`` that loads ``hf_model``."""
    blocks = re.findall(r"```python\n(.*?)```", document.read_text(), flags=re.DOTALL)
    found = [block for block in blocks if EXAMPLE_MARKER in block]
    assert found, f"{document.name} has no Python example loading hf_model"
    return found[0]


@pytest.mark.parametrize("document", ["README.md", "docs/huggingface.md"])
def test_documented_example_prints_the_greedy_continuations_in_the_training_format(tmp_path, document):
    code = example_of(REPO_ROOT / document)
    assert 'prompts = ["3 4 5 [BOS]", "7 [BOS]"]' in code, f"{document}: the example must prompt in the training format"
    tokenizer = word_tokenizer()
    xlm = xlm_model(len(tokenizer))
    kwargs = {"_target_": XLM_MODEL_TARGET, "num_embeddings": len(tokenizer), **BASE}
    predictor = {"max_steps": 12, "max_length": 64, "sampling_method": "greedy"}
    torch.save({"state_dict": {f"model.{k}": v for k, v in xlm.state_dict().items()},
                "hyper_parameters": {"model": kwargs, "predictor": predictor}}, tmp_path / "last.ckpt")
    run = tmp_path / "run"
    export_checkpoint_to_hf(tmp_path / "last.ckpt", run / "hf_model", tokenizer)
    printed = run_without_arlm(code, [], run).stdout

    exported = AutoTokenizer.from_pretrained(run / "hf_model")

    def continuation(prompt: str, new_tokens: int) -> str:
        ids = greedy_reference(xlm, [exported.encode(prompt)], new_tokens, exported.eos_token_id, exported.pad_token_id)[0]
        return exported.decode(ids, skip_special_tokens=True)

    generated = [continuation(p, predictor["max_steps"]) for p in ["3 4 5 [BOS]", "7 [BOS]"]]
    piped = "3 4 5 [BOS]" + generated[0]  # the pipeline decodes with the model's generation config
    assert all(text.startswith(" ") for text in generated)
    assert printed.splitlines() == [repr(generated), piped], printed
