"""Moderation hooks on input and output: configurable phrase rules, and the red team's safety judge.

A rule is a name, a list of phrases (matched case-insensitively as substrings), the stage it checks ("input" =
the user's message, "output" = the model's reply) and an action: "flag" records the item for review and lets it
through, "block" (input only) refuses the request with a 400 and records it. ``refusals: true`` on the output adds
a rule that flags replies that refuse (chatforge.spec.rules.is_refusal), for over-refusal review.

``judge`` on the output reads each reply with the safety judge (`chatforge.redteam.judge`, trained with
`chatforge safety-judge train`) and flags, as rule "safety-judge", the replies it finds harmful compliance
(P(harmful) at or above the threshold; the judge's own threshold when none is given). ``judge_refusals: true``
also flags the replies it finds refusals, as rule "safety-judge:refusal". The judge reads the conversation before
the reply when the caller passes it (``check(..., context=messages)``) and the reply alone otherwise.

Configuration (JSON file, ``chatforge serve --moderation FILE``):

    {"rules": [{"name": "weapons", "phrases": ["build a bomb"], "stage": "input", "action": "block"},
               {"name": "pii", "phrases": ["social security number"], "stage": "output", "action": "flag"}],
     "refusals": false,
     "judge": {"path": "~/.cache/chatforge/judges/safety", "threshold": 0.5}, "judge_refusals": false}

``"judge": true`` uses the judge in its default directory (CHATFORGE_HOME/judges/safety).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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


JUDGE_RULE = "safety-judge"


def load_judge(spec: Any) -> tuple[Any, float | None]:
    """The safety judge a config's "judge" entry names: true (the default directory) or {"path", "threshold"}."""
    from chatforge.redteam.judge import Features, JudgeError, SafetyJudge, default_judge_dir

    if spec is True:
        path, threshold = default_judge_dir(), None
    elif isinstance(spec, Mapping) and "path" in spec:
        path = Path(str(spec["path"])).expanduser()
        threshold = spec.get("threshold")
        if threshold is not None and not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
            raise ValueError(f"moderation judge: threshold must be a number between 0 and 1, got {threshold!r}")
    else:
        raise ValueError('moderation judge: give true or {"path": DIR, "threshold": 0.5}')
    from chatforge.raters.embedding import Embedder

    try:
        # Its own encoder, remembering nothing: a server judges every reply once.
        return SafetyJudge.load(path, features=Features(Embedder(), remember=False)), threshold
    except JudgeError as err:
        raise ValueError(f"moderation judge: {err}") from None


@dataclass
class Moderator:
    rules: list[Rule] = field(default_factory=list)
    refusals: bool = False
    judge: Any = None  # a chatforge.redteam.judge.SafetyJudge, or None
    judge_threshold: float | None = None
    judge_refusals: bool = False

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
        judge, threshold = load_judge(config["judge"]) if config.get("judge") else (None, None)
        return cls(rules, bool(config.get("refusals", False)), judge, threshold, bool(config.get("judge_refusals", False)))

    @classmethod
    def from_file(cls, path: str | Path) -> Moderator:
        return cls.from_config(json.loads(Path(path).read_text(encoding="utf-8")))

    def check(self, text: str, stage: Stage, *, context: Sequence[Any] | None = None) -> list[Hit]:
        """The rules `text` hits. `context`: the conversation before an output (messages or role/content dicts),
        which the safety judge reads with the reply."""
        lower = text.lower()
        hits = [Hit(r.name, r.action, stage) for r in self.rules if r.stage == stage and any(p in lower for p in r.phrases)]
        if stage == "output" and self.refusals:
            from chatforge.spec.rules import is_refusal

            if is_refusal(text):
                hits.append(Hit("refusal", "flag", stage))
        if stage == "output" and self.judge is not None and text.strip():
            messages = [m if isinstance(m, Mapping) else m.to_dict() for m in context] if context else None
            verdict = self.judge.judge_one(messages, text)
            threshold = self.judge_threshold if self.judge_threshold is not None else self.judge.threshold
            if verdict.score >= threshold:
                hits.append(Hit(JUDGE_RULE, "flag", stage))
            elif self.judge_refusals and verdict.label == "refusal":
                hits.append(Hit(f"{JUDGE_RULE}:refusal", "flag", stage))
        return hits
