"""`chatforge run`: the whole recipe, stage by stage, in one run directory (see `chatforge.recipe`).

    base_eval       the starting model on the evaluation's test prompts (pass rates with intervals)
    sft             supervised fine-tuning on the recipe's mixture
    sft_eval        the SFT model on the same prompts
    round_N/sample  K responses per prompt from the current policy                       (N = 1..rounds)
    round_N/rate    ranked by the simulated panel (agreement measured)
    round_N/reward  a reward model on every comparison so far, from the SFT model
    round_N/policy  the policy trained against it: PPO (KL to the round's starting policy), DPO, or best-of-n
    round_N/select  the round's checkpoints on the dev prompts: proxy reward, independent pass rate and KL side by
                    side; the checkpoint the independent judges rate highest goes on (possibly the round's start)
    adversarial/... the adversarial round (red-teaming, `pipeline.adversarial`): attack, refusals of what worked
                    mixed with replay, checkpoints chosen on dev prompts
    final_eval      the final policy on the test prompts
    winrate         the final policy against SFT on every test prompt, from the evaluation's verdicts
    rlhf_eval       the policy before the adversarial round on the test prompts; adversarial/winrate: after vs before
    redteam_eval    attack success on held-out goals x held-out framings before and after the adversarial round
    guards          instruction following and MT-Bench of SFT and the final policy
    report          report.html, and RUN/chat: the final policy, ready for `chatforge chat`

Training stages live in `pipeline.training`, evaluation stages in `pipeline.evaluation`; this module wires them and
records what they did. Everything the report says comes from `chatforge.evaluate`, which no training stage reads.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatforge import models
from chatforge.pipeline import adversarial, evaluation, training
from chatforge.recipe import Recipe, RunDirectory

Log = Callable[[str], None]


def _print(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def policy_stage(recipe: Recipe, policy: str, reward_model: str, comparison_file: str, round_index: int) -> training.Work:
    if recipe.policy.algorithm == "ppo":
        return training.ppo_stage(recipe, policy, reward_model, round_index)
    if recipe.policy.algorithm == "dpo":
        return training.dpo_stage(recipe, policy, comparison_file, round_index)
    return training.best_of_n_stage(recipe, policy, reward_model, round_index)


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

    def outputs(name: str, work: training.Work) -> dict[str, str]:
        record = run.run_stage(name, work, log)
        assert record.outputs is not None
        return record.outputs

    base_eval = outputs("base_eval", evaluation.eval_stage(recipe, recipe.base))["behaviours"]
    policy, sft_eval = recipe.base, base_eval
    if recipe.sft.enabled:
        policy = outputs("sft", training.sft_stage(recipe))["model"]
        sft_eval = outputs("sft_eval", evaluation.eval_stage(recipe, policy))["behaviours"]
    sft_model = policy
    comparison_files: list[str] = []
    for r in range(1, recipe.rounds + 1):
        tasks = outputs(f"round_{r}/sample", training.sample_stage(recipe, policy, r))["tasks"]
        comparisons = outputs(f"round_{r}/rate", training.rate_stage(recipe, tasks))["comparisons"]
        comparison_files.append(comparisons)
        reward_model = outputs(f"round_{r}/reward", training.reward_stage(recipe, sft_model, list(comparison_files)))["model"]
        trained = outputs(f"round_{r}/policy", policy_stage(recipe, policy, reward_model, comparisons, r))
        policy = outputs(f"round_{r}/select", evaluation.select_stage(recipe, policy, trained["run"], reward_model))["model"]
    before_adversarial = policy
    judge_dir = regression = None
    if recipe.adversarial.enabled:
        judge_dir = outputs("adversarial/judge", adversarial.judge_stage(recipe))["judge"]
        attack = outputs("adversarial/attack", adversarial.attack_stage(recipe, policy, judge_dir))
        regression = str(adversarial.write_regression_set(attack["attempts"], run.path("adversarial") / "regression.jsonl"))
        tuned = outputs("adversarial/train", adversarial.train_stage(recipe, policy, attack["attempts"]))
        policy = outputs("adversarial/select", evaluation.select_stage(recipe, policy, tuned["run"], None))["model"]
    final_eval = sft_eval
    if policy != sft_model:
        final_eval = outputs("final_eval", evaluation.eval_stage(recipe, policy))["behaviours"]
        run.run_stage("winrate", evaluation.winrate_stage(final_eval, sft_eval), log)
    if recipe.adversarial.enabled and judge_dir is not None:
        if before_adversarial not in (sft_model, policy):
            rlhf_eval = outputs("rlhf_eval", evaluation.eval_stage(recipe, before_adversarial))["behaviours"]
            run.run_stage("adversarial/winrate", evaluation.winrate_stage(final_eval, rlhf_eval), log)
        run.run_stage(
            "redteam_eval",
            adversarial.redteam_eval_stage(recipe, {"before": before_adversarial, "after": policy}, judge_dir, regression),
            log,
        )
    if recipe.evaluation.guards:
        named = {"sft": sft_model, "final": policy} if policy != sft_model else {"sft": sft_model}
        run.run_stage("guards", evaluation.guards_stage(recipe, named), log)

    def report_stage(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.report import write_report

        if policy != recipe.base:
            from chatforge.atomic import write_dir_atomically

            final_policy = policy  # the value at this point, for the closure

            def copy_policy(tmp: Path) -> None:
                shutil.copytree(final_policy, tmp, dirs_exist_ok=True)

            write_dir_atomically(run.root / "chat", copy_policy)
        path = write_report(run, recipe)
        return {"report": str(path), "chat": str(run.root / "chat"), "final_policy": policy}, {}

    # The report is always rewritten: it summarises whatever the registry holds now.
    run.stages.pop("report", None)
    run.run_stage("report", report_stage, log)
    log(f"run finished in {time.time() - started:.0f} s; report: {run.root / 'report.html'}; chat: chatforge chat --model {run.root / 'chat'}")
    return run
