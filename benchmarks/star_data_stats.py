"""What the locally generated STAR splits hold, level by level, for comparison with upstream's hub
datasets ``dhruveshpatel/star-{small,medium,hard}`` (see docs/star.md, *The data*).

Generates the splits exactly as ``StarDatasetManager`` does (``generate_star_split``, upstream's
generators and settings, seed 42, train 50000 / test 5000), tokenizes them with xlm-core's
``preprocess_fn`` and prints, per level: prompt and answer lengths in tokens, the path length,
where the centre falls on the path and how many nodes follow it (the plan), the arms, the node
labels used, and how many test graphs also occur in the training split.

    python benchmarks/star_data_stats.py [--train 50000] [--test 5000] [--seed 42]
"""

import argparse
from collections import Counter

from xlm.datamodule import SimpleSpaceTokenizer
from xlm.tasks.star import preprocess_fn

from arlm.dataprep.star import STAR_LEVELS, generate_star_split
from arlm.metrics_arlm import star_planning_prefix


def spread(values) -> str:
    values = list(values)
    return f"{min(values)} / {sum(values) / len(values):.1f} / {max(values)}"


def shares(counter: Counter) -> str:
    total = sum(counter.values())
    return ", ".join(f"{k}: {100 * v / total:.0f}%" for k, v in sorted(counter.items()))


def key(graph) -> tuple:
    return frozenset(map(tuple, graph["edge_list"])), graph["source"], graph["goal"]


def level_stats(level: str, train_size: int, test_size: int, seed: int) -> dict:
    settings = STAR_LEVELS[level]["kwargs"]
    tokenizer = SimpleSpaceTokenizer.for_numbers(settings["vocab_size"])
    train = generate_star_split(level, "train", train_size, seed)
    test = generate_star_split(level, "test", test_size, seed)
    rows = [preprocess_fn(dict(g), tokenizer) for g in train]
    centre_index, plan, out_arms, in_arms, labels = Counter(), Counter(), Counter(), Counter(), Counter()
    for graph, row in zip(train, rows):
        k = len(star_planning_prefix(row["prompt_token_ids"])) // 2 - 1  # nodes before the centre
        centre_index[k] += 1
        plan[len(graph["path"]) - 1 - k] += 1  # nodes after the centre, goal included
        centre = graph["path"][k]
        out_arms[sum(1 for u, _ in graph["edge_list"] if u == centre)] += 1
        in_arms[sum(1 for _, v in graph["edge_list"] if v == centre)] += 1
        labels.update(n for edge in graph["edge_list"] for n in edge)
    train_keys = {key(g) for g in train}
    return {
        "prompt tokens (min / mean / max)": spread(len(r["prompt_token_ids"]) for r in rows),
        "answer tokens with EOS (min / mean / max)": spread(len(r["input_token_ids"]) + 1 for r in rows),
        "path nodes": shares(Counter(len(g["path"]) for g in train)),
        "centre at path node (0 = source)": shares(centre_index),
        "plan: path nodes after the centre": shares(plan),
        "arms leaving the centre": shares(out_arms),
        "arms entering the centre": shares(in_arms),
        "node labels used": f"{len(labels)} of {settings['vocab_size']}",
        "test graphs also in train": f"{sum(key(g) in train_keys for g in test)} of {len(test)}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=50000)
    parser.add_argument("--test", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    stats = {level: level_stats(level, args.train, args.test, args.seed) for level in STAR_LEVELS}
    print("| | " + " | ".join(stats) + " |")
    print("|---" * (len(stats) + 1) + "|")
    for name in next(iter(stats.values())):
        print(f"| {name} | " + " | ".join(s[name] for s in stats.values()) + " |")


if __name__ == "__main__":
    main()
