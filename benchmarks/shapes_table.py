"""Training speed at the shapes users train, side by side: arlm (one or more checkouts), HF
``LlamaForCausalLM`` of the same size, and the upstream peer (``xlm-models`` 0.3.1, in its own
environment), with each shape's matmul time.

Shapes (name: d_model / layers / heads / ff / vocab, batch x seq):
  star44:   64 / 8 / 4 / 256 / 30, 64 x 44    (STAR's tiny model, STAR-easy/medium length)
  star130:  64 / 8 / 4 / 256 / 30, 64 x 130   (STAR-hard's length)
  d256:     256 / 4 / 4 / 1024 / 1024, 8 x 256 (train_throughput.py's shape)
  gpt2-b1, gpt2-b2: 768 / 12 / 12 / 3072 / 50257, 1 and 2 x 1024 (GPT-2 small)

A step is forward + backward + AdamW (``zero_grad`` included), fp32, each contender as it trains
by default: arlm through ``ARLMLoss`` on a right-padded batch, with the fused AdamW its harness
picks (from the checkout that has ``arlm.runtime.step_speed`` on; before it, torch's default loop), Llama
through ``labels=`` with the fused AdamW that HF's Trainer picks on torch >= 2.8, the peer through
its own ``ARLMLoss`` with torch's default AdamW (what xlm-core configures). Every contender runs in its own process (the peer needs its
own environment), one process per contender and round, the contenders alternating within each
round; the figure is the median step over the rounds. With ``--threads 1`` (default) the clock
is the CPU time of the process (robust to other load on a shared machine), else wall time.

Matmul time: the seconds the shape's matrix products take alone at this machine's measured rate
for those exact shapes: every linear layer's three products (forward, input and weight
gradients) at ``(batch x seq) x in x out``, and attention's four batched products (scores and
values, forward and backward counted as 3x) at ``(batch x heads) x seq x seq x head``, timed in
a separate process with the same threads and clock. "x matmul" is step time over that: 1.0 would
mean everything but the matrix products is free.

    python benchmarks/shapes_table.py --checkouts /path/to/base . --peer .venv-peer/bin/python
    python benchmarks/shapes_table.py --shapes star44 d256 --rounds 3
    python benchmarks/shapes_table.py --threads 2
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

SHAPES = {
    "star44": dict(d_model=64, layers=8, heads=4, ff=256, vocab=30, batch=64, seq=44, warmup=3, steps=10),
    "star130": dict(d_model=64, layers=8, heads=4, ff=256, vocab=30, batch=64, seq=130, warmup=2, steps=5),
    "d256": dict(d_model=256, layers=4, heads=4, ff=1024, vocab=1024, batch=8, seq=256, warmup=2, steps=5),
    "gpt2-b1": dict(d_model=768, layers=12, heads=12, ff=3072, vocab=50257, batch=1, seq=1024, warmup=1, steps=2),
    "gpt2-b2": dict(d_model=768, layers=12, heads=12, ff=3072, vocab=50257, batch=2, seq=1024, warmup=1, steps=2),
}
QUICK = dict(d_model=32, layers=2, heads=2, ff=64, vocab=50, batch=2, seq=16, warmup=1, steps=2)


def worker(kind: str, shape: dict, threads: int) -> List[float]:
    """Step times of contender ``kind`` (``arlm``, ``llama``, ``peer``) or, for ``matmul``, the
    shape's matrix products alone (one entry per repeat)."""
    import torch

    torch.set_num_threads(threads)
    clock = time.process_time if threads == 1 else time.perf_counter
    torch.manual_seed(0)
    B, L, V = shape["batch"], shape["seq"], shape["vocab"]
    if kind == "matmul":
        return matmul_seconds(shape, clock)
    ids = torch.randint(1, V, (B, L))
    targets = torch.cat([ids[:, 1:], torch.full((B, 1), -100)], dim=1)
    mask = torch.ones(B, L, dtype=torch.long)
    if kind == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=V, hidden_size=shape["d_model"], intermediate_size=round(2 * shape["ff"] / 3),
            num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"], num_key_value_heads=shape["heads"],
            max_position_embeddings=L, tie_word_embeddings=False, attn_implementation="sdpa", pad_token_id=0,
        ))
        step_loss = lambda: model(input_ids=ids, attention_mask=mask, labels=ids).loss  # noqa: E731
    else:
        from arlm.loss_arlm import ARLMLoss
        from arlm.model_arlm import RotaryTransformerARLMModel

        model = RotaryTransformerARLMModel(
            num_embeddings=V, d_model=shape["d_model"], num_layers=shape["layers"], nhead=shape["heads"],
            dim_feedforward=shape["ff"], dropout=0.0, rotary_emb_dim=shape["d_model"] // shape["heads"], max_length=L,
        )
        loss = ARLMLoss(model=model)
        batch = {"input_ids": ids, "attention_mask": mask if kind == "arlm" else mask.bool(), "target_ids": targets}
        if kind == "arlm":
            batch["right_padded"] = True
        step_loss = lambda: loss(batch)["loss"]  # noqa: E731
    model.train()
    fused = kind == "llama" or (kind == "arlm" and importlib.util.find_spec("arlm.runtime.step_speed") is not None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None)

    def step():
        step_loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(shape["warmup"]):
        step()
    times = []
    for _ in range(shape["steps"]):
        start = clock()
        step()
        times.append(clock() - start)
    return times


def matmul_seconds(shape: dict, clock) -> List[float]:
    """Seconds of the shape's matrix products (see the module docstring), three repeats."""
    import torch

    M, d, ff, V = shape["batch"] * shape["seq"], shape["d_model"], shape["ff"], shape["vocab"]
    H, L = shape["heads"], shape["seq"]
    linears = [(d, d)] * 4 * shape["layers"] + [(d, ff), (ff, d)] * shape["layers"] + [(d, V)]
    distinct = {(k, n): linears.count((k, n)) for k, n in set(linears)}
    tensors = {
        (k, n): (torch.randn(M, k), torch.randn(n, k), torch.randn(M, n)) for k, n in distinct
    }
    q = torch.randn(shape["batch"] * H, L, d // H)
    s = torch.randn(shape["batch"] * H, L, L)

    def products():
        total = 0.0
        for key, count in distinct.items():
            x, w, g = tensors[key]
            start = clock()
            torch.nn.functional.linear(x, w)
            g @ w
            g.t() @ x
            total += (clock() - start) * count
        start = clock()
        for _ in range(3):  # scores and values: forward once, backward twice each
            torch.bmm(q, q.transpose(1, 2))
            torch.bmm(s, q)
        total += (clock() - start) * shape["layers"]
        return total

    products()
    return [products() for _ in range(3)]


def model_flops(shape: dict) -> float:
    """6 x (linear weights) x tokens + 12 x layers x d_model x seq x tokens (attention in full)."""
    d, ff, V, n = shape["d_model"], shape["ff"], shape["vocab"], shape["layers"]
    tokens = shape["batch"] * shape["seq"]
    weights = n * (4 * d * d + 2 * d * ff) + d * V
    return 6 * weights * tokens + 12 * n * d * shape["seq"] * tokens


def run_worker(python: str, pythonpath: str, kind: str, shape: dict, threads: int) -> List[float]:
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": str(threads), "TRANSFORMERS_VERBOSITY": "error"}
    cmd = [python, str(Path(__file__).resolve()), "--worker", kind, json.dumps(shape), "--threads", str(threads)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/")
    if result.returncode != 0:
        sys.exit(f"{kind} ({python}, PYTHONPATH={pythonpath}) failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkouts", nargs="+", type=Path, default=[Path(__file__).resolve().parents[1]])
    parser.add_argument("--peer", default=None, help="python of an environment with xlm-models 0.3.1 (left out if not given)")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("shape_json", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(args.shape_json), args.threads)))
        return

    contenders = {f"arlm {c.resolve().name}": (sys.executable, str(c.resolve()), "arlm") for c in args.checkouts}
    contenders["HF Llama"] = (sys.executable, str(args.checkouts[-1].resolve()), "llama")
    if args.peer:
        contenders["peer (xlm-models 0.3.1)"] = (str(Path(args.peer).absolute()), "", "peer")
    contenders["matmul"] = (sys.executable, "", "matmul")
    shapes = {"quick": QUICK} if args.quick else {name: SHAPES[name] for name in args.shapes}
    clock = "CPU time" if args.threads == 1 else "wall time"
    print(f"\n{args.threads} thread(s), {clock}, fp32, forward + backward + AdamW; median over {args.rounds} rounds\n")
    racers = [c for c in contenders if c != "matmul"]
    print("| shape | " + " | ".join(f"{c}: tokens/s" for c in racers) + " | matmul time | "
          + " | ".join(f"{c}: x matmul" for c in racers) + " | last arlm vs Llama | last arlm vs peer |")
    print("|---|" + "---|" * (2 * len(racers) + 3), flush=True)
    for name, shape in shapes.items():
        times: Dict[str, List[float]] = {label: [] for label in contenders}
        for round_ in range(args.rounds):
            for label, (python, path, kind) in contenders.items():
                times[label].extend(run_worker(python, path, kind, shape, args.threads))
            print(f"{name}: round {round_ + 1} done", file=sys.stderr, flush=True)
        tokens = shape["batch"] * shape["seq"]
        step = {c: statistics.median(times[c]) for c in racers}
        matmul = statistics.median(times["matmul"])
        ours = step[racers[len(args.checkouts) - 1]]
        vs_peer = f"{step['peer (xlm-models 0.3.1)'] / ours:.2f}x" if args.peer else "-"
        print(
            f"| {name} ({shape['batch']}x{shape['seq']}, {model_flops(shape) / 1e9:.1f} GFLOP) | "
            + " | ".join(f"{tokens / step[c]:,.0f}" for c in racers)
            + f" | {matmul * 1e3:,.0f} ms | " + " | ".join(f"{step[c] / matmul:.2f}" for c in racers)
            + f" | {step['HF Llama'] / ours:.2f}x | {vs_peer} |", flush=True,
        )


if __name__ == "__main__":
    main()
