"""Generation speed: chatforge's engine vs plain transformers `generate()`, and the machine's limits.

Both engines get the same model, the same chat prompts and greedy decoding. Two workloads:

* fixed: every row generates exactly --new-tokens tokens (end-of-turn ignored), which measures raw decode speed;
* natural: rows stop at end-of-turn (at most --new-tokens), which is what serving and RL rollouts do; here a
  finished row costs `generate()` a full forward per step until the longest row ends, while chatforge drops it.

Limits, measured in the same process on the same machine:

* batch-1 decode is memory-bound: each token reads every weight once, so tokens/s <= bandwidth / weight bytes
  (bandwidth = the larger of a large tensor copy's bytes read + written per second and a large sum's bytes read
  per second);
* batch-16 decode is compute-bound at best: tokens/s <= peak matmul FLOP/s / (2 x parameters).

Run: .venv/bin/python bench/generation.py [--model smollm2-135m-instruct] [--dtype float32 bfloat16]
Prints ratios; timings are never test assertions (these machines are noisy, so compare within one run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from chatforge import chat, models
from chatforge.generation import SamplingParams, TorchEngine

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a refrigerator works to a ten-year-old.",
    "What are three tips for staying focused while studying?",
    "Summarize the plot of Romeo and Juliet in a paragraph.",
    "Give me a recipe for a quick vegetarian dinner.",
    "Why is the sky blue?",
    "Write a haiku about autumn leaves.",
    "What is the difference between a list and a tuple in Python?",
    "Describe the water cycle.",
    "How do I politely decline a meeting invitation?",
    "List five fun facts about octopuses.",
    "What should I pack for a weekend hiking trip?",
    "Explain compound interest with an example.",
    "Write a limerick about a cat who loves cheese.",
    "What causes the seasons on Earth?",
    "How can I improve my sleep?",
]


@dataclass
class Run:
    engine: str
    workload: str
    batch: int
    seconds: float
    tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> tuple[float, float]:
    """(copy, read) bandwidth in bytes/s, best of `repeats`: a large tensor copy counted as bytes read + written,
    and a large sum (reads only). The bound uses the larger, so it is never pessimistic."""
    src = torch.ones(megabytes * 1024 * 1024 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best_copy = best_read = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best_copy = min(best_copy, time.perf_counter() - start)
        start = time.perf_counter()
        src.sum()
        best_read = min(best_read, time.perf_counter() - start)
    size = src.numel() * 4
    return 2 * size / best_copy, size / best_read


def matmul_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 3) -> float:
    """Peak FLOP/s of a large square matmul in `dtype` (best of `repeats`)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def hf_generate(model: Any, tokenizer: Any, prompts: list[list[int]], new_tokens: int, fixed: bool) -> int:
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    stops = chat.stop_token_ids(tokenizer)
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens if fixed else 0,
            eos_token_id=stops,
            pad_token_id=pad,
        )
    generated = out[:, width:]
    if fixed:
        return int(generated.numel())
    # useful tokens: up to and including each row's first stop token
    total = 0
    for row in generated.tolist():
        ends = [i for i, t in enumerate(row) if t in stops]
        total += (ends[0] + 1) if ends else len(row)
    return total


def ours(engine: TorchEngine, prompts: list[list[int]], new_tokens: int, fixed: bool) -> int:
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0)
    if fixed:
        engine.stop_token_ids = frozenset()
    else:
        engine.stop_token_ids = frozenset(chat.stop_token_ids(engine.tokenizer))
    return sum(len(c.token_ids) for c in engine.generate(prompts, params))


def measure(fns: dict[str, Any], repeats: int) -> dict[str, tuple[float, int]]:
    """Median seconds and tokens of each function, the runs interleaved (a, b, c, a, b, c, ...) so that the
    machine's drifting load falls on every engine alike."""
    for fn in fns.values():
        fn()  # warm-up (allocator, kernels, weight packing)
    times: dict[str, list[float]] = {name: [] for name in fns}
    tokens: dict[str, int] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            tokens[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), tokens[name]) for name in fns}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--decoder", default="auto", choices=["auto", "lean", "transformers"], help="chatforge's forward pass")
    parser.add_argument("--cache", default="dynamic", choices=["static", "dynamic"], help="KV cache of the transformers decoder")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    models.set_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    print(
        f"# generation benchmark: {args.model}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"chatforge decoder: {args.decoder}"
    )
    copy_bw, read_bw = memory_bandwidth()
    bandwidth = max(copy_bw, read_bw)
    print(f"memory bandwidth: copy {copy_bw / 1e9:.1f} GB/s (read + write), read {read_bw / 1e9:.1f} GB/s")
    results: dict[str, Any] = {"model": args.model, "threads": torch.get_num_threads(), "bandwidth": bandwidth, "runs": []}
    for dtype_name in args.dtype:
        dtype = models.parse_dtype(dtype_name)
        model, tokenizer = models.load_model(args.model, dtype=dtype)
        # Same arithmetic dtype on both sides: generate() runs the model in `dtype`, chatforge decodes in it.
        engine = TorchEngine(model, tokenizer, cache=args.cache, decoder=args.decoder, decode_dtype=dtype)
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        params = sum(p.numel() for p in model.parameters())
        flops = matmul_flops(dtype)
        bw_bound = bandwidth / weight_bytes
        flop_bound = flops / (2 * params)
        print(
            f"\n## {dtype_name}: {params / 1e6:.0f}M parameters, {weight_bytes / 1e6:.0f} MB of weights; "
            f"matmul peak {flops / 1e9:.0f} GFLOP/s; chatforge decodes with {engine.decoder_name}"
        )
        print(f"bounds: batch-1 bandwidth bound {bw_bound:.1f} tok/s; compute bound {flop_bound:.0f} tok/s (any batch)")
        prompts_all = [chat.encode_prompt(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS]
        # chatforge as shipped decodes a float32 model in bf16 where the CPU has native bf16: time that too, against
        # the same float32 generate() and the float32 weights' bandwidth bound.
        shipped = TorchEngine(model, tokenizer, cache=args.cache, decoder=args.decoder)
        show_shipped = shipped.decoder_name != engine.decoder_name
        extra = f" {'as shipped tok/s':>17} {'ratio':>6} {'% of bound':>10}" if show_shipped else ""
        print(f"{'workload':9} {'batch':>5} {'generate() tok/s':>17} {'chatforge tok/s':>16} {'ratio':>6} {'% of bound':>11}{extra}")
        for workload in ("fixed", "natural"):
            for batch in args.batch:
                prompts = (prompts_all * ((batch + len(prompts_all) - 1) // len(prompts_all)))[:batch]
                fixed = workload == "fixed"
                fns = {
                    "generate": partial(hf_generate, model, tokenizer, prompts, args.new_tokens, fixed),
                    "chatforge": partial(ours, engine, prompts, args.new_tokens, fixed),
                }
                if show_shipped:
                    fns["shipped"] = partial(ours, shipped, prompts, args.new_tokens, fixed)
                timed = measure(fns, args.repeats)
                runs = {name: Run(name, workload, batch, *timed[name]) for name in fns}
                hf, cf = runs["generate"], runs["chatforge"]
                bound = bw_bound if batch == 1 else flop_bound
                line = (
                    f"{workload:9} {batch:5d} {hf.tokens_per_s:17.1f} {cf.tokens_per_s:16.1f} "
                    f"{cf.tokens_per_s / hf.tokens_per_s:5.2f}x {100 * cf.tokens_per_s / bound:6.0f}% "
                    f"(generate() {100 * hf.tokens_per_s / bound:.0f}%)"
                )
                if show_shipped:
                    sh = runs["shipped"]
                    line += f" {sh.tokens_per_s:17.1f} {sh.tokens_per_s / hf.tokens_per_s:5.2f}x {100 * sh.tokens_per_s / bound:9.0f}%"
                print(line, flush=True)
                for run in runs.values():
                    results["runs"].append(
                        {**run.__dict__, "dtype": dtype_name, "tokens_per_s": run.tokens_per_s, "bound": bound}
                    )
        if show_shipped:
            print(f"as shipped: chatforge's default engine on this {dtype_name} model ({shipped.decoder_name}), "
                  f"against the same {dtype_name} generate() and {dtype_name} bounds")
        del shipped
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
