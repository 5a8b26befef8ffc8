"""Drawing one token per row: chatforge's `generation.draw` (CDF inversion, one uniform per row) vs
`torch.multinomial` (what `generate()` and most samplers call), on softmax rows of a real vocabulary size.

Both draw from the same probabilities with their own seeded generator; the table gives the median time per call
over --calls calls for each batch size, and the ratio multinomial/draw. Also checks, on the way, that draw's
frequencies over many draws match the probabilities (the largest gap, in standard errors).

Run: .venv/bin/python bench/sampling.py [--vocab 49152] [--threads N]. Never a test assertion.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from chatforge import models
from chatforge.generation import draw


def timed(fn, calls: int) -> float:
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=49152, help="vocabulary size (SmolLM2: 49152; Gemma 3: 262144)")
    parser.add_argument("--batches", default="1,8,16", help="rows per call, comma-separated")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    models.set_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"# one token per row from {args.vocab}-way softmax rows, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; median of {args.calls} calls")
    print(f"{'rows':>5} {'multinomial ms':>15} {'draw ms':>8} {'ratio':>7}")
    for rows in (int(b) for b in args.batches.split(",")):
        probs = torch.softmax(torch.randn(rows, args.vocab, generator=generator) * 3, dim=-1)
        slow = timed(lambda: torch.multinomial(probs, 1, generator=generator), args.calls)  # noqa: B023
        fast = timed(lambda: draw(probs, generator), args.calls)  # noqa: B023
        print(f"{rows:5d} {slow * 1e3:15.2f} {fast * 1e3:8.2f} {slow / fast:6.1f}x")
    probs = torch.softmax(torch.randn(200, generator=generator) * 2, dim=-1)
    n = 200_000
    counts = torch.bincount(draw(probs.repeat(n, 1), generator), minlength=200).double() / n
    gap = ((counts - probs.double()).abs() / (probs.double() * (1 - probs.double()) / n).sqrt()).max()
    print(f"# draw over {n} draws of a 200-way distribution: largest gap {float(gap):.1f} standard errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
