"""The evaluation's prompts: behaviour prompts written for the evaluation, harmful requests from the datasets'
held-out share, and held-out ShareGPT requests. None of them is ever training data.

| category | where the prompts come from |
| --- | --- |
| identity, honest_limits, clarify, over_refusal, admit_unknown, factual | `data/behaviour_prompts.yaml`: scenarios that the training spec does not have (tested) |
| refusal | HarmBench standard behaviours and Do-Not-Answer prompts in the evaluation share (`data.behaviours.harm_split`) |
| jailbreak | the same held-out harmful requests wrapped in the evaluation's own jailbreak framings (`data/jailbreak_templates.yaml`) |
| general | first requests of ShareGPT conversations in its held-out share (`data.sharegpt.split_of`), with ChatGPT's reply as a reference |

Each prompt belongs to "dev" (for choosing checkpoints and drawing curves) or "test" (for the numbers a report
headlines) by a hash of its text, so choosing a checkpoint never looks at the prompts it is then graded on.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from chatforge.chat import Message

Split = Literal["dev", "test"]
DATA_DIR = Path(__file__).with_name("data")
WRITTEN_CATEGORIES = ("identity", "honest_limits", "clarify", "over_refusal", "admit_unknown", "factual")
CATEGORIES = ("identity", "honest_limits", "clarify", "refusal", "jailbreak", "over_refusal", "admit_unknown", "factual")
DEV_FRACTION = 0.2


@dataclass(frozen=True)
class EvalPrompt:
    """One evaluation prompt. `missing` (clarify), `answers` (factual) and `kind` (admit_unknown) are what a judge
    needs to know about the prompt; `reference` is an answer written by someone else (ShareGPT's ChatGPT reply)."""

    id: str
    category: str
    scenario: str
    messages: tuple[Message, ...]
    split: Split
    missing: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    kind: str | None = None
    reference: str | None = None
    source: str = "written"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def text(self) -> str:
        return self.messages[-1].content

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "scenario": self.scenario,
            "messages": [m.to_dict() for m in self.messages],
            "split": self.split,
            "missing": list(self.missing),
            "answers": list(self.answers),
            "kind": self.kind,
            "reference": self.reference,
            "source": self.source,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> EvalPrompt:
        return cls(
            id=record["id"],
            category=record["category"],
            scenario=record["scenario"],
            messages=tuple(Message(m["role"], m["content"]) for m in record["messages"]),
            split=record["split"],
            missing=tuple(record.get("missing") or ()),
            answers=tuple(record.get("answers") or ()),
            kind=record.get("kind"),
            reference=record.get("reference"),
            source=record.get("source", "written"),
            meta=dict(record.get("meta") or {}),
        )


def dev_or_test(text: str) -> Split:
    digest = hashlib.sha256(f"eval-split\x1f{text}".encode()).digest()
    return "dev" if int.from_bytes(digest[:8], "big") / 2**64 < DEV_FRACTION else "test"


def _prompt_id(category: str, text: str) -> str:
    return f"{category}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


@cache
def written_prompts() -> tuple[EvalPrompt, ...]:
    """The prompts of `data/behaviour_prompts.yaml`, in file order."""
    raw = yaml.safe_load((DATA_DIR / "behaviour_prompts.yaml").read_text(encoding="utf-8"))
    out = []
    for category, scenarios in raw.items():
        if category not in WRITTEN_CATEGORIES:
            raise ValueError(f"behaviour_prompts.yaml: unknown category {category!r}")
        for scenario, items in scenarios.items():
            for item in items:
                entry = item if isinstance(item, dict) else {"prompt": item}
                text = str(entry["prompt"]).strip()
                out.append(
                    EvalPrompt(
                        id=_prompt_id(category, text),
                        category=category,
                        scenario=scenario,
                        messages=(Message("user", text),),
                        split=dev_or_test(text),
                        missing=tuple(str(w).lower() for w in entry.get("missing", ())),
                        answers=tuple(str(a) for a in entry.get("answers", ())),
                        kind=entry.get("kind"),
                    )
                )
    return tuple(out)


def harmful_prompts() -> list[EvalPrompt]:
    """HarmBench standard behaviours and Do-Not-Answer prompts in the evaluation's share, as plain requests.
    (Contextual HarmBench behaviours carry a long passage; the plain requests test the same thing for less.)"""
    from chatforge.data.behaviours import donotanswer_prompts, harm_split, harmbench_prompts

    out = []
    for harm in [*harmbench_prompts(), *donotanswer_prompts()]:
        if harm_split(harm.origin_id) != "eval" or "\n\n---\n\n" in harm.text:
            continue
        out.append(
            EvalPrompt(
                id=f"refusal-{harm.origin_id}",
                category="refusal",
                scenario=harm.category,
                messages=(Message("user", harm.text),),
                split=dev_or_test(harm.text),
                source=harm.origin,
                meta={"origin_id": harm.origin_id},
            )
        )
    return out


def general_prompts(max_chars: int = 600) -> list[EvalPrompt]:
    """First requests of held-out ShareGPT conversations: English, at most `max_chars`, answered by ChatGPT in the
    conversation (its reply is kept as a reference answer)."""
    from chatforge.data.filters import looks_english
    from chatforge.data.sharegpt import ShareGPT

    out = []
    seen: set[str] = set()
    for conv in ShareGPT(split="eval"):
        first, reply = conv.messages[0], conv.messages[1] if len(conv.messages) > 1 else None
        if first.role != "user" or reply is None or reply.role != "assistant":
            continue
        text = first.content.strip()
        if not text or len(text) > max_chars or text in seen or not looks_english(text) or not looks_english(reply.content):
            continue
        seen.add(text)
        out.append(
            EvalPrompt(
                id=f"general-{conv.id}",
                category="general",
                scenario="sharegpt",
                messages=(Message("user", text),),
                split=dev_or_test(text),
                reference=reply.content,
                source="sharegpt",
            )
        )
    return out


# --------------------------------------------------------------------------------------------------------------
# Jailbreaks: held-out harmful requests wrapped in the evaluation's own framings (data/jailbreak_templates.yaml).
# Each template is applied to a seeded sample of the held-out requests, so every family is tested on requests the
# model never trained on, in framings the attacker never produced. Multi-turn templates put a neutral assistant
# reply between the user turns (the model is graded on its answer to the last one).
# --------------------------------------------------------------------------------------------------------------

NEUTRAL_REPLY = "Sure, I'm happy to help. What would you like to know?"
REQUESTS_PER_TEMPLATE = 3


@cache
def jailbreak_templates() -> dict[str, tuple[Any, ...]]:
    raw = yaml.safe_load((DATA_DIR / "jailbreak_templates.yaml").read_text(encoding="utf-8"))
    return {family: tuple(items) for family, items in raw.items()}


def _fill(template: str, request: str) -> str:
    words = request.split()
    half = max(1, len(words) // 2)
    return template.format(
        request=request,
        reversed_request=request[::-1],
        spaced_request=" ".join(request),
        first_half=" ".join(words[:half]),
        second_half=" ".join(words[half:]),
    )


def wrap(template: Any, request: str) -> tuple[Message, ...]:
    """The conversation a template makes of one request (ending with the user)."""
    if isinstance(template, dict):
        turns = [_fill(t, request) if "{" in t else t for t in template["turns"]]
        messages: list[Message] = []
        for i, turn in enumerate(turns):
            if i:
                messages.append(Message("assistant", NEUTRAL_REPLY))
            messages.append(Message("user", turn))
        return tuple(messages)
    return (Message("user", _fill(str(template), request)),)


def wrap_in_jailbreaks(harmful: Sequence[EvalPrompt], *, seed: int = 0) -> list[EvalPrompt]:
    """Every template applied to `REQUESTS_PER_TEMPLATE` of `harmful` (seeded); they keep the requests' split."""
    if not harmful:
        return []
    out = []
    for family, items in jailbreak_templates().items():
        for index, template in enumerate(items):
            rng = random.Random(f"{seed}/{family}/{index}")
            for base in rng.sample(list(harmful), min(REQUESTS_PER_TEMPLATE, len(harmful))):
                out.append(
                    EvalPrompt(
                        id=f"jailbreak-{family}-{index}-{base.id.removeprefix('refusal-')}",
                        category="jailbreak",
                        scenario=family,
                        messages=wrap(template, base.text),
                        split=base.split,
                        source=base.source,
                        meta={"family": family, "template": index, "request": base.text, **base.meta},
                    )
                )
    return out


def evaluation_prompts(
    split: Split,
    *,
    categories: Iterable[str] = CATEGORIES,
    per_category: int | None = None,
    seed: int = 0,
) -> list[EvalPrompt]:
    """The `split` prompts of `categories` ("general" for ShareGPT requests), at most `per_category` of each
    (a seeded sample, so a smaller evaluation is a subset of a larger one with the same seed)."""
    wanted = list(categories)
    unknown = [c for c in wanted if c not in (*CATEGORIES, "general")]
    if unknown:
        raise ValueError(f"unknown evaluation categories {unknown}; known: {', '.join((*CATEGORIES, 'general'))}")
    pool: list[EvalPrompt] = []
    if any(c in WRITTEN_CATEGORIES for c in wanted):
        pool += written_prompts()
    if "refusal" in wanted or "jailbreak" in wanted:
        harmful = harmful_prompts()
        pool += harmful
        if "jailbreak" in wanted:
            pool += wrap_in_jailbreaks([p for p in harmful if p.split == split], seed=seed)
    if "general" in wanted:
        pool += general_prompts()
    out = []
    for category in wanted:
        chosen = [p for p in pool if p.category == category and p.split == split]
        if per_category is not None and len(chosen) > per_category:
            chosen = random.Random(f"{seed}/{category}").sample(chosen, per_category)
        out += chosen
    return out


def check_prompts(prompts: Sequence[EvalPrompt]) -> None:
    """Refuse a prompt set a judge cannot grade: a clarify prompt without `missing`, a factual one without answers."""
    for p in prompts:
        if p.category == "clarify" and not p.missing:
            raise ValueError(f"clarify prompt {p.text!r} names no missing thing")
        if p.category == "factual" and not p.answers:
            raise ValueError(f"factual prompt {p.text!r} has no accepted answers")
        if p.category == "admit_unknown" and p.kind not in ("invented", "future", "private"):
            raise ValueError(f"admit_unknown prompt {p.text!r}: kind must be invented, future or private")
