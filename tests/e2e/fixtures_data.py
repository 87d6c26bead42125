"""Small offline stand-ins for the hub datasets, in their real formats, plus a local tokenizer.

``datasets.load_dataset("<repo>/<name>")`` prefers a local directory of that relative path, so
writing ``<cwd>/<repo>/<name>/<split>.jsonl`` lets xlm-core's own DatasetManagers (and our
atomic-cache subclass) run their real download/preprocess/cache path without a network.
"""

import json
import random
from pathlib import Path
from typing import Dict, Iterable, List

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

WORDS = "the a cat dog bird runs sees eats big small red blue and then it was very happy today".split()


def write_jsonl(path: Path, rows: Iterable[Dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def train_tokenizer(texts: List[str], out_dir: Path, vocab_size: int = 400) -> Path:
    """Byte-level BPE (GPT-2/Qwen style: ``<|endoftext|>`` is EOS and pad, no BOS) saved to ``out_dir``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>").save_pretrained(out_dir)
    return out_dir


def sentences(n: int, seed: int) -> List[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))) + "." for _ in range(n)]


def tinygsm_rows(n: int, seed: int = 0) -> List[Dict[str, str]]:
    """TinyGSM-format rows: a word problem and the program whose ``simple_math_problem()`` solves it."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        rows.append({
            "question": f"Tom has {a} apples and buys {b} more. How many apples does Tom have?",
            "code": f"def simple_math_problem() -> int:\n    apples = {a}\n    bought = {b}\n    result = apples + bought\n    return result",
        })
    return rows


def gsm8k_rows(n: int, seed: int = 1) -> List[Dict[str, str]]:
    """GSM8K-format rows: a question and a worked answer ending in ``#### <number>``."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        rows.append({
            "question": f"Tom has {a} apples and buys {b} more. How many apples does Tom have?",
            "answer": f"Tom has {a} + {b} = {a + b} apples.\n#### {a + b}",
        })
    return rows


def write_tinygsm_fixture(root: Path, n_train: int = 300, n_test: int = 8) -> List[str]:
    """``TinyGSM/TinyGSM/train.jsonl`` and ``openai/gsm8k/main/test.jsonl`` under ``root``; returns all texts."""
    train, test = tinygsm_rows(n_train), gsm8k_rows(n_test)
    write_jsonl(root / "TinyGSM" / "TinyGSM" / "train.jsonl", train)
    write_jsonl(root / "openai" / "gsm8k" / "main" / "test.jsonl", test)
    (root / "openai" / "gsm8k" / "README.md").write_text(
        "---\nconfigs:\n- config_name: main\n  data_files:\n  - split: test\n    path: main/test.jsonl\n---\n"
    )
    return [r["question"] + "\n" + r["code"] for r in train] + [r["question"] for r in test]


def write_text_fixture(root: Path, dataset: str, splits: Dict[str, int]) -> List[str]:
    """``<root>/<dataset>/<split>.jsonl`` with ``{"text": ...}`` rows; returns all texts."""
    texts = []
    for i, (split, n) in enumerate(splits.items()):
        rows = sentences(n, seed=i)
        write_jsonl(root / dataset / f"{split}.jsonl", ({"text": t} for t in rows))
        texts.extend(rows)
    return texts
