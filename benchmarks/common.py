"""What the benchmarks in this folder share: their command-line options, the networks they time,
and the timing loop that alternates the contenders so that machine noise hits all of them alike.

The scripts import it as ``common``: ``python benchmarks/<script>.py`` puts this folder first on
``sys.path``. (``torch.utils.benchmark.Timer`` times one statement at a time with the wall clock,
so it cannot alternate contenders within a round or count process CPU time.)
"""

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Collection, Dict, List, Optional

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from arlm.model_arlm import RotaryTransformerARLMModel

# The repository root, so that the scripts can use the tests' reference decoder (tests/oracles.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLOCKS: Dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose help is ``doc`` as written, with ``--threads`` (default 2) and ``--quick``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    return parser


def add_network_args(parser: argparse.ArgumentParser, width: str = "--d-model", feedforward: str = "--ff") -> None:
    """The network's size: ``width`` (256), ``--layers`` (4), ``--heads`` (4), ``feedforward``
    (1024), ``--vocab`` (1024). Whatever the two flags are called, they land in ``args.d_model``
    and ``args.ff``."""
    parser.add_argument(width, dest="d_model", metavar=width[2:].upper().replace("-", "_"), type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument(feedforward, dest="ff", metavar=feedforward[2:].upper().replace("-", "_"), type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=1024)


def add_clock_arg(parser: argparse.ArgumentParser) -> None:
    """``--clock wall|process`` (default wall); :data:`CLOCKS` maps the choice to its clock."""
    parser.add_argument(
        "--clock", choices=list(CLOCKS), default="wall",
        help="process: CPU seconds of this process, robust to other load on a shared machine "
        "(meaningful with --threads 1: idle OpenMP threads spin and count as CPU time)",
    )


def add_round_args(parser: argparse.ArgumentParser, warmup: int, rounds: int) -> None:
    """``--warmup`` (untimed training steps per contender) and ``--rounds`` (alternating rounds)
    with the given defaults, and ``--steps-per-round`` (timed training steps per contender and
    round, default 3)."""
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--rounds", type=int, default=rounds, help="alternating rounds per contender")
    parser.add_argument("--steps-per-round", type=int, default=3, help="timed training steps per contender per round")


def time_alternating(
    runners: Dict[str, Callable[[], object]], rounds: int, per_round: int = 1, warmup: int = 0,
    clock: Callable[[], float] = time.perf_counter, once: Collection[str] = (),
) -> Dict[str, List[float]]:
    """Each runner's call times, in seconds of ``clock``.

    First every runner is called ``warmup`` times, untimed, one runner after the other; then in
    each of ``rounds`` rounds every runner is called ``per_round`` times, timed, in the order of
    ``runners``. A runner named in ``once`` gets no warm-up and one timed call, in the first round
    (for a contender too slow to repeat)."""
    for name, run in runners.items():
        if name not in once:
            for _ in range(warmup):
                run()
    times: Dict[str, List[float]] = {name: [] for name in runners}
    for round_ in range(rounds):
        for name, run in runners.items():
            if name in once and round_ > 0:
                continue
            for _ in range(1 if name in once else per_round):
                start = clock()
                run()
                times[name].append(clock() - start)
    return times


def network_summary(args: argparse.Namespace) -> str:
    """``"d_model 256, 4 layers, 4 heads, ff 1024, vocab 1024"`` for the options of :func:`add_network_args`."""
    return f"d_model {args.d_model}, {args.layers} layers, {args.heads} heads, ff {args.ff}, vocab {args.vocab}"


def arlm_network(
    args: argparse.Namespace, max_length: int, padding_idx: int = 0, rotary_emb_dim: Optional[int] = None, **shape,
) -> RotaryTransformerARLMModel:
    """Our network of the :func:`add_network_args` size, dropout 0, rotary over the whole head
    unless ``rotary_emb_dim`` says otherwise; ``shape``: further constructor arguments."""
    return RotaryTransformerARLMModel(
        num_embeddings=args.vocab, d_model=args.d_model, num_layers=args.layers, nhead=args.heads,
        dim_feedforward=args.ff, dropout=0.0,
        rotary_emb_dim=args.d_model // args.heads if rotary_emb_dim is None else rotary_emb_dim,
        max_length=max_length, padding_idx=padding_idx, **shape,
    )


def llama_twin(args: argparse.Namespace, max_length: int, **config) -> LlamaForCausalLM:
    """HF ``LlamaForCausalLM`` with about the parameter count of :func:`arlm_network`: SwiGLU has
    three matrices, so intermediate 2/3 of ``args.ff`` (3 x d x inter == 2 x d x ff); SDPA, untied
    embeddings; ``config``: further ``LlamaConfig`` values (token ids)."""
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.d_model, intermediate_size=round(2 * args.ff / 3),
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=max_length, tie_word_embeddings=False, attn_implementation="sdpa", **config,
    ))
