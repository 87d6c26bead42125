"""Peak memory of one ARLMLoss training step (forward + backward) at a large vocabulary, for one
or more checkouts side by side.

Method: every measurement is a fresh Python process (the checkout's code first on
``PYTHONPATH``) that builds the model (GPT-2-small shape by default: d_model 768, 12 layers, 12
heads, ff 3072, vocabulary 50,257), runs one untimed step of batch 1 x 64 tokens so that the
allocator has its working set, reads its resident set size, runs one step of ``--batch`` x
``--seq`` tokens, reading the resident set size once the loss is computed (before backward:
what the forward pass and the loss hold for the backward pass) and the peak resident set size
(``ru_maxrss``) at the end. Both are reported minus the resident size before the step: what the
step adds on top of the weights and gradients (no optimizer state). The children run with
``MALLOC_MMAP_THRESHOLD_=131072``: every block over 128 KiB is then its own mapping, returned to
the system when freed, so that the resident size follows the live tensors (glibc otherwise
raises that threshold as large blocks are freed and keeps later ones in its heap). ``--bf16`` runs the step under CPU autocast (bf16 logits, as
``trainer.precision=bf16-mixed``).

    python benchmarks/loss_memory.py --checkouts /path/to/base /path/to/branch
    python benchmarks/loss_memory.py --checkouts A B --batch 2 --bf16
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, torch
from arlm.loss_arlm import ARLMLoss
from arlm.model_arlm import RotaryTransformerARLMModel
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
torch.manual_seed(0)
model = RotaryTransformerARLMModel(
    num_embeddings=cfg["vocab"], d_model=cfg["d_model"], num_layers=cfg["layers"], nhead=cfg["heads"],
    dim_feedforward=4 * cfg["d_model"], dropout=0.0, rotary_emb_dim=cfg["d_model"] // cfg["heads"],
    max_length=cfg["seq"],
)
loss = ARLMLoss(model=model)

def step(batch, seq):
    ids = torch.randint(1, cfg["vocab"], (batch, seq))
    targets = torch.cat([ids[:, 1:], torch.full((batch, 1), -100)], dim=1)
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "target_ids": targets, "right_padded": True}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg["bf16"]):
        out = loss(data)
    after_forward = rss_kib()
    out["loss"].backward()
    return float(out["loss"]), after_forward

def rss_kib():
    return int(open("/proc/self/statm").read().split()[1]) * (resource.getpagesize() // 1024)

step(1, 64)
before = rss_kib()
value, after_forward = step(cfg["batch"], cfg["seq"])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_mib": before / 1024, "forward_mib": after_forward / 1024, "peak_mib": peak / 1024, "loss": value}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkouts", nargs="+", type=Path, required=True)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="CPU autocast to bfloat16")
    args = parser.parse_args()
    print(
        f"d_model {args.d_model}, {args.layers} layers, vocab {args.vocab}, seq {args.seq}, "
        f"{'bf16 autocast' if args.bf16 else 'fp32'}; MiB added by one forward + backward (peak RSS - RSS before)\n"
    )
    print("| checkout | batch | RSS before | held after the loss | step peak adds | fp32 logits of the batch | loss |")
    print("|---|---|---|---|---|---|---|")
    for batch in args.batch:
        for checkout in args.checkouts:
            cfg = {
                "batch": batch, "seq": args.seq, "vocab": args.vocab, "d_model": args.d_model, "layers": args.layers,
                "heads": args.heads, "threads": args.threads, "bf16": args.bf16,
            }
            env = {
                **os.environ, "PYTHONPATH": str(checkout.resolve()), "OMP_NUM_THREADS": str(args.threads),
                "MALLOC_MMAP_THRESHOLD_": "131072",
            }
            result = subprocess.run(  # from "/": "python -c" puts the working directory first on sys.path
                [sys.executable, "-c", CHILD, json.dumps(cfg)], env=env, capture_output=True, text=True, cwd="/",
            )
            if result.returncode != 0:
                sys.exit(f"{checkout}: {result.stderr[-3000:]}")
            m = json.loads(result.stdout.strip().splitlines()[-1])
            logits = batch * args.seq * args.vocab * 4 / 2**20
            print(
                f"| {checkout.resolve().name} | {batch} | {m['before_mib']:,.0f} | {m['forward_mib'] - m['before_mib']:,.0f} | "
                f"{m['peak_mib'] - m['before_mib']:,.0f} | {logits:,.0f} | {m['loss']:.4f} |", flush=True,
            )


if __name__ == "__main__":
    main()
