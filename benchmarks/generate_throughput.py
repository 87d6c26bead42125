"""Greedy generation speed: ARLMPredictor with its KV cache vs full recompute vs HF Llama, one run.

For batch 1 and batch 8 (prompt width 32; with more than one row, the last row is left-padded by
8) and 64 / 128 / 256 new tokens, on CPU with ``--threads`` threads, it times:
  - ``ours, cache``: ``ARLMPredictor`` (prefill once, then one token per step, dynamic cache);
  - ``ours, no cache``: the same model re-run over the whole prefix for every new token;
  - ``HF Llama``: ``LlamaForCausalLM.generate(do_sample=False, max_new_tokens=N,
    min_new_tokens=N)`` with about the same parameter count (SwiGLU, intermediate 2/3 of ff);
  - with ``--compile``: ``ours, static + compile`` (preallocated cache, compiled decode step;
    compilation is done in a warm-up call and not timed).
After one untimed warm-up call each, the contenders are timed in alternating rounds (so machine
noise hits them alike) and the best of ``--repeats`` rounds is kept; the full recompute takes tens
of seconds and is timed once, without warm-up. Our model's EOS row of
the output projection is zeroed, so that greedy decoding of random weights never stops early
(the HF run gets the same guarantee from ``min_new_tokens``).

    python benchmarks/generate_throughput.py             # the issue's configuration
    python benchmarks/generate_throughput.py --quick     # smoke run
    python benchmarks/generate_throughput.py --compile   # adds the compiled static-cache row
    python benchmarks/generate_throughput.py --threads 1 --clock process  # on a busy machine
"""

from typing import Callable, Dict, List

import torch
from transformers import LlamaForCausalLM
from xlm.datamodule import SimpleSpaceTokenizer

from arlm.model_arlm import RotaryTransformerARLMModel
from arlm.predictor_arlm import ARLMPredictor
from common import (
    CLOCKS, add_clock_arg, add_network_args, arlm_network, benchmark_parser, llama_twin, network_summary, time_alternating,
)
from tests.oracles import greedy_decode_without_cache  # importable once common is

PAD, EOS = 0, 3  # SimpleSpaceTokenizer's ids
NO_CACHE = "ours, no cache"


def prompt_batch(batch: int, width: int, vocab: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(7, vocab, (batch, width), generator=g)
    attention_mask = torch.ones(batch, width, dtype=torch.long)
    if batch > 1:
        attention_mask[-1, : width // 4] = 0
    return {"input_ids": input_ids.masked_fill(attention_mask == 0, PAD), "attention_mask": attention_mask}


def build_ours(args, max_length: int) -> RotaryTransformerARLMModel:
    torch.manual_seed(0)
    model = arlm_network(args, max_length, padding_idx=PAD).eval()
    with torch.no_grad():
        model.lm_head.weight[EOS] = 0.0
    return model


def build_llama(args, max_length: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return llama_twin(args, max_length, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=None).eval()


def best_times(
    runs: Dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float]
) -> Dict[str, float]:
    """Best of ``repeats`` alternating rounds after one warm-up call (compilation, for the compiled
    contender); the full recompute is timed once, without warm-up."""
    times = time_alternating(runs, repeats, warmup=1, clock=clock, once=(NO_CACHE,))
    return {name: min(t) for name, t in times.items() if t}


def contenders(args, batch, new_tokens: int, tokenizer) -> Dict[str, Callable[[], object]]:
    width = batch["input_ids"].shape[1]
    ours = build_ours(args, width + new_tokens)
    predictor = ARLMPredictor(
        max_steps=new_tokens, max_length=width + new_tokens, tokenizer=tokenizer, model=ours,
        sampling_method="greedy",
    )
    runs = {"ours, cache": lambda: predictor.predict(batch)}
    if args.compile:
        compiled = ARLMPredictor(
            max_steps=new_tokens, max_length=width + new_tokens, tokenizer=tokenizer, model=ours,
            sampling_method="greedy", cache="static", compile=True,
        )
        runs["ours, static + compile"] = lambda: compiled.predict(batch)
    if not args.skip_no_cache:
        runs[NO_CACHE] = lambda: greedy_decode_without_cache(
            ours, batch["input_ids"], batch["attention_mask"], new_tokens
        )
    llama = build_llama(args, width + new_tokens)

    def hf_generate():
        with torch.no_grad():
            return llama.generate(
                **batch, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens
            )

    runs["HF Llama"] = hf_generate
    return runs


def params(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def main() -> None:
    parser = benchmark_parser(__doc__)
    add_network_args(parser)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds (best kept)")
    parser.add_argument("--compile", action="store_true", help="add the compiled static-cache row")
    parser.add_argument("--skip-no-cache", action="store_true", help="leave out the slow recompute")
    add_clock_arg(parser)
    args = parser.parse_args()
    if args.quick:
        args.d_model, args.layers, args.ff, args.vocab, args.prompt = 64, 2, 256, 128, 8
        args.batches, args.new_tokens = [1, 2], [8, 16]
    torch.set_num_threads(args.threads)
    tokenizer = SimpleSpaceTokenizer(vocab=[str(i) for i in range(args.vocab - 7)])
    clock = CLOCKS[args.clock]

    seconds: Dict[tuple, float] = {}
    names: List[str] = []
    for batch_size in args.batches:
        batch = prompt_batch(batch_size, args.prompt, args.vocab)
        for n in args.new_tokens:
            for name, best in best_times(contenders(args, batch, n, tokenizer), args.repeats, clock).items():
                seconds[name, batch_size, n] = best
                names = names if name in names else names + [name]
                print(f"  {name:<24} batch {batch_size} new {n:>4}: {best:.3f} s", flush=True)

    width = args.prompt + max(args.new_tokens)
    print(
        f"\n{network_summary(args)}; params: ours {params(build_ours(args, width)):.2f}M, HF Llama "
        f"{params(build_llama(args, width)):.2f}M; prompt {args.prompt} (last row of a batch "
        f"left-padded by {args.prompt // 4}); greedy; {args.threads} threads; {args.clock} clock; fp32; torch "
        f"{torch.__version__}\n"
    )
    print("| batch | new tokens | " + " | ".join(f"{n}: s (new tok/s)" for n in names) + " | cache vs no cache | cache vs HF |")
    print("|---|---|" + "---|" * len(names) + "---|---|")
    for b in args.batches:
        for n in args.new_tokens:
            cells = [f"{seconds[m, b, n]:.2f} ({b * n / seconds[m, b, n]:,.0f})" for m in names]
            ours = seconds["ours, cache", b, n]
            vs_no_cache = f"{seconds[NO_CACHE, b, n] / ours:.1f}x" if NO_CACHE in names else "-"
            print(f"| {b} | {n} | " + " | ".join(cells) + f" | {vs_no_cache} | {seconds['HF Llama', b, n] / ours:.1f}x |")
    longest, shortest = max(args.new_tokens), min(args.new_tokens)
    print(f"\n| time({longest}) / time({shortest}) | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for b in args.batches:
        ratios = [f"{seconds[m, b, longest] / seconds[m, b, shortest]:.2f}" for m in names]
        print(f"| batch {b} | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
