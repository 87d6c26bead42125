"""Run code in a separate Python process where ``import arlm`` fails.

The child runs isolated (``python -I``: no PYTHONPATH, no script directory on ``sys.path``) from a
scratch directory, offline, with a ``sys.meta_path`` finder that refuses ``arlm`` (the editable
install would otherwise still find it), and first asserts that ``import arlm`` really fails;
transformers' remote-code modules are cached under the scratch directory.

:func:`load_without_arlm` loads an exported directory with ``AutoModelForCausalLM``,
``AutoTokenizer`` and ``pipeline("text-generation")`` and reports logits, a left-padded greedy
``generate``, its decoded text and the pipeline's texts; :func:`run_without_arlm` runs any code.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from torch import Tensor

BLOCK_ARLM = r'''
import importlib.abc, sys

class BlockArlm(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "arlm" or name.startswith("arlm."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
        return None

sys.meta_path.insert(0, BlockArlm())
try:
    import arlm  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("arlm is importable in the child process: the check would be void")
'''

LOAD = r'''
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

export_dir, io_dir = sys.argv[1], sys.argv[2]
request = json.load(open(f"{io_dir}/request.json"))
trust = {"trust_remote_code": True} if request["trust_remote_code"] else {}
model = AutoModelForCausalLM.from_pretrained(export_dir, **trust).eval()
tokenizer = AutoTokenizer.from_pretrained(export_dir)
new = request["new_tokens"]
with torch.no_grad():
    logits = model(torch.tensor(request["ids"])).logits
    batch = tokenizer(request["prompts"], return_tensors="pt", padding=True)
    generated = model.generate(**batch, max_new_tokens=new, do_sample=False)
continuations = generated[:, batch["input_ids"].shape[1]:]
generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
texts = {
    full: [
        generator(p, max_new_tokens=new, do_sample=False, return_full_text=full)[0]["generated_text"]
        for p in request["prompts"]
    ]
    for full in (False, True)
}
torch.save(
    {
        "model_class": type(model).__name__,
        "model_dtype": str(model.dtype),
        "padding_side": tokenizer.padding_side,
        "specials": {n: getattr(tokenizer, n) for n in ("pad_token", "bos_token", "eos_token")},
        "vocab_size": len(tokenizer),
        "logits": logits,
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "generated": generated,
        "batch_decoded": tokenizer.batch_decode(continuations, skip_special_tokens=True),
        "decoded": [tokenizer.decode(row, skip_special_tokens=True) for row in continuations],
        "pipeline_texts": texts[False],
        "pipeline_full_texts": texts[True],
    },
    f"{io_dir}/result.pt",
)
'''


def run_without_arlm(code: str, args: Sequence[str], io_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` (after :data:`BLOCK_ARLM`) with ``sys.argv[1:] == args`` in ``io_dir``, its
    stdout and stderr apart; with ``check`` a non-zero exit fails showing both tails."""
    io_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
        HF_MODULES_CACHE=str(io_dir / "hf_modules"),
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", BLOCK_ARLM + code, *map(str, args)],
        cwd=io_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600,
    )
    if check:
        assert proc.returncode == 0, f"child process failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def load_without_arlm(
    export_dir: Path, io_dir: Path, ids: Tensor, prompts: Sequence[str], new_tokens: int,
    trust_remote_code: bool = False,
) -> dict:
    """Run :data:`LOAD` on ``export_dir`` and return what it saved (see the module docstring)."""
    io_dir.mkdir(parents=True, exist_ok=True)
    (io_dir / "request.json").write_text(json.dumps({
        "ids": ids.tolist(), "prompts": list(prompts), "new_tokens": new_tokens,
        "trust_remote_code": trust_remote_code,
    }))
    run_without_arlm(LOAD, [export_dir, io_dir], io_dir)
    return torch.load(io_dir / "result.pt", weights_only=True)


def greedy_reference(
    logits_of, prompts: List[List[int]], new_tokens: int, eos_id: Optional[int], pad_id: int
) -> List[List[int]]:
    """Greedy continuations computed one prompt at a time, without padding or cache, by full
    forwards of ``logits_of(ids (1, L)) -> (1, L, V)``; after EOS a row continues with ``pad_id``
    (``generate``'s convention)."""
    continuations = []
    for prompt in prompts:
        ids, out, finished = list(prompt), [], False
        for _ in range(new_tokens):
            if finished:
                out.append(pad_id)
                continue
            with torch.no_grad():
                token = int(logits_of(torch.tensor([ids]))[0, -1].argmax())
            ids.append(token)
            out.append(token)
            finished = token == eos_id
        continuations.append(out)
    return continuations
