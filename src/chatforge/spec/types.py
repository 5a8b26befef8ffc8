"""The types of the spec (`Behaviour`, `Scenario`) and what every behaviour shares: how prompts are phrased, what a
refusal sounds like."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scenario:
    """A concrete situation: ways a user asks (`prompts`) and good answers (`answers`), both templates. `slots`
    fills each `{slot}` independently with each of its values; `cases` instead fills all slots together, one case
    at a time (a question and its own answer, such as a country and its capital)."""

    key: str
    prompts: tuple[str, ...]
    answers: tuple[str, ...]
    slots: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cases: tuple[Mapping[str, str], ...] = ()


@dataclass(frozen=True)
class Behaviour:
    name: str
    title: str
    when: str
    good: tuple[str, ...]
    bad: tuple[str, ...]
    markers: tuple[str, ...]
    anti_markers: tuple[str, ...]
    scenarios: tuple[Scenario, ...]
    prompts_from: tuple[str, ...] = ()  # datasets that supply this behaviour's prompts


# Ways to open and close a request, combined with each scenario prompt for varied phrasing. The empty pair keeps
# the bare prompt; the others are what people actually type around a question.
PROMPT_OPENERS = ("", "Hi! ", "Hey, ", "Quick question: ", "Hello. ", "Sorry if this is a silly question, but ")
PROMPT_CLOSERS = ("", " Thanks!", " Thank you.", " Thanks in advance.")

# What refusals have in common; also what an over-refusal looks like.
REFUSAL_MARKERS = (
    "i can't help",
    "i cannot help",
    "i won't",
    "i can't assist",
    "i'm not able to help",
    "i can't write",
    "i can't provide",
    "i can't share",
)
