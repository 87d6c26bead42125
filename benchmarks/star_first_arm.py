"""Where teacher-forced ARLM training stalls on STAR-easy, and what moves it: a small study.

Trains the CPU-sized model of ``experiment=star_easy_arlm`` (d_model 64, 8 layers, 4 heads;
AdamW 3e-3 with 100 warm-up steps, weight decay 0.01 off norms/biases/embeddings, gradient
clipping at 1.0, batch 64) on the locally generated STAR-easy training split, and reports every
``--eval-every`` steps the greedy exact match on the first ``--eval-rows`` test graphs together
with the accuracy of the first arm node, the only choice that needs planning (the rest of a path
follows edges from the previous node).

Objectives (``--objective``):
  forward     the experiment's objective: ``[edges, start, goal][BOS] start n1 n1 n2 ... goal``.
  reversed    the same path written goal first; generations are flipped back before scoring.
              The planning choice then comes last, after the arm was walked back from the goal.
  masked      forward, but after ``--mask-after`` steps half of the rows have every target input
              token replaced by [MASK] (teacherless rows: the previous node cannot be copied).

The data comes from ``xlm job_type=prepare_data experiment=star_easy_arlm`` (under ``data/``).

    python benchmarks/star_first_arm.py --objective forward
    python benchmarks/star_first_arm.py --objective reversed
"""

import argparse
import time

import datasets
import torch

from arlm.datamodule_arlm import ARLMSeq2SeqCollator, id_lists_to_tensors, prepare_prefix_ids_arlm
from arlm.loss_arlm import ARLMLoss
from arlm.types_arlm import IGNORE_INDEX
from arlm.model_arlm import RotaryTransformerARLMModel
from xlm.datamodule import SimpleSpaceTokenizer

import common  # noqa: F401  (puts the repository root on sys.path, for tests.oracles)
from tests.oracles import greedy_decode_without_cache

OBJECTIVES = ("forward", "reversed", "masked")


def load_split(data_dir: str, split: str, rows: int, reverse: bool) -> list:
    path = f"{data_dir}/dhruveshpatel/star-small/{split}"
    try:
        table = datasets.load_from_disk(path)
    except FileNotFoundError as error:
        raise SystemExit(
            f"no STAR-easy {split} split at {path}; run "
            f"`xlm job_type=prepare_data experiment=star_easy_arlm` first"
        ) from error
    table = table.select(range(min(rows, len(table))))
    return [
        {"prompt_ids": p, "input_ids": t[::-1] if reverse else t}
        for p, t in zip(table["prompt_token_ids"], table["input_token_ids"])
    ]


def hide_target_inputs(batch: dict, rows: torch.Tensor, mask_id: int) -> None:
    """Replace every input token that is also a training target by ``mask_id`` in ``rows``."""
    is_target_input = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    is_target_input[:, 1:] = batch["target_ids"][:, :-1] != IGNORE_INDEX
    batch["input_ids"][is_target_input & rows[:, None]] = mask_id


@torch.no_grad()
def evaluate(model, tokenizer, examples, reverse: bool):
    model.eval()
    prompts = id_lists_to_tensors(prepare_prefix_ids_arlm(
        [e["prompt_ids"] for e in examples], tokenizer.pad_token_id, tokenizer.bos_token_id,
        truncate=None, add_bos="output",
    ))
    truth = torch.tensor([e["input_ids"] for e in examples])
    width = prompts["input_ids"].shape[1]
    out = greedy_decode_without_cache(
        model, prompts["input_ids"], prompts["attention_mask"], truth.shape[1]
    )[:, width:]
    if reverse:
        out, truth = out.flip(1), truth.flip(1)
    model.train()
    exact = (out == truth).all(1).float().mean().item()
    first_arm = (out[:, 1] == truth[:, 1]).float().mean().item()
    return exact, first_arm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objective", choices=OBJECTIVES, default="forward")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--mask-after", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-rows", type=int, default=1000)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    reverse = args.objective == "reversed"
    tokenizer = SimpleSpaceTokenizer.for_numbers(vocab_size=20)
    train = load_split(args.data_dir, "train", 50_000, reverse)
    test = load_split(args.data_dir, "test", args.eval_rows, reverse)
    collate = ARLMSeq2SeqCollator(tokenizer, block_size=36)
    model = RotaryTransformerARLMModel(
        num_embeddings=len(tokenizer), d_model=64, num_layers=8, nhead=4,
        padding_idx=tokenizer.pad_token_id, dropout=0.0, rotary_emb_dim=16, max_length=64,
    )
    loss_fn = ARLMLoss(model, tokenizer)
    optimizer = torch.optim.AdamW([
        {"params": [p for _, p in model.get_named_params_for_weight_decay()], "weight_decay": 0.01},
        {"params": [p for _, p in model.get_named_params_for_no_weight_decay()], "weight_decay": 0.0},
    ], lr=3e-3)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 100))

    start = time.time()
    print(f"objective={args.objective} steps={args.steps}")
    print("| step | train loss | test exact match | first arm right | seconds |")
    print("|---|---|---|---|---|")
    for step in range(1, args.steps + 1):
        rows = torch.randint(0, len(train), (64,)).tolist()
        batch = collate([train[i] for i in rows])
        if args.objective == "masked" and step > args.mask_after:
            hide_target_inputs(batch, torch.rand(64) < 0.5, tokenizer.mask_token_id)
        loss = loss_fn(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        warmup.step()
        if step % args.eval_every == 0 or step == args.steps:
            exact, first_arm = evaluate(model, tokenizer, test, reverse)
            print(f"| {step} | {loss.item():.3f} | {exact:.3f} | {first_arm:.3f} | {time.time() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
