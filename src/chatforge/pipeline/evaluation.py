"""The evaluation stages of `chatforge run`: every number here comes from `chatforge.evaluate`, whose prompts and
judges no training stage reads.

    eval_stage       a model answers the test prompts (behaviour categories and held-out ShareGPT requests);
                     pass rates per category with 95% intervals
    select_stage     a round's checkpoints answer the dev prompts; the reward model's score of those answers (the
                     proxy the policy was trained on) beside the independent judges' pass rate and the KL: the
                     over-optimisation curve; the checkpoint the judges rate highest is kept
    winrate_stage    the final policy's test answers against SFT's, by the pairwise judge, with the sign test
    guards_stage     instruction following and MT-Bench, general skills an assistant must not lose
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chatforge.pipeline.training import Work, engine
from chatforge.recipe import Recipe


def evaluation_engine(model_path: str, recipe: Recipe) -> Any:
    """The model as `chatforge serve` and `chatforge chat` run it (decode precision "auto": bf16 where the CPU does
    it natively), whatever precision the recipe trains in: the evaluation grades what users get."""
    return engine(model_path, recipe, decode_dtype="auto")


def test_prompts(recipe: Recipe) -> list[Any]:
    from chatforge.evaluate.prompts import CATEGORIES, evaluation_prompts

    prompts = evaluation_prompts("test", categories=CATEGORIES, per_category=recipe.evaluation.per_category, seed=recipe.seed)
    if recipe.evaluation.general:
        prompts += evaluation_prompts("test", categories=["general"], per_category=recipe.evaluation.general, seed=recipe.seed)
    return prompts


def dev_prompts(recipe: Recipe) -> list[Any]:
    from chatforge.evaluate.prompts import CATEGORIES, evaluation_prompts

    per = recipe.evaluation.dev_per_category
    return evaluation_prompts("dev", categories=[*CATEGORIES, "general"], per_category=per, seed=recipe.seed)


def eval_stage(recipe: Recipe, model_path: str) -> Work:
    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.evaluate.behaviour import evaluate_behaviours

        report = evaluate_behaviours(
            evaluation_engine(model_path, recipe), test_prompts(recipe), model_name=model_path, max_new_tokens=recipe.evaluation.max_new_tokens
        )
        report.write_json(stage_dir / "behaviours.json")
        return {"behaviours": str(stage_dir / "behaviours.json"), "model": model_path}, {"pass_rates": report.pass_rates()}

    return work


def macro_pass_rate(pass_rates: dict[str, dict[str, float]]) -> float:
    """The mean of the per-category pass rates: every behaviour counts the same, however many prompts it has."""
    rates = [r["rate"] for c, r in pass_rates.items() if c != "all"]
    return sum(rates) / len(rates) if rates else 0.0


def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, model directory) of every checkpoint a trainer wrote, by step."""
    found = []
    for path in run_dir.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and (path / "model" / "config.json").is_file():
            found.append((int(step), path / "model"))
    return sorted(found)


def _kl_at(metrics_path: Path, step: int) -> float | None:
    if not metrics_path.is_file():
        return None
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if record.get("kind") == "train" and record.get("step") == step and "kl" in record:
            return float(record["kl"])
    return None


def select_stage(recipe: Recipe, start_policy: str, policy_run: str, reward_model: str | None) -> Work:
    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.evaluate.behaviour import evaluate_behaviours

        prompts = dev_prompts(recipe)
        candidates = [(0, start_policy), *((step, str(path)) for step, path in _checkpoints(Path(policy_run)))]
        scorer = None
        if reward_model is not None:
            from chatforge.train.reward import RewardModel

            scorer = RewardModel.load(reward_model)
        curve: list[dict[str, Any]] = []
        for step, path in candidates:
            report = evaluate_behaviours(evaluation_engine(path, recipe), prompts, model_name=path, max_new_tokens=recipe.evaluation.max_new_tokens)
            rates = report.pass_rates()
            proxy = None
            if scorer is not None:
                items = [(list(g.answer.prompt.messages), g.answer.reply) for g in report.graded]
                scores = scorer.score(items)
                proxy = sum(scores) / len(scores)
            curve.append(
                {
                    "step": step,
                    "model": path,
                    "independent": macro_pass_rate(rates),
                    "pass_rates": {c: r["rate"] for c, r in rates.items()},
                    "proxy_reward": proxy,
                    "kl": 0.0 if step == 0 else _kl_at(Path(policy_run) / "metrics.jsonl", step),
                }
            )
        best = max(curve, key=lambda c: (c["independent"], -c["step"]))
        (stage_dir / "curve.json").write_text(json.dumps(curve, indent=2) + "\n")
        return {"model": str(best["model"]), "curve": str(stage_dir / "curve.json")}, {
            "chosen_step": best["step"],
            "chosen_independent": best["independent"],
            "last_step": curve[-1]["step"],
            "last_independent": curve[-1]["independent"],
        }

    return work


def winrate_stage(policy_eval: str, baseline_eval: str) -> Work:
    """The final policy's test answers against the baseline's, by the evaluation's pairwise judge (no new
    generation: both answered the same prompts in their eval stages)."""

    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.evaluate.behaviour import load_report
        from chatforge.evaluate.winrate import win_rate

        result = win_rate(load_report(policy_eval).answers(), load_report(baseline_eval).answers())
        (stage_dir / "winrate.json").write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False) + "\n")
        summary = result.total.to_dict()
        summary["by_category"] = {c: t.to_dict() for c, t in sorted(result.by_category.items())}
        return {"winrate": str(stage_dir / "winrate.json")}, summary

    return work


def guards_stage(recipe: Recipe, model_paths: dict[str, str]) -> Work:
    """Instruction following (IFEval's verifiers) and MT-Bench (the questions with reference answers) for each
    named model, and whether the final policy is worse than SFT beyond chance (McNemar on instruction following)."""

    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.data.mtbench import REFERENCE_CATEGORIES, mtbench_questions
        from chatforge.evaluate import instructions, mtbench

        metrics: dict[str, Any] = {}
        reports = {}
        questions = [q for q in mtbench_questions() if q.category in REFERENCE_CATEGORIES]
        for name, path in model_paths.items():
            generator = evaluation_engine(path, recipe)
            followed = instructions.evaluate_instructions(generator, model_name=path, max_new_tokens=recipe.evaluation.max_new_tokens)
            bench = mtbench.evaluate_mtbench(generator, questions, model_name=path, max_new_tokens=recipe.evaluation.max_new_tokens)
            followed.write_json(stage_dir / f"{name}-instructions.json")
            bench.write_json(stage_dir / f"{name}-mtbench.json")
            reports[name] = followed
            metrics[name] = {
                "instructions": {k: v.to_dict() for k, v in followed.metrics().items()},
                "mtbench_chrf": {k: v.to_dict() for k, v in bench.chrf_scores().items()},
                "mtbench_accuracy": {k: v.to_dict() for k, v in bench.accuracy().items()},
            }
        if "sft" in reports and "final" in reports:
            metrics["final_vs_sft_instructions"] = instructions.compare(reports["sft"], reports["final"]).to_dict()
        return {"dir": str(stage_dir)}, metrics

    return work
