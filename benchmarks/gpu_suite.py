"""The GPU check, in one command: training throughput and MFU, batch-1 greedy decoding, and 200
steps of the real ``xlm`` CLI in bf16-mixed with ``generate_arlm`` and ``export_hf`` of its
checkpoint. Writes ``results.json`` and ``results.md`` under ``--out``.

1. ``train``: forward + backward + fused AdamW at GPT-2-small shape (d_model 768, 12 layers, 12
   heads, ff 3072, vocabulary 50,257), batch ``--batch`` x seq 1024, bf16 autocast, each model
   ``torch.compile``'d: arlm (``ARLMLoss``), HF ``LlamaForCausalLM`` and ``GPTNeoXForCausalLM`` of
   the same size. Tokens/s and MFU = (6 x weights + 12 x layers x d_model x seq) x tokens/s over
   the card's dense bf16 peak. The attention kernel that ran is stated (SDPA's flash, memory-
   efficient or cuDNN kernel, read from the profiler, or the flash_attn package).
2. ``decode``: batch 1, prompt 32, greedy, ``--new-tokens`` new tokens, bf16 weights: ``ARLMPredictor``
   (static cache, compiled decode step) vs HF ``generate()`` with ``cache_implementation="static"``
   and a compiled forward. New tokens/s, and the share of the card's memory bandwidth that
   reading the weights once per token takes (weights bytes x tokens/s / bandwidth).
3. ``star_paper``: the training step of ``experiment=star_{easy,medium,hard}_arlm_paper`` (the
   85M network, batch 64 at each level's block size and precision, fused AdamW, eager), and the
   hours each experiment's steps take at that rate (validation and checkpoints not counted).
4. ``cli``: ``xlm job_type=train experiment=star_medium_arlm trainer.precision=bf16-mixed``, 200
   steps (the loss must be finite and falling: the mean of the last 20 steps below the first 20),
   then ``xlm job_type=generate_arlm`` and ``xlm job_type=export_hf`` of its checkpoint.

``--dry-run`` runs the same steps on the CPU with tiny sizes (no compile, fp32 decode, 10 CLI
steps, small STAR splits) in about a minute: CI runs it (tests/e2e/test_gpu_suite_cli.py). On the
offline GPU machine, after installing the wheels as /work/shared/gpu/README.md says:

    python3 benchmarks/gpu_suite.py --out $OUT --xlm /tmp/site/bin/xlm
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

from gpu_suite_cli import run_cli

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

# Dense (no sparsity) bf16 tensor-core peak in TFLOP/s and memory bandwidth in TB/s, from the vendors' data sheets.
CARDS = {
    "H200": (989.0, 4.8), "H100 SXM": (989.0, 3.35), "H100 NVL": (835.0, 3.9), "H100 PCIe": (756.0, 2.0),
    "H100": (989.0, 3.35), "A100": (312.0, 2.0), "L40S": (362.0, 0.864), "A10G": (70.0, 0.6), "L4": (121.0, 0.3),
}
GPT2 = dict(d_model=768, layers=12, heads=12, ff=3072, vocab=50257, seq=1024)
TINY = dict(d_model=64, layers=2, heads=4, ff=256, vocab=128, seq=64)
STAR_PAPER_NETWORK = dict(d_model=768, layers=12, heads=12, ff=3072)
"""model=rotary_transformer_small_arlm, which every ``star_*_arlm_paper`` experiment trains."""
STAR_PAPER_LEVELS = {
    "easy": dict(vocab=27, seq=36, steps=50_000, bf16=False),
    "medium": dict(vocab=27, seq=44, steps=100_000, bf16=False),
    "hard": dict(vocab=63, seq=136, steps=100_000, bf16=True),
}
"""Per level: vocabulary and block size (configs/datamodule/star_*_arlm.yaml), steps and
precision (configs/experiment/star_*_arlm_paper.yaml; tests/xlm_face/test_star_paper_experiments.py
checks the steps and precisions against the configs)."""


def card_peaks(device: torch.device) -> Dict[str, Any]:
    """The card's name, bf16 peak (FLOP/s) and bandwidth (bytes/s); on the CPU, measured here
    (fp32 2048^3 matmul, a 64 MiB copy) so that a dry run has numbers of the same kind."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        key = next((k for k in CARDS if k in name), None)
        flops, bandwidth = CARDS[key] if key else (float("nan"), float("nan"))
        return {"name": name, "peak_flops": flops * 1e12, "bandwidth": bandwidth * 1e12, "peak_source": f"data sheet ({key})"}
    a = torch.randn(2048, 2048)
    matmul = min(_timed(lambda: a @ a, device) for _ in range(3))
    big = torch.empty(16 * 2**20)
    copy = min(_timed(lambda: big.clone(), device) for _ in range(3))
    return {
        "name": "cpu", "peak_flops": 2 * 2048**3 / matmul, "bandwidth": 2 * big.numel() * 4 / copy,
        "peak_source": "measured (fp32 matmul, copy)",
    }


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_models(shape: dict, device: torch.device) -> Dict[str, tuple]:
    """name -> (model, step loss(ids) -> scalar) for arlm, HF Llama and HF GPT-NeoX of ``shape``."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    from arlm.loss_arlm import ARLMLoss
    from arlm.model_arlm import RotaryTransformerARLMModel

    d, n, h, ff, V, L = (shape[k] for k in ("d_model", "layers", "heads", "ff", "vocab", "seq"))
    ours = RotaryTransformerARLMModel(V, d, n, h, dim_feedforward=ff, dropout=0.0, rotary_emb_dim=d // h, max_length=L)
    loss = ARLMLoss(model=ours)

    def arlm_loss(ids):
        targets = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -100)], dim=1)
        return loss({"input_ids": ids, "attention_mask": torch.ones_like(ids), "target_ids": targets, "right_padded": True})["loss"]

    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=V, hidden_size=d, intermediate_size=round(2 * ff / 3), num_hidden_layers=n, num_attention_heads=h,
        num_key_value_heads=h, max_position_embeddings=L, tie_word_embeddings=False, attn_implementation="sdpa",
    ))
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=V, hidden_size=d, intermediate_size=ff, num_hidden_layers=n, num_attention_heads=h,
        max_position_embeddings=L, rotary_pct=1.0, use_parallel_residual=False, tie_word_embeddings=False,
        attn_implementation="sdpa", hidden_act="relu",
    ))
    hf_loss = lambda model: (lambda ids: model(input_ids=ids, labels=ids).loss)  # noqa: E731
    return {
        "arlm": (ours, arlm_loss),
        "HF LlamaForCausalLM": (llama, hf_loss(llama)),
        "HF GPTNeoXForCausalLM": (neox, hf_loss(neox)),
    }


def attention_kernel_used(model: torch.nn.Module, step_loss: Callable, ids: torch.Tensor, device: torch.device) -> str:
    """The attention kernel one forward ran, from the profiler's op and kernel names."""
    from arlm.network.attention import is_flash_attn_available

    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        with torch.profiler.profile(activities=activities) as prof:
            step_loss(ids)
    names = {event.key.lower() for event in prof.key_averages()}
    for needle, label in (
        ("flash_attn", "flash-attn package"), ("cudnn_attention", "SDPA cuDNN"), ("flash_attention", "SDPA flash"),
        ("efficient_attention", "SDPA memory-efficient"), ("baddbmm", "arlm short-sequence kernel (baddbmm)"),
        ("_scaled_dot_product_attention_math", "SDPA math"),
    ):
        if any(needle in name for name in names):
            return f"{label}; flash_attn installed: {is_flash_attn_available()}"
    return f"not identified; flash_attn installed: {is_flash_attn_available()}"


def bench_train(shape: dict, batch: int, steps: int, device: torch.device, compile_: bool, peak: float) -> dict:
    results = {}
    tokens = batch * shape["seq"]
    ids = torch.randint(1, shape["vocab"], (batch, shape["seq"]), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for name, (model, step_loss) in train_models(shape, device).items():
        model.to(device).train()
        kernel = attention_kernel_used(model, step_loss, ids, device)
        run_loss = torch.compile(step_loss) if compile_ else step_loss
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

        def step():
            with autocast:
                loss = run_loss(ids)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        start = time.perf_counter()
        for _ in range(3):
            step()
        _sync(device)
        warmup = time.perf_counter() - start
        times = [_timed(step, device) for _ in range(steps)]
        embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else model.model.embed_tokens
        weights = sum(p.numel() for p in model.parameters()) - embedding.weight.numel()
        flops = 6 * weights * tokens + 12 * shape["layers"] * shape["d_model"] * shape["seq"] * tokens
        step_time = statistics.median(times)
        results[name] = {
            "step_s": step_time, "tokens_per_s": tokens / step_time, "mfu": flops / step_time / peak,
            "warmup_and_compile_s": warmup, "attention": kernel,
        }
        model.cpu()
        del optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def bench_star_paper(device: torch.device, dry_run: bool) -> dict:
    """Per level: the median step time of the paper's network at batch 64, and the hours its steps take."""
    from arlm.loss_arlm import ARLMLoss
    from arlm.model_arlm import RotaryTransformerARLMModel

    network = TINY if dry_run else STAR_PAPER_NETWORK
    results = {}
    for level, shape in STAR_PAPER_LEVELS.items():
        d, h = network["d_model"], network["heads"]
        model = RotaryTransformerARLMModel(
            shape["vocab"], d, network["layers"], h, dim_feedforward=network["ff"], dropout=0.1,
            rotary_emb_dim=d // h, max_length=shape["seq"],
        ).to(device).train()
        loss = ARLMLoss(model=model)
        ids = torch.randint(7, shape["vocab"], (2 if dry_run else 64, shape["seq"]), device=device)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "right_padded": True,
                 "target_ids": torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -100)], dim=1)}
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01, fused=device.type == "cuda")
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=shape["bf16"] and device.type == "cuda")

        def step():
            with autocast:
                value = loss(batch)["loss"]
            value.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for _ in range(3):
            step()
        step_s = statistics.median(_timed(step, device) for _ in range(2 if dry_run else 30))
        results[level] = {"step_s": step_s, "steps": shape["steps"], "hours": step_s * shape["steps"] / 3600,
                          "precision": "bf16-mixed" if shape["bf16"] else "32-true"}
        del model, optimizer
    return results


def bench_decode(shape: dict, new_tokens: int, device: torch.device, compile_: bool, bandwidth: float) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM
    from xlm.datamodule import SimpleSpaceTokenizer

    from arlm.model_arlm import RotaryTransformerARLMModel
    from arlm.predictor_arlm import ARLMPredictor

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    d, n, h, ff, V = (shape[k] for k in ("d_model", "layers", "heads", "ff", "vocab"))
    prompt, width = 32, 32 + new_tokens
    tokenizer = SimpleSpaceTokenizer(vocab=[str(i) for i in range(V - 7)])
    ours = RotaryTransformerARLMModel(V, d, n, h, dim_feedforward=ff, dropout=0.0, rotary_emb_dim=d // h, max_length=width)
    with torch.no_grad():
        ours.lm_head.weight[tokenizer.eos_token_id] = 0.0  # random weights never stop early
    ours.to(device, dtype).eval()
    predictor = ARLMPredictor(
        max_steps=new_tokens, max_length=width, tokenizer=tokenizer, model=ours, sampling_method="greedy",
        cache="static" if compile_ else "dynamic", compile=compile_,
    )
    ids = torch.randint(7, V, (1, prompt), device=device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=V, hidden_size=d, intermediate_size=round(2 * ff / 3), num_hidden_layers=n, num_attention_heads=h,
        num_key_value_heads=h, max_position_embeddings=width, tie_word_embeddings=False, attn_implementation="sdpa",
        pad_token_id=0, eos_token_id=tokenizer.eos_token_id,
    )).to(device, dtype).eval()
    if compile_:  # HF's recipe for a static cache with a compiled forward (CUDA graphs)
        llama.generation_config.cache_implementation = "static"
        llama.forward = torch.compile(llama.forward, mode="reduce-overhead", fullgraph=True)

    def hf():
        with torch.no_grad():
            llama.generate(**batch, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens)

    results: Dict[str, Any] = {}
    for name, model, run in (("arlm ARLMPredictor", ours, lambda: predictor.predict(batch)), ("HF generate()", llama, hf)):
        try:
            start = time.perf_counter()
            run()
            _sync(device)
            first = time.perf_counter() - start
            seconds = min(_timed(run, device) for _ in range(3))
        except Exception as error:  # one contender's failure must not cost the other's figures
            results[name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        results[name] = {
            "seconds": seconds, "new_tokens_per_s": new_tokens / seconds, "first_call_s": first,
            "bandwidth_share": weight_bytes * new_tokens / seconds / bandwidth,
        }
    if all("seconds" in results[name] for name in ("arlm ARLMPredictor", "HF generate()")):
        results["arlm vs HF"] = results["HF generate()"]["seconds"] / results["arlm ARLMPredictor"]["seconds"]
    return results


def table(report: dict) -> str:
    lines = [
        f"# GPU suite{' (dry run on the CPU)' if report['dry_run'] else ''}",
        "", f"{report['card']['name']}; torch {report['torch']}; transformers {report['transformers']}; "
        f"peak {report['card']['peak_flops'] / 1e12:.3g} TFLOP/s, bandwidth {report['card']['bandwidth'] / 1e12:.3g} TB/s "
        f"({report['card']['peak_source']}); compile {report['compile']}", "",
    ]
    if "train" in report:
        lines += [f"## Training, {report['train_shape']}", "", "| model | tokens/s | MFU | step | attention |", "|---|---|---|---|---|"]
        for name, r in report["train"].items():
            lines.append(f"| {name} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | {r['step_s'] * 1e3:.1f} ms | {r['attention']} |")
    if "decode" in report:
        d = report["decode"]
        lines += ["", f"## Greedy decode, batch 1, {report['new_tokens']} new tokens", "",
                  "| generator | new tokens/s | share of bandwidth (weights once per token) | first call |", "|---|---|---|---|"]
        for name in ("arlm ARLMPredictor", "HF generate()"):
            r = d[name]
            if "error" in r:
                lines.append(f"| {name} | failed: {r['error']} | | |")
            else:
                lines.append(f"| {name} | {r['new_tokens_per_s']:,.0f} | {r['bandwidth_share']:.1%} | {r['first_call_s']:.1f} s |")
        if "arlm vs HF" in d:
            lines.append(f"\narlm vs HF: {d['arlm vs HF']:.2f}x")
    if "star_paper" in report:
        lines += ["", "## STAR paper experiments: step time and the hours of their steps", "",
                  "| experiment | precision | step | steps | hours |", "|---|---|---|---|---|"]
        for level, r in report["star_paper"].items():
            lines.append(f"| star_{level}_arlm_paper | {r['precision']} | {r['step_s'] * 1e3:.1f} ms | {r['steps']:,} | {r['hours']:.2f} |")
    if "cli" in report:
        lines += ["", "## The real CLI", "", "| job | exit | seconds | notes |", "|---|---|---|---|"]
        for name, r in report["cli"].items():
            notes = ""
            if name == "train" and "steps" in r:
                notes = f"{r['steps']} steps, loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}, finite {r['finite']}, falling {r['falling']}"
            if name == "export_hf" and "architecture" in r:
                notes = f"exported as {r['architecture']}"
            lines.append(f"| {name} | {r['exit']} | {r['seconds']:.0f} | {notes} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where results.json and results.md go")
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny sizes, no compile")
    parser.add_argument("--xlm", default=str(Path(sys.executable).parent / "xlm"), help="the xlm console script")
    parser.add_argument("--batch", type=int, default=8, help="training batch (rows of 1024 tokens)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per model")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "decode", "star_paper", "cli"])
    args = parser.parse_args()
    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.dry_run:
        sys.exit("no CUDA device here: run with --dry-run for the CPU version")
    if args.dry_run:
        torch.set_num_threads(1)
        shape, batch, steps, new_tokens, compile_ = TINY, 2, 2, 16, False
    else:
        shape, batch, steps, new_tokens, compile_ = GPT2, args.batch, args.steps, args.new_tokens, True
    import transformers

    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    card = card_peaks(device)
    report: Dict[str, Any] = {
        "dry_run": args.dry_run, "torch": torch.__version__, "transformers": transformers.__version__, "card": card,
        "compile": compile_, "train_shape": f"{shape} batch {batch}", "new_tokens": new_tokens, "errors": {},
    }
    sections: List[tuple] = [
        ("train", lambda: bench_train(shape, batch, steps, device, compile_, card["peak_flops"])),
        ("decode", lambda: bench_decode(shape, new_tokens, device, compile_, card["bandwidth"])),
        ("star_paper", lambda: bench_star_paper(device, args.dry_run)),
        ("cli", lambda: run_cli(args.xlm, Path(tempfile.mkdtemp(prefix="gpu_suite_", dir=args.out)), args.dry_run, device)),
    ]
    for name, run in sections:
        if name in args.skip:
            continue
        start = time.perf_counter()
        try:
            report[name] = run()
        except Exception as error:  # one failed section must not cost the others' figures
            report["errors"][name] = f"{type(error).__name__}: {error}"
        report.setdefault("seconds", {})[name] = time.perf_counter() - start
        print(f"{name}: {report['seconds'][name]:.0f} s", flush=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / "results.md").write_text(table(report) + "".join(f"\nerror in {k}: {v}\n" for k, v in report["errors"].items()))
    print(table(report))
    cli = report.get("cli", {})
    decode_failed = any("error" in r for r in report.get("decode", {}).values() if isinstance(r, dict))
    ok = (
        not report["errors"] and not decode_failed and all(r.get("exit") == 0 for r in cli.values())
        and cli.get("train", {}).get("finite", "cli" in args.skip)
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
