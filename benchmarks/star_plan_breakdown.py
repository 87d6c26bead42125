"""Planning-choice accuracy and exact match of a STAR run, per plan length (see docs/star.md).

Reads the predictions JSONL a STAR run writes (``<run_dir>/predictions/test/prediction/*.jsonl``,
rows with ``prompt``, ``truth``, ``metric_planning_choice_accuracy`` and ``metric_exact_match``)
and splits the graphs by the number of path nodes after the centre, goal included: with ``m``
of them the arm to take is found by walking ``m - 1`` edges back from the goal, so a model that
can do ``h`` such steps and guesses the rest scores 100% on ``m <= h + 1`` and one over the
number of arms above.

    python benchmarks/star_plan_breakdown.py runs/logs/<job>/runs/<date>/predictions/test/prediction/<file>.jsonl
"""

import argparse
import json
from collections import defaultdict

from arlm.metrics_arlm import star_planning_prefix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", help="a predictions JSONL of a STAR run")
    args = parser.parse_args()
    by_plan = defaultdict(lambda: [0, 0.0, 0.0])
    with open(args.predictions) as lines:
        for line in lines:
            row = json.loads(line)
            prompt = [int(t) for t in row["prompt"].split()]
            path_nodes = sum(t.isdigit() for t in row["truth"].split()) // 2 + 1  # [EOS]/[PAD] may remain
            before_centre = len(star_planning_prefix(prompt)) // 2 - 1
            counts = by_plan[path_nodes - 1 - before_centre]
            counts[0] += 1
            counts[1] += row["metric_planning_choice_accuracy"]
            counts[2] += row["metric_exact_match"]
    total = sum(c[0] for c in by_plan.values())
    print("| path nodes after the centre | graphs | planning choice right | exact match |")
    print("|---|---|---|---|")
    for plan, (n, choice, exact) in sorted(by_plan.items()):
        print(f"| {plan} | {n} ({100 * n / total:.0f}%) | {100 * choice / n:.1f}% | {100 * exact / n:.1f}% |")
    choice, exact = (sum(c[i] for c in by_plan.values()) for i in (1, 2))
    print(f"| all | {total} | {100 * choice / total:.1f}% | {100 * exact / total:.1f}% |")


if __name__ == "__main__":
    main()
