"""`chatforge run`: the whole recipe, stage by stage, in one run directory (see `chatforge.recipe`).

    base_eval      behaviour pass rates of the starting model (held-out prompts)
    sft            supervised fine-tuning on the recipe's mixture
    sft_eval       behaviour pass rates after SFT
    round_N/sample K responses per prompt from the current policy      (N = 1..rounds)
    round_N/rate   ranked by the simulated panel (agreement measured)
    round_N/reward a reward model on every comparison so far, from the SFT model
    round_N/ppo    PPO against that reward model, KL to the SFT policy
    round_N/eval   behaviour pass rates, and the win rate over SFT by a held-out rater
    report         report.html, and RUN/chat: the final policy, ready for `chatforge chat`

Each stage calls the library (the trainers, the sampler, the raters, the evaluators): this module only wires them
and records what they did.
"""

from __future__ import annotations

import math
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatforge import models
from chatforge.recipe import Recipe, RunDirectory

Log = Callable[[str], None]


def _print(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _engine(model_path: str, recipe: Recipe) -> Any:
    from chatforge.generation import TorchEngine

    models.set_threads(recipe.threads)
    model, tokenizer = models.load_model(model_path)
    return TorchEngine(model, tokenizer, decode_dtype=recipe.decode_dtype)


def behaviour_stage(recipe: Recipe, model_path: str) -> Callable[[Path], tuple[dict[str, str], dict[str, Any]]]:
    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.evaluate.behaviour import evaluate_behaviours, heldout_prompts

        prompts = heldout_prompts(recipe.evaluation.behaviours_per_category, seed=recipe.seed)
        report = evaluate_behaviours(
            _engine(model_path, recipe),
            prompts,
            model_name=model_path,
            max_new_tokens=recipe.evaluation.max_new_tokens,
        )
        report.write_json(stage_dir / "behaviours.json")
        return {"behaviours": str(stage_dir / "behaviours.json")}, {"pass_rates": report.pass_rates()}

    return work


def sft_stage(recipe: Recipe) -> Callable[[Path], tuple[dict[str, str], dict[str, Any]]]:
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


def sample_stage(recipe: Recipe, policy: str, round_index: int) -> Callable[[Path], tuple[dict[str, str], dict[str, Any]]]:
    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        import itertools

        from chatforge.generation import SamplingParams
        from chatforge.raters.simulated import save_tasks, with_reference
        from chatforge.sampling import SamplingReport, load_prompts, sample_tasks

        prompts = load_prompts(recipe.comparisons.prompts, seed=recipe.seed)
        random.Random(recipe.seed * 1000 + round_index).shuffle(prompts)
        report = SamplingReport()
        params = SamplingParams(
            max_new_tokens=recipe.comparisons.max_new_tokens,
            temperature=recipe.comparisons.temperature,
            top_p=0.95,
            seed=recipe.seed + round_index,
        )
        tasks = sample_tasks(
            _engine(policy, recipe), prompts, k=recipe.comparisons.k, params=params, model_name=policy, report=report
        )
        tasks = itertools.islice(tasks, recipe.comparisons.n)
        if recipe.comparisons.with_reference:
            tasks = (with_reference(task) for task in tasks)
        path = save_tasks(stage_dir / "tasks.jsonl", tasks)
        (stage_dir / "sampling.txt").write_text(report.format() + "\n")
        return {"tasks": str(path)}, {"tasks": report.tasks, "redraws": report.redraws}

    return work


def rate_stage(recipe: Recipe, tasks_path: str) -> Callable[[Path], tuple[dict[str, str], dict[str, Any]]]:
    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.data.comparisons import save_comparisons
        from chatforge.raters.simulated import calibrated_panel, load_tasks, rate_tasks

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


def reward_stage(recipe: Recipe, sft_model: str, comparison_files: list[str]) -> Callable[[Path], tuple[dict[str, str], dict[str, Any]]]:
    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.data.comparisons import load_comparisons, without_model
        from chatforge.raters.simulated import REFERENCE_MODEL
        from chatforge.train.reward import RewardConfig, RewardTrainer, load_reward_base

        models.set_threads(recipe.threads)
        comparisons = [c for path in comparison_files for c in load_comparisons(path)]
        random.Random(recipe.seed).shuffle(comparisons)
        held = max(1, len(comparisons) // 5)
        # Held-out accuracy is measured on the policy's own samples: a demonstration ranked among them (with_reference)
        # is easy to tell apart and would flatter the number.
        evaluation = [e for c in comparisons[:held] if (e := without_model(c, REFERENCE_MODEL)) is not None]
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
        result = RewardTrainer(config, model, tokenizer, comparisons[held:], evaluation or None).train()
        assert result.final_dir is not None
        return (
            {"model": str(result.final_dir), "metrics": str(stage_dir / "run" / "metrics.jsonl")},
            {"eval_accuracy": result.eval_accuracy, "train_accuracy": result.train_accuracy, "comparisons": len(comparisons)},
        )

    return work


def ppo_stage(
    recipe: Recipe, policy: str, sft_model: str, reward_model: str, round_index: int
) -> Callable[[Path], tuple[dict[str, str], dict[str, Any]]]:
    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.sampling import load_prompts
        from chatforge.train.ppo import PPOConfig, PPOTrainer
        from chatforge.train.reward import RewardModel

        models.set_threads(recipe.threads)
        model, tokenizer = models.load_model(policy)
        prompts = load_prompts(recipe.ppo.prompts, seed=recipe.seed)
        random.Random(recipe.seed * 7 + round_index).shuffle(prompts)
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
            adaptive_kl_target=recipe.ppo.target_kl,
            ptx_coef=recipe.ppo.ptx_coef,
            truncation_reward=recipe.ppo.truncation_reward,
            decode_dtype=recipe.decode_dtype,
            lora=recipe.ppo.lora,
            seed=recipe.seed + round_index,
            save_every=max(1, recipe.ppo.steps // 3),
            resume=(stage_dir / "run").exists(),
            threads=recipe.threads,
            bf16=recipe.trainer_bf16,
            progress=False,
        )
        # The reference for the KL penalty is the policy this round starts from; round 1 starts from SFT, as in
        # InstructGPT, and later rounds continue from the previous PPO policy.
        result = PPOTrainer(config, model, tokenizer, RewardModel.load(reward_model), prompts, ptx).train()
        assert result.final_dir is not None
        return (
            {"model": str(result.final_dir), "metrics": str(stage_dir / "run" / "metrics.jsonl")},
            {"reward": result.reward, "kl": result.kl, "steps": result.step, "reference": policy, "sft": sft_model},
        )

    return work


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven between wins and losses (ties left
    out) if either policy were as likely to win. Small p: the win rate is not just the rater's noise."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def winrate_stage(
    recipe: Recipe, policy: str, baseline: str, noise: float
) -> Callable[[Path], tuple[dict[str, str], dict[str, Any]]]:
    """Win rate of `policy` over `baseline` by a held-out simulated rater: one more member of the round's panel (the
    same `noise`, as calibrated for that panel) with a seed never used for training data."""

    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        import json

        from chatforge.data.comparisons import Response
        from chatforge.generation import SamplingParams
        from chatforge.raters.simulated import RatingTask, SimulatedRater
        from chatforge.sampling import load_prompts

        prompts = load_prompts("behaviours-eval", seed=recipe.seed)
        random.Random(recipe.seed).shuffle(prompts)
        prompts = prompts[: recipe.evaluation.winrate_prompts]
        params = SamplingParams(max_new_tokens=recipe.evaluation.max_new_tokens, temperature=0)
        answers, cut_off = {}, {}
        for name, path in (("policy", policy), ("baseline", baseline)):
            engine = _engine(path, recipe)
            completions = engine.generate([engine.encode_chat(list(p.context)) for p in prompts], params)
            answers[name] = [c.text.strip() or "(empty)" for c in completions]
            # The judge sees what a reader sees: an answer cut off by the token limit counts against it, exactly as
            # it does for the panel that rated the training comparisons.
            cut_off[name] = [c.finish_reason == "length" for c in completions]
        rater = SimulatedRater(f"heldout-{recipe.raters.heldout_seed}", seed=recipe.raters.heldout_seed, noise=noise)
        wins = ties = 0.0
        records = []
        rows = zip(prompts, answers["policy"], answers["baseline"], cut_off["policy"], cut_off["baseline"], strict=True)
        for item, mine, theirs, mine_cut, theirs_cut in rows:
            if mine == theirs:
                ties += 1
                verdict = "tie"
            else:
                responses = (Response(mine, policy), Response(theirs, baseline))
                task = RatingTask(item.id, item.context, responses, item.category, item.reference, (mine_cut, theirs_cut))
                ranks = rater.ranks(task)
                verdict = "win" if ranks[0] < ranks[1] else ("tie" if ranks[0] == ranks[1] else "loss")
                wins += verdict == "win"
                ties += verdict == "tie"
            records.append(
                {
                    "prompt": item.context[-1].content,
                    "category": item.category,
                    "policy": mine,
                    "baseline": theirs,
                    "policy_cut_off": mine_cut,
                    "baseline_cut_off": theirs_cut,
                    "verdict": verdict,
                }
            )
        rate = (wins + 0.5 * ties) / len(prompts)
        (stage_dir / "winrate.json").write_text(json.dumps({"win_rate": rate, "records": records}, indent=2, ensure_ascii=False))
        losses = len(prompts) - wins - ties
        metrics = {
            "win_rate": rate,
            "wins": wins,
            "ties": ties,
            "losses": losses,
            "n": len(prompts),
            "p_value": sign_test(int(wins), int(losses)),
            "rater_noise": noise,
        }
        return {"winrate": str(stage_dir / "winrate.json")}, metrics

    return work


def run_recipe(recipe: Recipe, out: str | Path, *, log: Log = _print) -> RunDirectory:
    """Run (or resume) every stage of `recipe` in `out`."""
    import yaml

    run = RunDirectory(out)
    recipe_file = run.root / "recipe.yaml"
    as_yaml = yaml.safe_dump(recipe.model_dump(), sort_keys=False)
    if recipe_file.is_file() and recipe_file.read_text() != as_yaml:
        raise ValueError(
            f"{run.root} holds a run of a different recipe; pass another --out, or delete the directory to start over"
        )
    recipe_file.write_text(as_yaml)
    models.keep_freed_memory()  # the whole job trains and samples in this process (see models.keep_freed_memory)
    started = time.time()
    run.run_stage("base_eval", behaviour_stage(recipe, recipe.base), log)
    policy = recipe.base
    if recipe.sft.enabled:
        sft = run.run_stage("sft", sft_stage(recipe), log)
        assert sft.outputs is not None
        policy = sft.outputs["model"]
        run.run_stage("sft_eval", behaviour_stage(recipe, policy), log)
    sft_model = policy
    comparison_files: list[str] = []
    for r in range(1, recipe.rounds + 1):
        sample = run.run_stage(f"round_{r}/sample", sample_stage(recipe, policy, r), log)
        assert sample.outputs is not None
        rated = run.run_stage(f"round_{r}/rate", rate_stage(recipe, sample.outputs["tasks"]), log)
        assert rated.outputs is not None
        comparison_files.append(rated.outputs["comparisons"])
        reward = run.run_stage(f"round_{r}/reward", reward_stage(recipe, sft_model, list(comparison_files)), log)
        assert reward.outputs is not None
        ppo = run.run_stage(f"round_{r}/ppo", ppo_stage(recipe, policy, sft_model, reward.outputs["model"], r), log)
        assert ppo.outputs is not None
        policy = ppo.outputs["model"]
        run.run_stage(f"round_{r}/eval", behaviour_stage(recipe, policy), log)
        assert rated.metrics is not None
        noise = float(rated.metrics.get("noise", recipe.raters.noise))
        run.run_stage(f"round_{r}/winrate", winrate_stage(recipe, policy, sft_model, noise), log)
    def report_stage(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.report import write_report

        if policy != recipe.base:
            from chatforge.atomic import write_dir_atomically

            final_policy = policy  # the value at this point, for the closure

            def copy_policy(tmp: Path) -> None:
                shutil.copytree(final_policy, tmp, dirs_exist_ok=True)

            write_dir_atomically(run.root / "chat", copy_policy)
        path = write_report(run, recipe)
        return {"report": str(path), "chat": str(run.root / "chat")}, {}

    # The report is always rewritten: it summarises whatever the registry holds now.
    run.stages.pop("report", None)
    run.run_stage("report", report_stage, log)
    log(f"run finished in {time.time() - started:.0f} s; report: {run.root / 'report.html'}; chat: chatforge chat --model {run.root / 'chat'}")
    return run
