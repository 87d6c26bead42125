"""Hugging Face face throughput: ArlowForCausalLM vs LlamaForCausalLM of the same shape, one run.

Both models are the same network (a LLaMA-shaped Arlow: RMSNorm, SwiGLU, no bias, no
cross-attention, untied head), built from one seed, fp32, SDPA, on CPU with ``--threads``.

* train: forward + backward + AdamW on ``--batch`` x ``--seq`` tokens with ``labels``;
  tokens/s = batch x seq / median step time.
* generate: ``generate()`` greedy, ``--gen-batch`` prompts of ``--prompt`` tokens, exactly
  ``--new-tokens`` new tokens each (KV cache on); new tokens/s = batch x new / median call time.

The two models alternate rounds so that machine noise hits both alike; medians are taken after
warm-up. Prints a markdown table.

    python benchmarks/hf_throughput.py            # the issue's configuration
    python benchmarks/hf_throughput.py --quick    # smoke run
    python benchmarks/hf_throughput.py --threads 1 --clock process   # on a busy machine
"""

import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from arlm import ArlowConfig, ArlowForCausalLM


def build_models(args) -> Dict[str, torch.nn.Module]:
    shape = dict(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.heads, max_position_embeddings=max(args.seq, args.prompt + args.new_tokens),
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(0)
    arlow = ArlowForCausalLM(ArlowConfig(**shape, cross_attention=False, attention_dropout=0.0))
    llama = LlamaForCausalLM(LlamaConfig(**shape, attn_implementation="sdpa"))
    llama.load_state_dict(arlow.state_dict(), strict=True)
    return {"ArlowForCausalLM": arlow, "LlamaForCausalLM": llama}


def train_step_fn(model: torch.nn.Module, args) -> Callable[[], None]:
    ids = torch.randint(3, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def generate_fn(model: torch.nn.Module, args) -> Callable[[], None]:
    prompts = torch.randint(3, args.vocab, (args.gen_batch, args.prompt), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(prompts)

    @torch.no_grad()
    def run() -> None:
        model.eval()
        out = model.generate(
            prompts, attention_mask=mask, do_sample=False, max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens, pad_token_id=0, use_cache=True,
        )
        assert out.shape[1] == args.prompt + args.new_tokens

    return run


def median_times(
    runners: Dict[str, Callable[[], None]], warmup: int, rounds: int, per_round: int,
    clock: Callable[[], float],
) -> Dict[str, float]:
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: Dict[str, List[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(per_round):
                start = clock()
                run()
                times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=683)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--gen-batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per model")
    parser.add_argument("--steps-per-round", type=int, default=3, help="training steps per round")
    parser.add_argument(
        "--clock", choices=["wall", "process"], default="wall",
        help="process: CPU time of this process (steadier on a busy shared machine)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args()
    if args.quick:
        args.seq, args.batch, args.new_tokens, args.warmup, args.rounds, args.steps_per_round = 64, 2, 16, 1, 2, 1
    torch.set_num_threads(args.threads)
    models = build_models(args)
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    train = median_times(
        {name: train_step_fn(m, args) for name, m in models.items()},
        args.warmup, args.rounds, args.steps_per_round, clock,
    )
    generate = median_times(
        {name: generate_fn(m, args) for name, m in models.items()}, 1, args.rounds, 1, clock
    )

    train_tokens = args.batch * args.seq
    new_tokens = args.gen_batch * args.new_tokens
    print(
        f"\nhidden {args.hidden}, {args.layers} layers, {args.heads} heads, intermediate "
        f"{args.intermediate}, vocab {args.vocab}; train batch {args.batch} x seq {args.seq} "
        f"(AdamW); generate batch {args.gen_batch}, prompt {args.prompt}, {args.new_tokens} new "
        f"tokens, greedy, KV cache; {args.threads} threads, {args.clock} clock, fp32, torch "
        f"{torch.__version__}\n"
    )
    print("| model | train median step (s) | train tokens/s | vs Llama | generate median (s) | new tokens/s | vs Llama |")
    print("|---|---|---|---|---|---|---|")
    for name in models:
        train_tps = train_tokens / train[name]
        gen_tps = new_tokens / generate[name]
        train_ratio = train["LlamaForCausalLM"] / train[name]
        gen_ratio = generate["LlamaForCausalLM"] / generate[name]
        print(
            f"| {name} | {train[name]:.3f} | {train_tps:,.0f} | {train_ratio:.2f}x | "
            f"{generate[name]:.3f} | {gen_tps:,.0f} | {gen_ratio:.2f}x |"
        )


if __name__ == "__main__":
    main()
