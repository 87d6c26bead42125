"""The training step as the real ``xlm`` CLI runs it, side by side for two or more checkouts.

Each round runs ``xlm job_type=train experiment=<experiment> trainer.max_steps=<steps>`` once per
checkout, in turn, from the checkout with its code first on ``PYTHONPATH`` (``<checkout>/.venv/bin/xlm``
when the checkout has its own environment, else the ``xlm`` beside this Python),
with validation and test turned off and :class:`job_timer.JobTimer` recording every step. A
step is the time from one ``on_train_batch_start`` to the next (data loading, forward, backward,
clipping, optimizer, EMA, logging and callbacks: everything the loop does per step); the first
``--skip`` steps (warm-up) are left out, start-up is not counted. With ``--threads 1`` (the
default) the CPU time of the process is the figure, robust to other load on a shared machine;
with more threads, wall time. Also printed: the largest difference between the checkouts'
per-step losses (the same data and seed, so they agree to float tolerance when the changes keep
the arithmetic).

    python benchmarks/cli_step_time.py --checkouts /path/to/base /path/to/branch
    python benchmarks/cli_step_time.py --checkouts A B --threads 2 --rounds 3
    python benchmarks/cli_step_time.py --checkouts A B --whole-job   # the job's phases, full length

``--whole-job`` runs the experiment as configured (validation, checkpoints and test included) and
reports the share of the wall time spent in each phase instead.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent


def run_job(checkout: Path, out: Path, args: argparse.Namespace, run_id: str) -> dict:
    """Run the CLI of ``checkout`` once; the JobTimer's record."""
    timer_file = out / f"{run_id}.json"
    overrides = [
        "job_type=train", f"experiment={args.experiment}", f"job_name=cli_step_time_{run_id}",
        "+callbacks.job_timer._target_=job_timer.JobTimer", f"+callbacks.job_timer.path={timer_file}",
        "resume_from_checkpoint=false", *args.overrides,
    ]
    if not args.whole_job:
        overrides += [
            f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps + 1}",
            "+trainer.limit_val_batches=0", "+trainer.limit_test_batches=0",
            f"callbacks.checkpoint_every_n_steps.every_n_train_steps={args.steps + 1}",
        ]
    env = {
        **os.environ, "PYTHONPATH": f"{checkout}{os.pathsep}{HERE}", "OMP_NUM_THREADS": str(args.threads),
        "LOG_DIR": str(out / "logs" / run_id), "DATA_DIR": args.data_dir, "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    }
    xlm = checkout / ".venv" / "bin" / "xlm"
    if not xlm.exists():
        xlm = Path(sys.executable).parent / "xlm"
    result = subprocess.run(
        [str(xlm), *overrides], cwd=checkout, env=env, capture_output=True, text=True,
    )
    if result.returncode != 0 or not timer_file.exists():
        sys.exit(f"{checkout}: the job failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(timer_file.read_text())


def step_times(record: dict, skip: int, process_clock: bool) -> List[float]:
    """Seconds from each step's start to the next one's, the first ``skip`` steps left out."""
    column = 2 if process_clock else 1
    starts = [event[column] for event in record["events"] if event[0] == "train_batch_start"]
    return [b - a for a, b in zip(starts[skip:], starts[skip + 1:])]


def phases(record: dict) -> Dict[str, float]:
    """Wall seconds of start-up, training steps, validation, checkpoint-only gaps and the end."""
    events = record["events"]
    first = next(e[1] for e in events if e[0] == "fit_start")
    val = sum(b[1] - a[1] for a, b in zip(events, events[1:]) if a[0] == "validation_start" and b[0] == "validation_end")
    test = sum(b[1] - a[1] for a, b in zip(events, events[1:]) if a[0] == "test_start" and b[0] == "test_end")
    steps = sum(b[1] - a[1] for a, b in zip(events, events[1:]) if a[0] == "train_batch_start" and b[0] == "train_batch_end")
    between = sum(
        b[1] - a[1] for a, b in zip(events, events[1:])
        if a[0] == "train_batch_end" and b[0] in ("train_batch_start", "save_checkpoint")
    )
    fit_end = next(e[1] for e in events if e[0] == "fit_end")
    last_batch = max(e[1] for e in events if e[0] == "train_batch_end")
    total = max(e[1] for e in events)
    return {
        "start-up (process start to fit start)": first,
        "training steps (batch start to end)": steps,
        "between steps (data loading, logging, checkpoints)": between,
        "validation (loss + greedy generation)": val,
        "end of fit (last checkpoint, EMA copy)": fit_end - last_batch,
        "test": test,
        "total (process start to the last event)": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkouts", nargs="+", type=Path, required=True, help="repository roots, each with its .venv")
    parser.add_argument("--experiment", default="star_medium_arlm")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--skip", type=int, default=20, help="warm-up steps left out")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(Path(tempfile.gettempdir()) / "arlm-bench-data")))
    parser.add_argument("--whole-job", action="store_true", help="the experiment as configured; phases of its wall time")
    parser.add_argument("--out", type=Path, default=None, help="where the records go (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="further Hydra overrides for every run")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cli_step_time_"))
    records: Dict[Path, List[dict]] = {c: [] for c in args.checkouts}
    for round_ in range(args.rounds):
        for i, checkout in enumerate(args.checkouts):
            records[checkout].append(run_job(checkout.resolve(), out, args, f"r{round_}_c{i}"))
            print(f"round {round_ + 1}: {checkout} done", flush=True)

    print(f"\n{args.experiment}, {args.threads} thread(s), records in {out}")
    if args.whole_job:
        for checkout, recs in records.items():
            print(f"\n{checkout}:\n| phase | " + " | ".join(f"round {r + 1}" for r in range(len(recs))) + " |")
            print("|---|" + "---|" * len(recs))
            table = [phases(r) for r in recs]
            for name in table[0]:
                cells = [f"{t[name]:.1f} s ({t[name] / t['total (process start to the last event)']:.0%})" for t in table]
                print(f"| {name} | " + " | ".join(cells) + " |")
        return
    process_clock = args.threads == 1
    clock = "CPU" if process_clock else "wall"
    base = args.checkouts[0]
    medians = {c: [statistics.median(step_times(r, args.skip, process_clock)) for r in recs] for c, recs in records.items()}
    print(f"median step, {clock} ms, per round (steps {args.skip + 1}-{args.steps})\n")
    print("| checkout | " + " | ".join(f"round {r + 1}" for r in range(args.rounds)) + " | mean | vs first |")
    print("|---|" + "---|" * args.rounds + "---|---|")
    for checkout, values in medians.items():
        mean = statistics.mean(values)
        cells = " | ".join(f"{v * 1e3:.1f}" for v in values)
        print(f"| {checkout} | {cells} | {mean * 1e3:.1f} | {statistics.mean(medians[base]) / mean:.2f}x |")
    reference = records[base][0]["losses"]
    for checkout, recs in records.items():
        worst = max(abs(a - b) for rec in recs for a, b in zip(rec["losses"], reference))
        print(f"max |loss - first checkout's loss| over {len(reference)} steps, {checkout}: {worst:.2e}")


if __name__ == "__main__":
    main()
