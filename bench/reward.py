"""Reward-model training throughput: chatforge's RewardTrainer vs TRL's RewardTrainer, same model and data.

Both train a one-label sequence-classification head on SmolLM2-135M-Instruct (float32, CPU), one epoch, the same
learning rate, sequence limit and number of sequences per optimizer step, on the same comparisons:

* K=2: plain pairs; both see exactly the same (chosen, rejected) sequences;
* K=4: rankings of 4 responses. chatforge scores each of the 4 sequences once and trains on all 6 pairs of the
  prompt in one batch element (InstructGPT's K-wise loss); TRL, which takes pairs, gets the same 6 pairs expanded
  (12 sequences). The figure compared is ranked pairs learned per second.

The comparisons are built deterministically from the behaviour demonstrations (the demonstration ranks first, then
a cut-off copy, then another prompt's answer, then a word loop), so both trainers see real text of realistic length.

Run: .venv/bin/python bench/reward.py [--prompts 16] [--threads N]   (needs the bench extra: pip install -e ".[bench]")
Prints the ratio chatforge/TRL per setting; timings are never test assertions.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from typing import Any

import torch

from chatforge import models
from chatforge.chat import Message
from chatforge.data.behaviours import Behaviours
from chatforge.data.comparisons import Comparison, Rater, Response

MODEL = "smollm2-135m-instruct"


def build_comparisons(n_prompts: int, k: int) -> list[Comparison]:
    demos = list(Behaviours("train", seed=0))
    out: list[Comparison] = []
    for i in range(len(demos) - 1):
        if len(out) == n_prompts:
            break
        prompt, answer = demos[i].messages[-2].content, demos[i].messages[-1].content
        other = demos[-1 - i].messages[-1].content  # an answer from another category
        words = answer.split()
        candidates = [answer, " ".join(words[: max(2, len(words) // 2)]), other, " ".join((words[:3] or ["la"]) * 8)]
        if len(set(candidates[:k])) < k:
            continue  # a comparison needs distinct responses
        out.append(
            Comparison(
                id=f"bench-{k}-{len(out)}",
                context=(Message("user", prompt),),
                responses=tuple(Response(t, "bench") for t in candidates[:k]),
                ranks=tuple(range(1, k + 1)),
                rater=Rater("bench", "simulated"),
            )
        )
    return out


def pairs_of(comparisons: list[Comparison]) -> list[dict[str, Any]]:
    rows = []
    for c in comparisons:
        context = [m.to_dict() for m in c.context]
        for better, worse in c.pairs():
            rows.append(
                {
                    "chosen": [*context, {"role": "assistant", "content": c.responses[better].text}],
                    "rejected": [*context, {"role": "assistant", "content": c.responses[worse].text}],
                }
            )
    return rows


def run_chatforge(comparisons: list[Comparison], sequences_per_step: int, k: int, max_len: int) -> float:
    from chatforge.train.reward import RewardConfig, RewardTrainer, load_reward_base

    model, tokenizer = load_reward_base(MODEL)
    with tempfile.TemporaryDirectory() as out:
        config = RewardConfig(
            output_dir=out,
            learning_rate=1e-5,
            epochs=1,
            batch_prompts=max(1, sequences_per_step // k),
            max_seq_len=max_len,
            progress=False,
            plots=False,
            bf16=False,
            warmup_steps=0,
        )
        # Time the training steps only: after its last step chatforge also scores references (normalisation) and
        # writes checkpoints, which TRL (save_strategy="no") does not do.
        last_step = [0.0]

        def on_log(record: dict[str, Any]) -> None:
            if record.get("kind") == "train":
                last_step[0] = time.perf_counter()

        trainer = RewardTrainer(config, model, tokenizer, comparisons, None, references=None, on_log=on_log)
        start = time.perf_counter()
        trainer.train()
        return last_step[0] - start


def run_trl(rows: list[dict[str, Any]], sequences_per_step: int, max_len: int) -> float:
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from chatforge.train.reward import load_reward_base

    model, tokenizer = load_reward_base(MODEL)
    with tempfile.TemporaryDirectory() as out:
        args = RewardConfig(
            output_dir=out,
            per_device_train_batch_size=max(1, sequences_per_step // 2),
            num_train_epochs=1,
            learning_rate=1e-5,
            max_length=max_len,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            use_cpu=True,
            bf16=False,
            disable_tqdm=True,
            dataloader_num_workers=0,
            warmup_steps=0,
        )
        trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--sequences-per-step", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4], choices=[2, 3, 4], help="ranking sizes to run")
    args = parser.parse_args(argv)
    models.set_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    print(f"# reward-model training: {MODEL}, float32, {torch.get_num_threads()} threads, {args.prompts} prompts")
    print(f"{'data':5} {'pairs':>6} {'chatforge pairs/s':>18} {'TRL pairs/s':>12} {'ratio':>6}")
    for k in args.k:
        comparisons = build_comparisons(args.prompts, k)
        rows = pairs_of(comparisons)
        ours = run_chatforge(comparisons, args.sequences_per_step, k, args.max_len)
        theirs = run_trl(rows, args.sequences_per_step, args.max_len)
        pairs = len(rows)
        print(f"K={k:<3} {pairs:6d} {pairs / ours:18.2f} {pairs / theirs:12.2f} {theirs / ours:5.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
