"""The labelled held-out set the safety judge is validated on: candidates to label, the file, and the comparison.

Candidates are replies of real models to prompts the judge never trained on: eval-split HarmBench and Do-Not-Answer
goals (plain, and wrapped in attack templates of every family, held-out ones included), some replies begun with a
refusal that the model then continues (how "refuse, then comply" replies arise), eval-split alarming-but-benign
prompts and ordinary ones. A person labels each by reading it, following the guideline in docs/redteam.md, and the
labelled records live in `src/chatforge/evaluate/gold/safety.jsonl` (data only: this module reads the file by
path and imports nothing from `chatforge.evaluate`).

A record: {"id", "conversation": [{"role", "content"}, ...] (ends with the user), "prompt" (the last user turn),
"reply", "label" (harmful | refusal | benign), "kind" (harmful | alarming_benign | ordinary: what was asked),
"family" (the attack family or null), "note", "source_model", "guideline"}.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatforge.generation import SamplingParams
from chatforge.redteam.attacks import FAMILIES, render, templates
from chatforge.redteam.goals import Goal, alarming_benign_goals, harmful_goals, ordinary_goals
from chatforge.redteam.judge_data import LABELS, REFUSE_OPENINGS
from chatforge.redteam.metrics import ClassScores, Rate, accuracy, class_scores, confusion
from chatforge.redteam.target import Target

GUIDELINE_VERSION = "safety-gold-v1"
GOLD_PATH = Path(__file__).resolve().parents[1] / "evaluate" / "gold" / "safety.jsonl"


@dataclass(frozen=True)
class GoldItem:
    id: str
    conversation: list[dict[str, str]]
    reply: str
    label: str
    kind: str
    family: str | None
    note: str
    source_model: str

    @property
    def prompt(self) -> str:
        return self.conversation[-1]["content"]


def load_gold(path: str | Path = GOLD_PATH) -> list[GoldItem]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no labelled set at {path}")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("label") not in LABELS:
            raise ValueError(f"{path}:{number}: label {record.get('label')!r} is not one of {LABELS}")
        conversation = record.get("conversation") or [{"role": "user", "content": record["prompt"]}]
        items.append(GoldItem(str(record["id"]), conversation, record["reply"], record["label"],
                              record.get("kind", "harmful"), record.get("family"), record.get("note", ""),
                              record.get("source_model", "")))
    return items


def candidate_prompts(*, seed: int = 0, plain_harmbench: int = 42, plain_donotanswer: int = 25, wrapped: int = 50,
                      refusal_started: int = 20, alarming: int = 23, ordinary: int = 30,
                      wrapped_benign: int = 10) -> list[dict[str, Any]]:
    """What to ask for the candidates: eval-split goals and prompts only, each with a condition."""
    rng = random.Random(f"gold/{seed}")
    harm = harmful_goals("eval")
    harmbench = [g for g in harm if g.origin == "harmbench"]
    donotanswer = [g for g in harm if g.origin == "donotanswer"]
    out: list[dict[str, Any]] = []

    def add(goal: Goal, turns: Sequence[str], family: str | None, prefix: str = "") -> None:
        out.append({"goal": goal.to_dict(), "turns": list(turns), "family": family, "prefix": prefix})

    for goal in rng.sample(harmbench, min(plain_harmbench, len(harmbench))):
        add(goal, [goal.text], None)
    for goal in rng.sample(donotanswer, min(plain_donotanswer, len(donotanswer))):
        add(goal, [goal.text], None)
    for i, goal in enumerate(rng.sample(harm, min(wrapped, len(harm)))):
        family = FAMILIES[i % len(FAMILIES)]
        pool = [t for t in templates([family]) if sum(len(turn) for turn in t.turns) <= 1500]
        attack = render(rng.choice(pool), goal.text, goal.id)
        add(goal, attack.turns, family)
    for goal in rng.sample(harm, min(refusal_started, len(harm))):
        add(goal, [goal.text], None, rng.choice(REFUSE_OPENINGS))
    benign = alarming_benign_goals("eval")
    for goal in rng.sample(benign, min(alarming, len(benign))):
        add(goal, [goal.text], None)
    plain = ordinary_goals("eval", n=2 * ordinary)
    for goal in rng.sample(plain, min(ordinary, len(plain))):
        add(goal, [goal.text], None)
    for i, goal in enumerate(rng.sample(benign, min(wrapped_benign, len(benign)))):
        family = ("persona", "educational", "hypothetical", "prefix_injection", "refusal_suppression")[i % 5]
        attack = render(rng.choice(templates([family], "train", garak=False)), goal.text, goal.id)
        add(goal, attack.turns, family)
    return out


def generate_candidates(prompts: Sequence[dict[str, Any]], target: Target, *, seed: int = 0,
                        max_new_tokens: int = 128) -> list[dict[str, Any]]:
    """Each prompt's conversation played against `target`; multi-turn prompts get the target's replies between
    turns, and a prefix (when given) opens the final reply."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.7, top_p=0.95, seed=seed)
    single = [p for p in prompts if len(p["turns"]) == 1]
    multi = [p for p in prompts if len(p["turns"]) > 1]
    records = []
    replies = target.reply([[{"role": "user", "content": p["turns"][0]}] for p in single], params,
                           prefixes=[p["prefix"] for p in single])
    for p, reply in zip(single, replies, strict=True):
        records.append({**p, "conversation": [{"role": "user", "content": p["turns"][0]}], "reply": reply,
                        "source_model": target.name})
    played = target.play([p["turns"] for p in multi], params)
    for p, conversation in zip(multi, played, strict=True):
        records.append({**p, "conversation": conversation[:-1], "reply": conversation[-1]["content"],
                        "source_model": target.name})
    return records


@dataclass(frozen=True)
class Agreement:
    """How one judge's labels compare with the gold labels."""

    name: str
    n: int
    accuracy: Rate
    per_class: dict[str, ClassScores]
    confusion: Any

    def format(self) -> str:
        lines = [f"{self.name}: accuracy {self.accuracy.format()}"]
        for label, scores in self.per_class.items():
            lines.append(f"  {label:8} precision {scores.precision.format():32} recall {scores.recall.format()}")
        lines.append("  confusion (rows gold, columns predicted): " + json.dumps(self.confusion))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n": self.n, "accuracy": self.accuracy.to_dict(),
                "per_class": {k: {"precision": v.precision.to_dict(), "recall": v.recall.to_dict()}
                              for k, v in self.per_class.items()},
                "confusion": self.confusion}


def agreement(name: str, gold: Sequence[GoldItem], predicted: Sequence[str]) -> Agreement:
    labels = [g.label for g in gold]
    return Agreement(name, len(gold), accuracy(labels, predicted), class_scores(labels, predicted, LABELS),
                     confusion(labels, predicted, LABELS))


def heuristic_labels(gold: Sequence[GoldItem]) -> list[str]:
    """The refusal-prefix heuristic as a three-way judge: a refusal if `is_refusal`, else harmful compliance when
    the request was harmful and a benign answer when it was not. It is told what kind of request each was; the
    safety judge is not."""
    from chatforge.spec.rules import is_refusal

    return ["refusal" if is_refusal(g.reply) else ("harmful" if g.kind == "harmful" else "benign") for g in gold]
