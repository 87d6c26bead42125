"""Hugging Face face throughput: the native export, ArlowForCausalLM and ARLMPredictor, one run.

One xLM network (``RotaryTransformerARLMModel``, built from one seed) seen three ways on the same
weights, fp32, SDPA, on CPU with ``--threads``:

* native: its exact ``transformers`` twin from :func:`arlm.export.native.to_native`
  (``GPTNeoXForCausalLM`` for ``--shape gpt_neox``, the xLM default network: LayerNorm, ReLU,
  biases, partial rotary; ``LlamaForCausalLM`` for ``--shape llama``);
* ``ArlowForCausalLM`` (:func:`arlm.export.exporter.xlm_to_hf`);
* ``ARLMPredictor`` (greedy, dynamic KV cache) on the xLM model itself.

* train (the two ``transformers`` models): forward + backward + AdamW on ``--batch`` x ``--seq``
  tokens with ``labels``; tokens/s = batch x seq / median step time.
* generate: greedy, ``--gen-batch`` prompts of ``--prompt`` tokens, ``--new-tokens`` new tokens
  each (KV cache on; ``generate()`` with ``min_new_tokens`` so EOS never ends it early; the
  predictor runs its ``max_steps`` unless every row emits EOS); new tokens/s = batch x new /
  median call time.

The runners alternate rounds so that machine noise hits all alike; medians are taken after
warm-up. Prints a markdown table.

    python benchmarks/hf_throughput.py            # the README's configuration
    python benchmarks/hf_throughput.py --quick    # smoke run
    python benchmarks/hf_throughput.py --threads 1 --clock process   # on a busy machine
"""

import statistics
from typing import Callable, Dict

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from arlm import RotaryTransformerARLMModel
from arlm.export.exporter import xlm_to_hf
from arlm.export.native import to_native
from arlm.predictor_arlm import ARLMPredictor
from common import (
    CLOCKS, add_clock_arg, add_network_args, add_round_args, arlm_network, benchmark_parser, time_alternating,
)

SHAPES = {
    "gpt_neox": dict(activation="relu", norm="layernorm", bias=True),
    "llama": dict(activation="swiglu", norm="rmsnorm", bias=False),
}


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Ids 0..3 are [PAD] [BOS] [EOS] [UNK], then words; the predictor decodes with it."""
    tokens = ["[PAD]", "[BOS]", "[EOS]", "[UNK]", *(f"w{i}" for i in range(vocab_size - 4))]
    backend = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]"
    )


def build(args):
    torch.manual_seed(0)
    xlm = arlm_network(
        args, max(args.seq, args.prompt + args.new_tokens),
        rotary_emb_dim=args.d_model // args.heads // 2 if args.shape == "gpt_neox" else None, **SHAPES[args.shape],
    ).eval()
    tokenizer = word_tokenizer(args.vocab)
    arlow = xlm_to_hf(xlm, tokenizer)
    native = to_native(arlow)
    return xlm, tokenizer, {f"native {type(native).__name__}": native, "ArlowForCausalLM": arlow}


def train_step_fn(model: torch.nn.Module, args) -> Callable[[], None]:
    ids = torch.randint(4, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def prompts(args) -> torch.Tensor:
    return torch.randint(4, args.vocab, (args.gen_batch, args.prompt), generator=torch.Generator().manual_seed(2))


def generate_fn(model: torch.nn.Module, args) -> Callable[[], None]:
    ids = prompts(args)
    mask = torch.ones_like(ids)

    @torch.no_grad()
    def run() -> None:
        model.eval()
        out = model.generate(
            ids, attention_mask=mask, do_sample=False, max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens, pad_token_id=0, use_cache=True,
        )
        assert out.shape[1] == args.prompt + args.new_tokens

    return run


def predictor_fn(xlm: RotaryTransformerARLMModel, tokenizer, args) -> Callable[[], None]:
    predictor = ARLMPredictor(
        max_steps=args.new_tokens, max_length=args.prompt + args.new_tokens, tokenizer=tokenizer,
        sampling_method="greedy", model=xlm,
    )
    batch = {"input_ids": prompts(args), "attention_mask": torch.ones(args.gen_batch, args.prompt, dtype=torch.long)}

    def run() -> None:
        out = predictor.predict(batch)
        assert out["ids"].shape[1] == args.prompt + args.new_tokens

    return run


def median_times(
    runners: Dict[str, Callable[[], None]], warmup: int, rounds: int, per_round: int,
    clock: Callable[[], float],
) -> Dict[str, float]:
    times = time_alternating(runners, rounds, per_round, warmup, clock)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="gpt_neox")
    add_network_args(parser, width="--hidden", feedforward="--intermediate")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--gen-batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    add_round_args(parser, warmup=2, rounds=4)
    add_clock_arg(parser)
    args = parser.parse_args()
    if args.quick:
        args.seq, args.batch, args.new_tokens, args.warmup, args.rounds, args.steps_per_round = 64, 2, 16, 1, 2, 1
    torch.set_num_threads(args.threads)
    xlm, tokenizer, hf_models = build(args)
    native_name = next(iter(hf_models))
    clock = CLOCKS[args.clock]

    train = median_times(
        {name: train_step_fn(m, args) for name, m in hf_models.items()},
        args.warmup, args.rounds, args.steps_per_round, clock,
    )
    generate = median_times(
        {
            **{name: generate_fn(m, args) for name, m in hf_models.items()},
            "ARLMPredictor (xLM face)": predictor_fn(xlm, tokenizer, args),
        },
        1, args.rounds, 1, clock,
    )

    train_tokens = args.batch * args.seq
    new_tokens = args.gen_batch * args.new_tokens
    print(
        f"\n{args.shape}-shaped network: hidden {args.d_model}, {args.layers} layers, {args.heads} "
        f"heads, intermediate {args.ff}, vocab {args.vocab}; train batch {args.batch} x "
        f"seq {args.seq} (AdamW); generate batch {args.gen_batch}, prompt {args.prompt}, "
        f"{args.new_tokens} new tokens, greedy, KV cache; {args.threads} threads, {args.clock} "
        f"clock, fp32, torch {torch.__version__}, transformers {__import__('transformers').__version__}\n"
    )
    print("| model | train tokens/s | vs native | generate median (s) | new tokens/s | vs native |")
    print("|---|---|---|---|---|---|")
    for name in generate:
        train_cells = "n/a | n/a"
        if name in train:
            train_cells = f"{train_tokens / train[name]:,.0f} | {train[native_name] / train[name]:.2f}x"
        print(
            f"| {name} | {train_cells} | {generate[name]:.3f} | {new_tokens / generate[name]:,.0f} | "
            f"{generate[native_name] / generate[name]:.2f}x |"
        )


if __name__ == "__main__":
    main()
