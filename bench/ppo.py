"""One online-RL step: chatforge's PPO (critic included) vs TRL's GRPOTrainer, same model, reward model and work.

Each trainer runs in its own fresh process, one after the other, as a user would run it: chatforge's trainers set
glibc's malloc to keep freed memory (`models.keep_freed_memory`), TRL leaves malloc as it is. A third run gives TRL
that same setting (`--no-trl-tuned` skips it), so the table shows what the setting is worth to each. All runs start
from the packaged SmolLM2-135M-Instruct (float32, CPU, `models.load_model`), are scored by one `RewardModel`
checkpoint (built by `load_reward_base` and saved untrained: throughput does not depend on its quality), sample at temperature 1 without top-k/top-p, keep a frozen reference model for a KL
penalty (chatforge kl_coef = TRL beta = --kl-coef), run without dropout and without gradient checkpointing (TRL's
GRPOConfig turns it on by default: --trl-gradient-checkpointing keeps it) and use AdamW at the same learning rate,
constant schedule and gradient clip (TRL keeps its default fused AdamW, chatforge torch's default). Per
step, both produce --completions completions of at most --max-new-tokens tokens and take exactly one optimizer
step on all of them:

* chatforge PPO: batch_size = mini_batch_size = C prompts x 1 sample, ppo_epochs = 1. Its step is: generate, score,
  one no-grad forward of policy + value head (old log-probs, values) and one of the reference, GAE, then one
  forward/backward of policy + value head and one optimizer step;
* TRL GRPO: C / --generations prompts x num_generations = --generations (per_device_train_batch_size = C completions,
  gradient_accumulation_steps = steps_per_generation = num_iterations = 1): generate, score, one no-grad forward of
  the reference, then one forward/backward of the policy and one optimizer step (with a single pass TRL takes the
  old log-probs from the training forward itself, so it runs one forward fewer; PPO also trains its value head).

Lengths: by default every completion is forced to exactly --max-new-tokens tokens (chatforge: the engine's stop set
is emptied, as bench/generation.py does; TRL: generation_kwargs min_new_tokens), so both do identical token work.
With --natural, completions end at end-of-turn and the table reports the tokens actually generated; tokens/s is
then the fairer figure (chatforge drops finished rows from the batch, `generate()` keeps them).

Timing: --steps timed steps after one warm-up step, median per step. A step runs from rollout to optimizer step
(chatforge: its `step_time` metric; TRL: on_step_begin to on_step_end). "generate" is the sampling call only
(chatforge: its `generation_time` metric; TRL: a timer around `_generate_single_turn`), "score" the reward model
(a timer around `RewardModel.score`), "train" the rest (forwards for log-probs, values and reference,
advantages, loss, backward, optimizer). Checkpoints and logging are outside the step in both.

Run: .venv/bin/python bench/ppo.py [--steps 3] [--threads N] [--completions 8] [--max-new-tokens 64]
(needs the bench extra: pip install -e ".[bench]"). Prints the ratios chatforge/TRL; never a test assertion.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from chatforge import models

MODEL = "smollm2-135m-instruct"

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


def conversations() -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": p}] for p in PROMPTS]


class TimedReward:
    """The shared reward model, with the time spent scoring accumulated (read and reset once per step)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.seconds = 0.0
        self.calls = 0

    def score(self, items: Sequence[Any], batch_size: int = 16) -> list[float]:
        start = time.perf_counter()
        try:
            return self.model.score(items, batch_size=batch_size)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


@dataclass
class Step:
    seconds: float
    generate: float
    score: float
    tokens: int
    completions: int

    @property
    def train(self) -> float:
        return self.seconds - self.generate - self.score


@dataclass
class Result:
    name: str
    layout: str
    steps: list[Step] = field(default_factory=list)
    threads: int = 0

    def timed(self) -> list[Step]:
        return self.steps[1:]  # the first step is the warm-up

    def median(self, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.timed())

    @property
    def tokens_per_step(self) -> float:
        return statistics.mean(s.tokens for s in self.timed())

    @property
    def completions_per_s(self) -> float:
        return self.timed()[0].completions / self.median("seconds")

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.median("seconds")


def save_reward_model(directory: Path) -> None:
    from chatforge.train.reward import load_reward_base

    model, tokenizer = load_reward_base(MODEL)
    models.save_checkpoint(model, tokenizer, directory)


def load_reward_model(directory: Path) -> Any:
    from chatforge.train.reward import RewardModel

    return RewardModel.load(directory)


def run_chatforge(reward: TimedReward, args: argparse.Namespace, out: Path) -> Result:
    from chatforge.generation import TorchEngine
    from chatforge.train.ppo import PPOConfig, PPOTrainer

    policy, tokenizer = models.load_model(MODEL, dtype=torch.float32)
    config = PPOConfig(
        output_dir=str(out),
        steps=args.steps + 1,
        batch_size=args.completions,
        mini_batch_size=args.completions,
        ppo_epochs=1,
        learning_rate=args.lr,
        max_new_tokens=args.max_new_tokens,
        temperature=1.0,
        kl_coef=args.kl_coef,
        max_grad_norm=1.0,
        seed=args.seed,
        bf16=args.precision == "bf16",
        threads=args.threads,
        tensorboard=False,
        progress=False,
    )
    result = Result("chatforge PPO", f"{args.completions} prompts x 1")

    def on_log(record: dict[str, Any]) -> None:
        if record.get("kind") == "train":
            tokens = int(record["response_tokens"])
            step = Step(record["step_time"], record["generation_time"], reward.take(), tokens, args.completions)
            result.steps.append(step)

    trainer = PPOTrainer(config, policy, tokenizer, reward, conversations(), on_log=on_log)
    if args.decode_dtype != "default":
        trainer.engine = TorchEngine(policy, tokenizer, decode_dtype=args.decode_dtype)
    print(f"# chatforge samples with the {trainer.engine.decoder_name} decoder", flush=True)
    if not args.natural:
        trainer.engine.stop_token_ids = frozenset()  # every response runs to max_new_tokens
    reward.take()
    trainer.train()
    result.threads = torch.get_num_threads()
    del trainer, policy
    gc.collect()
    return result


def run_trl(reward: TimedReward, args: argparse.Namespace, out: Path) -> Result:
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from chatforge import chat

    policy, tokenizer = models.load_model(MODEL, dtype=torch.float32)
    prompts_per_step = args.completions // args.generations
    result = Result("TRL GRPO", f"{prompts_per_step} prompts x {args.generations}")

    def reward_fn(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        # As chatforge does (rollout.score_rollouts, empty_reward -1): an empty reply is not scored.
        items = [[*chat.parse_messages(p), *chat.parse_messages(c)] for p, c in zip(prompts, completions, strict=True)]
        keep = [i for i, item in enumerate(items) if item[-1].content.strip()]
        out = [-1.0] * len(items)
        for i, value in zip(keep, reward.score([items[i] for i in keep]) if keep else [], strict=True):
            out[i] = value
        return out

    config = GRPOConfig(
        output_dir=str(out),
        max_steps=args.steps + 1,
        per_device_train_batch_size=args.completions,
        num_generations=args.generations,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        max_completion_length=args.max_new_tokens,
        generation_kwargs=None if args.natural else {"min_new_tokens": args.max_new_tokens},
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=args.kl_coef,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        disable_dropout=True,
        # TRL's GRPOConfig defaults to gradient checkpointing (one more forward inside the backward); chatforge does
        # not checkpoint, so it is off unless --trl-gradient-checkpointing asks for TRL's default.
        gradient_checkpointing=args.trl_gradient_checkpointing,
        seed=args.seed,
        use_cpu=True,
        bf16=args.precision == "bf16",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        log_completions=False,
    )
    dataset = Dataset.from_list([{"prompt": c} for c in conversations()])
    trainer = GRPOTrainer(
        model=policy, reward_funcs=[reward_fn], args=config, train_dataset=dataset, processing_class=tokenizer
    )

    # Measurement only: time the sampling call and count its tokens, leaving what it does unchanged.
    sampling = {"seconds": 0.0, "tokens": 0}
    generate_single_turn = trainer._generate_single_turn

    def timed_generate(*a: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        completion_ids, logprobs = generate_single_turn(*a, **kw)
        sampling["seconds"] += time.perf_counter() - start
        sampling["tokens"] += sum(len(ids) for ids in completion_ids)
        return completion_ids, logprobs

    trainer._generate_single_turn = timed_generate  # type: ignore[method-assign]

    class StepTimer(TrainerCallback):
        started = 0.0

        def on_step_begin(self, *a: Any, **kw: Any) -> None:
            sampling.update(seconds=0.0, tokens=0)
            reward.take()
            self.started = time.perf_counter()

        def on_step_end(self, *a: Any, **kw: Any) -> None:
            seconds = time.perf_counter() - self.started
            result.steps.append(
                Step(seconds, sampling["seconds"], reward.take(), int(sampling["tokens"]), args.completions)
            )

    trainer.add_callback(StepTimer())
    trainer.remove_callback(PrinterCallback)  # its end-of-training summary would clutter the table
    trainer.train()
    result.threads = torch.get_num_threads()
    del trainer, policy
    gc.collect()
    return result


def report(results: list[Result]) -> None:
    print(
        f"{'trainer':28} {'layout':16} {'step s':>7} {'generate s':>10} {'score s':>8} {'train s':>8} "
        f"{'gen %':>6} {'tokens/step':>11} {'compl/s':>8} {'tokens/s':>9}"
    )
    for r in results:
        step, gen = r.median("seconds"), r.median("generate")
        print(
            f"{r.name:28} {r.layout:16} {step:7.2f} {gen:10.2f} {r.median('score'):8.2f} {r.median('train'):8.2f} "
            f"{100 * gen / step:5.0f}% {r.tokens_per_step:11.1f} {r.completions_per_s:8.3f} {r.tokens_per_s:9.1f}"
        )
    ours = results[0]
    for theirs in results[1:]:
        print(
            f"ratio chatforge/{theirs.name}: {ours.completions_per_s / theirs.completions_per_s:.2f}x completions/s, "
            f"{ours.tokens_per_s / theirs.tokens_per_s:.2f}x tokens/s "
            f"(generate {theirs.median('generate') / ours.median('generate'):.2f}x faster, "
            f"train {theirs.median('train') / ours.median('train'):.2f}x faster)"
        )


def run_side(args: argparse.Namespace) -> int:
    """One trainer in this (fresh) process; its steps go to --result as JSON."""
    models.set_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' gradient_checkpointing renames
    if args.tuned_malloc:
        models.keep_freed_memory()  # what chatforge's trainers do for themselves (see models.keep_freed_memory)
    reward = TimedReward(load_reward_model(Path(args.reward_dir)))
    with tempfile.TemporaryDirectory(prefix=f"chatforge-bench-ppo-{args.side}-") as tmp:
        run = run_chatforge if args.side == "chatforge" else run_trl
        result = run(reward, args, Path(tmp) / "out")
    if args.tuned_malloc:
        result.name += " + chatforge malloc"
    Path(args.result).write_text(json.dumps({
        "name": result.name, "layout": result.layout, "threads": result.threads,
        "steps": [vars(step) for step in result.steps],
    }))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--completions", type=int, default=8, help="completions per step, both trainers")
    parser.add_argument("--generations", type=int, default=4, help="TRL num_generations (completions per prompt)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--natural", action="store_true", help="stop at end-of-turn instead of forcing the length")
    parser.add_argument("--kl-coef", type=float, default=0.05, help="chatforge kl_coef = TRL beta (> 0)")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", choices=["float32", "bf16"], default="float32",
                        help="training forward/backward of both trainers: float32, or bf16 autocast (weights float32)")
    parser.add_argument("--decode-dtype", choices=["default", "float32", "bfloat16"], default="default",
                        help="chatforge's sampling dtype (default: its engine's, bfloat16 on AVX512-BF16 CPUs)")
    parser.add_argument(
        "--trl-gradient-checkpointing", action="store_true", help="keep TRL's default gradient checkpointing"
    )
    parser.add_argument("--no-trl-tuned", action="store_true",
                        help="skip the third run (TRL with chatforge's malloc setting)")
    # internal: one trainer per process
    parser.add_argument("--side", choices=["chatforge", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--reward-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--tuned-malloc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.generations < 2 or args.completions % args.generations:
        parser.error("--generations must be >= 2 and divide --completions (GRPO needs a group per prompt)")
    if args.kl_coef <= 0:
        parser.error("--kl-coef must be > 0 (the comparison keeps a reference model on both sides)")
    if args.side:
        return run_side(args)
    models.set_threads(args.threads)
    import trl

    lengths = "natural (end-of-turn)" if args.natural else "forced"
    print(
        f"# one RL step: {MODEL}, training in {args.precision}, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"trl {trl.__version__}\n# {args.completions} completions/step, max {args.max_new_tokens} new tokens "
        f"({lengths}), KL coef {args.kl_coef}, 1 optimizer step/step; median of {args.steps} steps after 1 warm-up\n"
        f"# each trainer in its own process, one after the other",
        flush=True,
    )
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--no-trl-tuned"]
    runs = [("chatforge", []), ("trl", [])] + ([] if args.no_trl_tuned else [("trl", ["--tuned-malloc"])])
    results = []
    with tempfile.TemporaryDirectory(prefix="chatforge-bench-ppo-") as tmp:
        save_reward_model(Path(tmp) / "rm")
        for i, (side, extra) in enumerate(runs):
            out = Path(tmp) / f"result-{i}.json"
            subprocess.run(
                [sys.executable, __file__, *forwarded, "--side", side, "--reward-dir", str(Path(tmp) / "rm"),
                 "--result", str(out), *extra],
                check=True,
            )
            data = json.loads(out.read_text())
            results.append(Result(data["name"], data["layout"], [Step(**s) for s in data["steps"]], data["threads"]))
    for r in results:
        if r.threads != results[0].threads:
            print(f"warning: {r.name} ran with {r.threads} threads", file=sys.stderr)
        if len(r.steps) != args.steps + 1:
            print(f"warning: {r.name} recorded {len(r.steps)} steps, expected {args.steps + 1}", file=sys.stderr)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
