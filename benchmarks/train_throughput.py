"""Training throughput: RotaryTransformerARLMModel + ARLMLoss vs HF LlamaForCausalLM, one run.

Each step is forward + backward + AdamW on a batch of ``--batch`` rows of ``--seq`` tokens
(the last row right-padded by a quarter). Both models run with the same threads, alternating
rounds so that machine noise hits both alike; the figure is the median step time. The ceiling is
the sustained GFLOP/s of a large fp32 matmul with the same threads.

Model FLOPs per step = 6 x non-embedding params x tokens + 12 x layers x d_model x seq x tokens
(PaLM's accounting: the input embedding lookup is free, the output projection is counted, the
attention term is counted in full although it is causal). Tokens = batch x seq (padding included,
identically for both models).

    python benchmarks/train_throughput.py            # the issue's configuration
    python benchmarks/train_throughput.py --quick    # smoke run
"""

import statistics

import torch

from arlm.loss_arlm import ARLMLoss
from common import (
    add_network_args, add_round_args, arlm_network, benchmark_parser, llama_twin, network_summary, time_alternating,
)


def make_batch(batch: int, seq: int, vocab: int) -> dict:
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, vocab, (batch, seq), generator=g)
    attention_mask = torch.ones(batch, seq, dtype=torch.long)
    attention_mask[-1, seq - seq // 4 :] = 0
    input_ids = input_ids.masked_fill(~attention_mask.bool(), 0)
    target_ids = torch.cat([input_ids[:, 1:], torch.full((batch, 1), -100)], dim=1)
    target_ids = target_ids.masked_fill(~torch.cat([attention_mask[:, 1:], attention_mask[:, :1] * 0], 1).bool(), -100)
    # right_padded: the declaration the ARLM training collators make (ARLMLoss then needs no mask).
    return {"input_ids": input_ids, "attention_mask": attention_mask, "target_ids": target_ids, "right_padded": True}


def build_arlm(args):
    model = arlm_network(args, args.seq)
    loss = ARLMLoss(model=model)
    return model, lambda batch: loss(batch)["loss"]


def build_llama(args):
    model = llama_twin(args, args.seq, pad_token_id=0)

    def step_loss(batch):
        labels = batch["input_ids"].masked_fill(~batch["attention_mask"].bool(), -100)
        return model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels
        ).loss

    return model, step_loss


def non_embedding_params(model: torch.nn.Module) -> int:
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else model.model.embed_tokens
    return sum(p.numel() for p in model.parameters()) - embedding.weight.numel()


def matmul_ceiling_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = time_alternating({"matmul": lambda: a @ b}, rounds=repeats, warmup=3)["matmul"]
    return 2 * n**3 / statistics.median(times) / 1e9


def main() -> None:
    parser = benchmark_parser(__doc__)
    add_network_args(parser)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    add_round_args(parser, warmup=3, rounds=6)
    parser.add_argument("--compile", action="store_true", help="also time ARLM with torch.compile'd loss")
    args = parser.parse_args()
    if args.quick:
        args.seq, args.batch, args.warmup, args.rounds, args.steps_per_round = 64, 2, 1, 2, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = make_batch(args.batch, args.seq, args.vocab)
    tokens = args.batch * args.seq

    contenders = {"arlm (ours)": build_arlm(args), "HF LlamaForCausalLM": build_llama(args)}
    if args.compile:
        model, step_loss = build_arlm(args)
        contenders["arlm (ours, torch.compile)"] = (model, torch.compile(step_loss))
    runners = {}
    for name, (model, step_loss) in contenders.items():
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, step_loss=step_loss, optimizer=optimizer):
            loss = step_loss(batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        runners[name] = step

    times = time_alternating(runners, args.rounds, args.steps_per_round, args.warmup)
    ceiling = matmul_ceiling_gflops()

    print(
        f"\n{network_summary(args)}, batch {args.batch} x seq {args.seq} (last row 1/4 padded), "
        f"{args.threads} threads, fp32, torch {torch.__version__}\n"
        f"fp32 matmul ceiling (2048^3): {ceiling:.1f} GFLOP/s\n"
    )
    print("| model | params (non-emb.) | median step (s) | tokens/s | model GFLOP/s | share of ceiling | vs Llama |")
    print("|---|---|---|---|---|---|---|")
    llama_tps = tokens / statistics.median(times["HF LlamaForCausalLM"])
    for name, (model, _) in contenders.items():
        step_time = statistics.median(times[name])
        tps = tokens / step_time
        n = non_embedding_params(model)
        flops_per_token = 6 * n + 12 * args.layers * args.d_model * args.seq
        gflops = flops_per_token * tps / 1e9
        print(
            f"| {name} | {n / 1e6:.2f}M | {step_time:.3f} | {tps:,.0f} | {gflops:.1f} | "
            f"{gflops / ceiling:.0%} | {tps / llama_tps:.2f}x |"
        )


if __name__ == "__main__":
    main()
