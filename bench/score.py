"""Scoring with a reward model: `RewardModel.score`'s lean trunk (chatforge.decoder) vs transformers' own forward
of the same sequence-classification model, on the same batch, alternating, in one process.

The reward model is SmolLM2-135M-Instruct with a fresh one-label head (`load_reward_base`, saved and reloaded with
`RewardModel.load`: speed does not depend on training). The batch is --batch (context, reply) pairs of about
--tokens tokens each, the shape a PPO step scores. Prints the median seconds per batch of each and the ratio, and
the largest difference between their scores.

Run: .venv/bin/python bench/score.py [--batch 8] [--tokens 120] [--repeats 6] [--threads N]. Never a test assertion.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from chatforge import models
from chatforge.train.reward import RewardModel, load_reward_base
from chatforge.train.reward.model import head_scores, right_padded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=120, help="approximate tokens per sequence")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    models.set_threads(args.threads)
    models.keep_freed_memory()  # as the trainers that score do
    with tempfile.TemporaryDirectory(prefix="chatforge-bench-score-") as tmp:
        model, tokenizer = load_reward_base("smollm2-135m-instruct")
        models.save_checkpoint(model, tokenizer, Path(tmp))
        del model
        scorer = RewardModel.load(tmp)
    words = max(1, args.tokens - 20)
    items = [(f"Question {i}: write a short story about a robot who learns to paint.", "word " * words)
             for i in range(args.batch)]
    sequences = [scorer.encode(item) for item in items]
    lean = scorer.lean_trunk()
    if lean is None:
        print("the lean trunk does not apply here (not a CPU, or not a supported architecture)", file=sys.stderr)
        return 1
    times: dict[str, list[float]] = {"transformers": [], "lean": []}
    with torch.no_grad():
        for _ in range(args.repeats + 1):
            start = time.perf_counter()
            ids, mask = right_padded(sequences, scorer.pad_id, scorer.device)
            reference = head_scores(scorer.model, ids, mask)
            times["transformers"].append(time.perf_counter() - start)
            start = time.perf_counter()
            fast = scorer.lean_scores(lean, sequences)
            times["lean"].append(time.perf_counter() - start)
    slow_s, fast_s = (statistics.median(times[k][1:]) for k in ("transformers", "lean"))
    print(f"# {args.batch} sequences of {len(sequences[0])} tokens, float32, {torch.get_num_threads()} threads; "
          f"median of {args.repeats} after a warm-up")
    print(f"transformers forward {slow_s:.3f} s, lean trunk {fast_s:.3f} s: {slow_s / fast_s:.2f}x; "
          f"largest score difference {float((reference - fast).abs().max()):.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
