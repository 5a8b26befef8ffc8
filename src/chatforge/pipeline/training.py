"""The training stages of `chatforge run`: SFT, sampling, rating, the reward model and the policy's round.

Each function returns a stage's `work(stage_dir) -> (outputs, metrics)` for `RunDirectory.run_stage`; it only wires
the library's trainers, sampler and raters together and records what they did.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatforge import models
from chatforge.recipe import Recipe

Work = Callable[[Path], tuple[dict[str, str], dict[str, Any]]]


def engine(model_path: str, recipe: Recipe, *, decode_dtype: str | None = None) -> Any:
    """A generation engine on `model_path`, with the recipe's threads and decode precision (or `decode_dtype`)."""
    from chatforge.generation import TorchEngine

    models.set_threads(recipe.threads)
    model, tokenizer = models.load_model(model_path)
    return TorchEngine(model, tokenizer, decode_dtype=decode_dtype or recipe.decode_dtype)


def sft_stage(recipe: Recipe) -> Work:
    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.data.mixture import Mixture
        from chatforge.train.sft import SFTConfig, SFTTrainer

        models.set_threads(recipe.threads)
        model, tokenizer = models.load_model(recipe.base)
        mixed = Mixture(recipe.sft.mix, tokenizer=tokenizer, size=recipe.sft.mix_size, max_tokens=None, seed=recipe.seed).build()
        (stage_dir / "mixture.txt").write_text(mixed.report.format() + "\n")
        conversations = list(mixed.conversations)
        random.Random(recipe.seed).shuffle(conversations)
        held = int(len(conversations) * recipe.sft.eval_fraction)
        config = SFTConfig(
            output_dir=str(stage_dir / "run"),
            learning_rate=recipe.sft.learning_rate,
            max_steps=recipe.sft.max_steps,
            batch_tokens=recipe.sft.batch_tokens,
            max_seq_len=recipe.sft.max_seq_len,
            warmup_steps=max(1, recipe.sft.max_steps // 10),
            lora=recipe.sft.lora,
            seed=recipe.seed,
            eval_every=max(1, recipe.sft.max_steps // 2) if held else None,
            save_every=max(1, recipe.sft.max_steps // 3),
            resume=(stage_dir / "run").exists(),
            threads=recipe.threads,
            bf16=recipe.trainer_bf16,
            progress=False,
        )
        result = SFTTrainer(config, model, tokenizer, conversations[held:], conversations[:held] or None).train()
        assert result.final_dir is not None
        return (
            {"model": str(result.final_dir), "metrics": str(stage_dir / "run" / "metrics.jsonl")},
            {"train_loss": result.train_loss, "eval_loss": result.eval_loss, "steps": result.step},
        )

    return work


def sample_stage(recipe: Recipe, policy: str, round_index: int) -> Work:
    """K answers per prompt from the current policy, for rating."""

    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        import itertools

        from chatforge.data.tasks import save_tasks, with_reference
        from chatforge.generation import SamplingParams
        from chatforge.sampling import SamplingReport, load_prompt_mix, sample_tasks

        # More prompts than needed: some are skipped (too long, or fewer than two distinct answers).
        prompts = load_prompt_mix(recipe.comparisons.prompts, 2 * recipe.comparisons.n, seed=recipe.seed * 1000 + round_index)
        report = SamplingReport()
        params = SamplingParams(
            max_new_tokens=recipe.comparisons.max_new_tokens,
            temperature=recipe.comparisons.temperature,
            top_p=0.95,
            seed=recipe.seed + round_index,
        )
        tasks = sample_tasks(
            engine(policy, recipe), prompts, k=recipe.comparisons.k, params=params, model_name=policy, report=report
        )
        tasks = itertools.islice(tasks, recipe.comparisons.n)
        if recipe.comparisons.with_reference:
            tasks = (with_reference(task) for task in tasks)
        path = save_tasks(stage_dir / "tasks.jsonl", tasks)
        (stage_dir / "sampling.txt").write_text(report.format() + "\n")
        return {"tasks": str(path)}, {"tasks": report.tasks, "redraws": report.redraws}

    return work


def rate_stage(recipe: Recipe, tasks_path: str) -> Work:
    """The simulated panel ranks each task; its noise is tuned to the recipe's agreement target."""

    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        import math

        from chatforge.data.comparisons import save_comparisons
        from chatforge.data.tasks import load_tasks
        from chatforge.raters.simulated import calibrated_panel, rate_tasks

        tasks = load_tasks(tasks_path)
        size = recipe.raters.size
        panel, noise, measured = calibrated_panel(
            tasks,
            size=size,
            noise=recipe.raters.noise,
            agreement=recipe.raters.agreement if size > 1 else None,
            seed=recipe.seed,
        )
        agreement = None if math.isnan(measured) else measured
        comparisons = rate_tasks(panel, tasks)
        path = save_comparisons(stage_dir / "comparisons.jsonl", comparisons)
        return {"comparisons": str(path)}, {"comparisons": len(comparisons), "noise": noise, "panel_agreement": agreement}

    return work


def reward_stage(recipe: Recipe, sft_model: str, comparison_files: list[str]) -> Work:
    """A reward model, from the SFT model, on every comparison so far; prompts held out whole for its accuracy."""

    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.data.comparisons import load_comparisons, without_model
        from chatforge.data.tasks import REFERENCE_MODEL
        from chatforge.train.reward import RewardConfig, RewardTrainer, load_reward_base, split_by_context

        models.set_threads(recipe.threads)
        comparisons = [c for path in comparison_files for c in load_comparisons(path)]
        train, held = split_by_context(comparisons, recipe.reward.heldout_fraction, recipe.seed)
        # Held-out accuracy is measured on the policy's own samples: a demonstration ranked among them (with_reference)
        # is easy to tell apart and would flatter the number.
        evaluation = [e for c in held if (e := without_model(c, REFERENCE_MODEL)) is not None]
        model, tokenizer = load_reward_base(sft_model, seed=recipe.seed)
        config = RewardConfig(
            output_dir=str(stage_dir / "run"),
            learning_rate=recipe.reward.learning_rate,
            epochs=recipe.reward.epochs,
            batch_prompts=recipe.reward.batch_prompts,
            max_seq_len=recipe.reward.max_seq_len,
            lora=recipe.reward.lora,
            seed=recipe.seed,
            resume=(stage_dir / "run").exists(),
            threads=recipe.threads,
            bf16=recipe.trainer_bf16,
            progress=False,
        )
        result = RewardTrainer(config, model, tokenizer, train, evaluation or None).train()
        assert result.final_dir is not None
        return (
            {"model": str(result.final_dir), "metrics": str(stage_dir / "run" / "metrics.jsonl")},
            {"eval_accuracy": result.eval_accuracy, "train_accuracy": result.train_accuracy, "comparisons": len(comparisons)},
        )

    return work


def _save_every(total_steps: int, checkpoints: int) -> int:
    return max(1, total_steps // checkpoints)


def ppo_stage(recipe: Recipe, policy: str, reward_model: str, round_index: int) -> Work:
    """PPO against the round's reward model; the KL penalty is to the policy this round starts from (round 1
    starts from SFT, as in InstructGPT; later rounds continue from the previous round's chosen checkpoint)."""

    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.sampling import load_prompt_mix
        from chatforge.train.ppo import PPOConfig, PPOTrainer
        from chatforge.train.reward import RewardModel

        models.set_threads(recipe.threads)
        model, tokenizer = models.load_model(policy)
        prompts = load_prompt_mix(recipe.ppo.prompts, recipe.ppo.steps * recipe.ppo.batch_prompts, seed=recipe.seed * 7 + round_index)
        ptx = None
        if recipe.ppo.ptx_coef > 0:
            from chatforge.data.mixture import Mixture

            ptx = list(Mixture(recipe.sft.mix, size=256, max_tokens=None, seed=recipe.seed + round_index).build().conversations)
        config = PPOConfig(
            output_dir=str(stage_dir / "run"),
            steps=recipe.ppo.steps,
            batch_size=recipe.ppo.batch_prompts,
            mini_batch_size=max(1, recipe.ppo.batch_prompts // 2),
            ppo_epochs=recipe.ppo.epochs,
            learning_rate=recipe.ppo.learning_rate,
            max_new_tokens=recipe.ppo.max_new_tokens,
            kl_coef=recipe.ppo.kl_coef,
            adaptive_kl_target=recipe.ppo.adaptive_kl_target,
            ptx_coef=recipe.ppo.ptx_coef,
            truncation_reward=recipe.ppo.truncation_reward,
            decode_dtype=recipe.decode_dtype,
            lora=recipe.ppo.lora,
            seed=recipe.seed + round_index,
            save_every=_save_every(recipe.ppo.steps, recipe.evaluation.checkpoints),
            save_limit=None,
            resume=(stage_dir / "run").exists(),
            threads=recipe.threads,
            bf16=recipe.trainer_bf16,
            progress=False,
        )
        result = PPOTrainer(config, model, tokenizer, RewardModel.load(reward_model), [p.context for p in prompts], ptx).train()
        assert result.final_dir is not None
        return (
            {"model": str(result.final_dir), "run": str(stage_dir / "run"), "metrics": str(stage_dir / "run" / "metrics.jsonl")},
            {"reward": result.reward, "kl": result.kl, "steps": result.step, "reference": policy},
        )

    return work


def dpo_stage(recipe: Recipe, policy: str, comparison_file: str, round_index: int) -> Work:
    """DPO on the round's rankings, from the policy this round starts from (also its reference)."""

    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.data.comparisons import load_comparisons
        from chatforge.train.dpo import DPOConfig, DPOTrainer

        models.set_threads(recipe.threads)
        model, tokenizer = models.load_model(policy)
        comparisons = load_comparisons(comparison_file)
        pairs = sum(len(list(c.pairs())) for c in comparisons)
        steps = max(1, recipe.dpo.epochs * pairs // recipe.dpo.batch_pairs)
        config = DPOConfig(
            output_dir=str(stage_dir / "run"),
            beta=recipe.dpo.beta,
            learning_rate=recipe.dpo.learning_rate,
            epochs=recipe.dpo.epochs,
            batch_pairs=recipe.dpo.batch_pairs,
            seed=recipe.seed + round_index,
            save_every=_save_every(steps, recipe.evaluation.checkpoints),
            save_limit=None,
            resume=(stage_dir / "run").exists(),
            threads=recipe.threads,
            bf16=recipe.trainer_bf16,
            progress=False,
        )
        result = DPOTrainer(config, model, tokenizer, comparisons).train()
        assert result.final_dir is not None
        return (
            {"model": str(result.final_dir), "run": str(stage_dir / "run"), "metrics": str(stage_dir / "run" / "metrics.jsonl")},
            {"loss": result.loss, "accuracy": result.accuracy, "steps": result.step, "pairs": pairs, "reference": policy},
        )

    return work


def best_of_n_stage(recipe: Recipe, policy: str, reward_model: str, round_index: int) -> Work:
    """Best of n samples per prompt by the reward model, then fine-tuning on the winners (rejection sampling)."""

    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        import json

        from chatforge.generation import SamplingParams
        from chatforge.sampling import load_prompt_mix
        from chatforge.train.best_of_n import best_of_n, expert_iteration
        from chatforge.train.reward import RewardModel
        from chatforge.train.sft import SFTConfig

        prompts = load_prompt_mix(recipe.ppo.prompts, recipe.best_of_n.prompts, seed=recipe.seed * 13 + round_index)
        params = SamplingParams(max_new_tokens=recipe.best_of_n.max_new_tokens, temperature=1.0, top_p=0.95, seed=recipe.seed + round_index)
        sampler = engine(policy, recipe)
        winners = best_of_n(sampler, RewardModel.load(reward_model), [p.context for p in prompts], recipe.best_of_n.n, params)
        # A winner cut off by the token limit would teach the policy to stop mid-sentence.
        kept = [w for w in winners if not w.best.truncated]
        (stage_dir / "winners.jsonl").write_text(
            "".join(json.dumps({"context": [m.to_dict() for m in w.context], "reply": w.best.text, "score": w.score}) + "\n" for w in kept)
        )
        if not kept:  # every winner ran into the token limit: nothing fit to learn from, the policy stays as it was
            (stage_dir / "run").mkdir(exist_ok=True)
            return {"model": policy, "run": str(stage_dir / "run")}, {"winners": 0, "steps": 0, "reference": policy}
        model, tokenizer = models.load_model(policy)
        steps = max(1, recipe.best_of_n.epochs * len(kept) // 8)
        config = SFTConfig(
            output_dir=str(stage_dir / "run"),
            learning_rate=recipe.best_of_n.learning_rate,
            max_steps=steps,
            batch_tokens=recipe.sft.batch_tokens,
            max_seq_len=recipe.sft.max_seq_len,
            seed=recipe.seed + round_index,
            save_every=_save_every(steps, recipe.evaluation.checkpoints),
            save_limit=None,
            resume=(stage_dir / "run").exists(),
            threads=recipe.threads,
            bf16=recipe.trainer_bf16,
            progress=False,
        )
        result = expert_iteration(config, model, tokenizer, kept)
        assert result.final_dir is not None
        scores = [w.score for w in kept]
        return (
            {"model": str(result.final_dir), "run": str(stage_dir / "run"), "metrics": str(stage_dir / "run" / "metrics.jsonl")},
            {"winners": len(kept), "mean_best_score": sum(scores) / max(1, len(scores)), "steps": result.step, "reference": policy},
        )

    return work
