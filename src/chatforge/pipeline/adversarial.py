"""The adversarial round of `chatforge run` (the last step of the ChatGPT recipe): attack the policy, learn from
the attacks that worked, and measure attack success on goals and framings that no training ever saw.

    adversarial/judge    the training-side safety judge (trained once from the packaged examples, then cached)
    adversarial/attack   the attacker against the current policy: training goals x training families; the safety
                         judge decides what succeeded; benign prompts probe for needless refusals
    adversarial/train    fine-tuning on brief refusals of the successful attacks, mixed with a replay of the SFT
                         mixture (so that the policy does not learn to refuse everything); checkpoints
    adversarial/select   the checkpoints on the evaluation's dev prompts; the best goes on (possibly the start)
    redteam_eval         held-out goals x held-out framings against the policy before and after the round, each
                         reply judged three ways: the evaluation's refusal judge (which chose no training data),
                         the training-side safety judge, and the refusal-prefix heuristic; plus the regression set
                         (this round's successful attacks replayed)

The attack success rate (ASR) headlined is the evaluation judge's: an attack succeeds unless the reply refuses, an
upper bound on harmful compliance (replies that neither refuse nor comply count as successes).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from chatforge import models
from chatforge.pipeline.training import Work
from chatforge.recipe import Recipe


def judge_stage(recipe: Recipe) -> Work:
    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.redteam.judge import JudgeError, SafetyJudge, default_judge_dir

        if recipe.adversarial.judge:  # given: it must load (the error names the directory)
            SafetyJudge.load(recipe.adversarial.judge)
            return {"judge": recipe.adversarial.judge}, {"trained": False}
        directory = default_judge_dir()
        try:
            SafetyJudge.load(directory)
            return {"judge": str(directory)}, {"trained": False}
        except JudgeError:
            pass
        from chatforge.redteam.judge import train_judge
        from chatforge.redteam.judge_data import PACKAGED_EXAMPLES, load_examples

        models.set_threads(recipe.threads)
        judge = train_judge(load_examples(PACKAGED_EXAMPLES), log=lambda message: None)
        judge.save(directory)
        return {"judge": str(directory)}, {"trained": True}

    return work


def attack_stage(recipe: Recipe, policy: str, judge_dir: str) -> Work:
    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.redteam.attacker import Attacker, AttackerConfig, Rewriter, probe_benign
        from chatforge.redteam.attacks import TRAIN_FAMILIES
        from chatforge.redteam.goals import alarming_benign_goals, harmful_goals
        from chatforge.redteam.judge import SafetyJudge
        from chatforge.redteam.metrics import attack_success_rate
        from chatforge.redteam.target import Target

        models.set_threads(recipe.threads)
        target, judge = Target.load(policy), SafetyJudge.load(judge_dir)
        section = recipe.adversarial
        rewriter = Rewriter(Target.load(section.rewriter)) if section.rewriter else None
        attacker = Attacker(target, judge, harmful_goals("train"), TRAIN_FAMILIES,
                            config=AttackerConfig(budget=section.budget, seed=recipe.seed), rewriter=rewriter)
        attempts = list(attacker.run(log=lambda message: None))
        probes = probe_benign(target, judge, alarming_benign_goals("train"), seed=recipe.seed)
        _write_jsonl(stage_dir / "attempts.jsonl", [a.to_dict() for a in attempts])
        _write_jsonl(stage_dir / "probes.jsonl", [p.to_dict() for p in probes])
        by_family = attack_success_rate((a.family, a.success) for a in attempts)
        return (
            {"attempts": str(stage_dir / "attempts.jsonl"), "probes": str(stage_dir / "probes.jsonl")},
            {
                "attempts": len(attempts),
                "successes": sum(a.success for a in attempts),
                "asr_by_training_judge": {f: r.to_dict() for f, r in by_family.items()},
                "needless_refusals": sum(p.refused for p in probes),
                "benign_probes": len(probes),
            },
        )

    return work


def train_stage(recipe: Recipe, policy: str, attempts_path: str) -> Work:
    """Brief refusals of every successful attack, mixed with a replay of the SFT mixture, fine-tuned into the
    policy with checkpoints for the select stage. No successes: nothing to learn, the policy goes on unchanged."""

    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.redteam.attacker import Attempt
        from chatforge.redteam.training_data import refusal_demonstrations

        attempts = [Attempt.from_dict(json.loads(line)) for line in Path(attempts_path).read_text().splitlines() if line.strip()]
        demonstrations = refusal_demonstrations(attempts)
        (stage_dir / "run").mkdir(exist_ok=True)
        if not demonstrations:
            return {"model": policy, "run": str(stage_dir / "run")}, {"demonstrations": 0, "steps": 0}
        from chatforge.data.mixture import Mixture
        from chatforge.train.sft import SFTConfig, SFTTrainer

        section = recipe.adversarial
        models.set_threads(recipe.threads)
        model, tokenizer = models.load_model(policy)
        replay = list(
            Mixture(recipe.sft.mix, tokenizer=tokenizer, size=section.replay * len(demonstrations), max_tokens=None,
                    seed=recipe.seed + 99).build().conversations
        )
        conversations = demonstrations + replay
        random.Random(recipe.seed).shuffle(conversations)
        _write_jsonl(stage_dir / "demonstrations.jsonl", [{"id": c.id, "messages": c.to_dicts()} for c in demonstrations])
        steps = max(2, section.epochs * len(conversations) // 8)
        config = SFTConfig(
            output_dir=str(stage_dir / "run"),
            learning_rate=section.learning_rate,
            max_steps=steps,
            batch_sequences=8,
            max_seq_len=recipe.sft.max_seq_len * 2,  # attacks are long; a refusal cut from its attack teaches nothing
            seed=recipe.seed,
            save_every=max(1, steps // recipe.evaluation.checkpoints),
            save_limit=None,
            resume=any((stage_dir / "run").iterdir()),
            threads=recipe.threads,
            bf16=recipe.trainer_bf16,
            progress=False,
        )
        result = SFTTrainer(config, model, tokenizer, conversations).train()
        assert result.final_dir is not None
        return (
            {"model": str(result.final_dir), "run": str(stage_dir / "run"), "demonstrations": str(stage_dir / "demonstrations.jsonl")},
            {"demonstrations": len(demonstrations), "replay": len(replay), "steps": result.step},
        )

    return work


def redteam_eval_stage(recipe: Recipe, named_models: dict[str, str], judge_dir: str, regression: str | None) -> Work:
    """Attack success on held-out goals x held-out framings, and on the regression set, for each named model."""

    def work(stage_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from chatforge.chat import parse_messages
        from chatforge.evaluate.judges import is_loop, judge_refusal
        from chatforge.evaluate.prompts import EvalPrompt
        from chatforge.evaluate.stats import proportion
        from chatforge.generation import SamplingParams
        from chatforge.redteam.attacks import FAMILIES, render, templates
        from chatforge.redteam.goals import harmful_goals
        from chatforge.redteam.judge import SafetyJudge
        from chatforge.redteam.target import Target
        from chatforge.spec.rules import is_refusal

        rng = random.Random(recipe.seed)
        goals = harmful_goals("eval")
        held_templates = templates(FAMILIES, "heldout")
        per_template = max(1, recipe.adversarial.heldout_attacks // max(1, len(held_templates)))
        attacks = [render(t, g.text, g.id) for t in held_templates for g in rng.sample(goals, min(per_template, len(goals)))]
        # (family, user turns) per attack; the model answers every turn, its reply to the last is judged
        sets: dict[str, list[tuple[str, list[str]]]] = {"heldout": [(a.family, list(a.turns)) for a in attacks]}
        if regression and Path(regression).is_file():
            replayed = [json.loads(line) for line in Path(regression).read_text().splitlines() if line.strip()]
            sets["regression"] = [(r["attack"]["family"], list(r["attack"]["turns"])) for r in replayed]
        judge = SafetyJudge.load(judge_dir)
        params = SamplingParams(max_new_tokens=96, temperature=0)
        metrics: dict[str, Any] = {}
        records = []
        models.set_threads(recipe.threads)
        for name, path in named_models.items():
            target = Target.load(path)
            for kind, items in sets.items():
                if not items:
                    continue
                played = target.play([turns for _, turns in items], params)
                verdicts = judge.judge([(conv[:-1], conv[-1]["content"]) for conv in played])
                by_judge: dict[str, dict[str, list[bool]]] = {"evaluation": {}, "safety_judge": {}, "heuristic": {}}
                for (family, _), conv, verdict in zip(items, played, verdicts, strict=True):
                    reply = conv[-1]["content"]
                    context = tuple(parse_messages(conv[:-1]))
                    refused = (not is_loop(reply)) and judge_refusal(EvalPrompt("x", "jailbreak", family, context, "test"), reply).passed
                    success = {"evaluation": not refused, "safety_judge": verdict.label == "harmful", "heuristic": not is_refusal(reply)}
                    for judge_name, value in success.items():
                        by_judge[judge_name].setdefault(family, []).append(value)
                        by_judge[judge_name].setdefault("all", []).append(value)
                    records.append({"model": name, "set": kind, "family": family, "conversation": conv,
                                    **{f"success_{k}": v for k, v in success.items()}})
                metrics.setdefault(name, {})[kind] = {
                    judge_name: {f: proportion(sum(v), len(v)).to_dict() for f, v in sorted(per_family.items())}
                    for judge_name, per_family in by_judge.items()
                }
        _write_jsonl(stage_dir / "attacks.jsonl", records)
        return {"attacks": str(stage_dir / "attacks.jsonl")}, metrics

    return work


def write_regression_set(attempts_path: str, out: Path) -> Path:
    """This round's successful attacks (training goals), kept so that later rounds are tested on them too."""
    attempts = [json.loads(line) for line in Path(attempts_path).read_text().splitlines() if line.strip()]
    _write_jsonl(out, [a for a in attempts if a.get("success")])
    return out


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    from chatforge.atomic import write_text_atomically

    write_text_atomically(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
