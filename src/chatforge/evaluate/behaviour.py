"""Behaviour evaluation: answer the evaluation's prompts greedily, grade each reply with the category's judge.

The prompts (`chatforge.evaluate.prompts`) are scenarios and harmful requests the model never trained on; the
judges (`chatforge.evaluate.judges`) are the evaluation's own. A report keeps every reply and verdict, so it can be
read, re-graded with today's judges (`rejudge`) and compared pairwise with another model's (`evaluate.pairwise`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatforge.evaluate.judges import judge
from chatforge.evaluate.prompts import EvalPrompt
from chatforge.evaluate.stats import wilson_interval
from chatforge.generation import SamplingParams, TorchEngine


@dataclass
class Answer:
    prompt: EvalPrompt
    reply: str
    cut_off: bool = False  # stopped by the token limit


@dataclass
class Graded:
    answer: Answer
    passed: bool
    reason: str


@dataclass
class BehaviourReport:
    model: str
    graded: list[Graded] = field(default_factory=list)

    def by_category(self) -> dict[str, list[Graded]]:
        out: dict[str, list[Graded]] = defaultdict(list)
        for g in self.graded:
            out[g.answer.prompt.category].append(g)
        return dict(out)

    def pass_rates(self) -> dict[str, dict[str, float]]:
        """Per category (and "all" over the behaviour categories): rate, n and the 95% Wilson interval."""
        out = {}
        groups = self.by_category()
        behaviour = [g for c, gs in groups.items() if c != "general" for g in gs]
        # "all" is over the behaviour categories; ordinary requests ("general") have their own row
        for name, items in [*sorted(groups.items()), ("all", behaviour)]:
            if not items:
                continue
            passed = sum(g.passed for g in items)
            low, high = wilson_interval(passed, len(items))
            out[name] = {"rate": passed / len(items), "n": len(items), "passed": passed, "low": low, "high": high}
        return out

    def format(self) -> str:
        lines = [f"behaviour pass rates for {self.model} (95% Wilson intervals)"]
        for category, r in self.pass_rates().items():
            lines.append(
                f"  {category:14} {100 * r['rate']:5.1f}%  [{100 * r['low']:5.1f}, {100 * r['high']:5.1f}]  (n={int(r['n'])})"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "pass_rates": self.pass_rates(),
            "results": [
                {
                    "prompt": g.answer.prompt.to_dict(),
                    "reply": g.answer.reply,
                    "cut_off": g.answer.cut_off,
                    "passed": g.passed,
                    "reason": g.reason,
                }
                for g in self.graded
            ],
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    def answers(self) -> list[Answer]:
        return [g.answer for g in self.graded]


def answer_prompts(
    engine: TorchEngine, prompts: Sequence[EvalPrompt], *, max_new_tokens: int = 128, batch_size: int = 16
) -> list[Answer]:
    """Each prompt answered once, greedily (the answer a user gets at temperature 0)."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0)
    answers = []
    # Similar lengths together: a batch runs as long as its longest prompt needs.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].text))
    by_index: dict[int, Answer] = {}
    for start in range(0, len(order), batch_size):
        batch = [prompts[i] for i in order[start : start + batch_size]]
        completions = engine.generate([engine.encode_chat(list(p.messages)) for p in batch], params)
        for index, prompt, completion in zip(order[start : start + batch_size], batch, completions, strict=True):
            by_index[index] = Answer(prompt, completion.text.strip(), completion.finish_reason == "length")
    answers = [by_index[i] for i in range(len(prompts))]
    return answers


def grade(answers: Sequence[Answer], model_name: str = "model") -> BehaviourReport:
    report = BehaviourReport(model_name)
    for a in answers:
        verdict = judge(a.prompt, a.reply)
        report.graded.append(Graded(a, verdict.passed, verdict.reason))
    return report


def evaluate_behaviours(
    engine: TorchEngine, prompts: Sequence[EvalPrompt], *, model_name: str = "model", max_new_tokens: int = 128
) -> BehaviourReport:
    return grade(answer_prompts(engine, prompts, max_new_tokens=max_new_tokens), model_name)


def load_report(path: str | Path) -> BehaviourReport:
    """A saved report with today's judges applied to its saved replies (no generation: the same replies)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    answers = [Answer(EvalPrompt.from_dict(r["prompt"]), r["reply"], bool(r.get("cut_off"))) for r in data["results"]]
    return grade(answers, str(data["model"]))
