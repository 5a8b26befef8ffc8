"""Moderation hooks on input and output: a simple, configurable phrase check for now.

A rule is a name, a list of phrases (matched case-insensitively as substrings), the stage it checks ("input" =
the user's message, "output" = the model's reply) and an action: "flag" records the item for review and lets it
through, "block" (input only) refuses the request with a 400 and records it. ``refusals: true`` on the output adds
a rule that flags replies that refuse (chatforge.spec.rules.is_refusal), for over-refusal review.

Configuration (JSON file, ``chatforge serve --moderation FILE``):

    {"rules": [{"name": "weapons", "phrases": ["build a bomb"], "stage": "input", "action": "block"},
               {"name": "pii", "phrases": ["social security number"], "stage": "output", "action": "flag"}],
     "refusals": false}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Stage = Literal["input", "output"]


@dataclass(frozen=True)
class Rule:
    name: str
    phrases: tuple[str, ...]
    stage: Stage = "input"
    action: Literal["flag", "block"] = "flag"


@dataclass(frozen=True)
class Hit:
    rule: str
    action: str
    stage: Stage


@dataclass
class Moderator:
    rules: list[Rule] = field(default_factory=list)
    refusals: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Moderator:
        if not config:
            return cls()
        rules = []
        for i, raw in enumerate(config.get("rules", [])):
            try:
                stage, action = raw.get("stage", "input"), raw.get("action", "flag")
                if stage not in ("input", "output") or action not in ("flag", "block"):
                    raise ValueError("stage must be input|output and action flag|block")
                if stage == "output" and action == "block":
                    raise ValueError("output rules can only flag (a streamed reply cannot be taken back)")
                phrases = tuple(str(p).lower() for p in raw["phrases"] if str(p).strip())
                rules.append(Rule(str(raw.get("name") or f"rule{i}"), phrases, stage, action))
            except (KeyError, TypeError, AttributeError, ValueError) as err:
                raise ValueError(f"moderation rule {i}: {err}") from None
        return cls(rules, bool(config.get("refusals", False)))

    @classmethod
    def from_file(cls, path: str | Path) -> Moderator:
        return cls.from_config(json.loads(Path(path).read_text(encoding="utf-8")))

    def check(self, text: str, stage: Stage) -> list[Hit]:
        lower = text.lower()
        hits = [Hit(r.name, r.action, stage) for r in self.rules if r.stage == stage and any(p in lower for p in r.phrases)]
        if stage == "output" and self.refusals:
            from chatforge.spec.rules import is_refusal

            if is_refusal(text):
                hits.append(Hit("refusal", "flag", stage))
        return hits
