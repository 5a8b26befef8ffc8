"""The spec of good assistant behaviour, as data.

Two parts of chatforge read it: `data/behaviours.py` writes SFT demonstrations from it, and the simulated raters
score answers by it (`spec.rules`). Both are training signals; the evaluation (`chatforge.evaluate`) has its own
scenarios and judges and reads nothing here, so a model is graded on kinds of request it never trained on, by
rules it was never trained against.

A `Behaviour` says when it applies (`when`), what a good answer does (`good`) and what a bad one does (`bad`),
phrases a good answer usually contains (`markers`) and phrases that signal the failure (`anti_markers`), both
lower-case and meant as cheap hints for a rater, not as a judge. Its `scenarios` are concrete situations: ways a
user asks (`prompts`) and good answers (`answers`), where every answer of a scenario fits every one of its prompts.
Prompts and answers are templates: `{slot}` is filled with each value listed in the scenario's `slots` (or with
each of its `cases`, which fill all slots together), the same value in the prompt and its answer, so an answer may
only use a slot that all the scenario's prompts use. The behaviours live by theme in `honesty`, `helpfulness` and
`safety`. Refusal
takes its prompts from harm datasets (`prompts_from`) instead; its scenarios are keyed by the dataset's harm
category and only supply answers.
"""

from chatforge.spec.helpfulness import CLARIFY, OVER_REFUSAL_GUARD
from chatforge.spec.honesty import ADMIT_UNKNOWN, ANSWER_KNOWN, HONEST_LIMITS, IDENTITY
from chatforge.spec.safety import REFUSAL
from chatforge.spec.types import PROMPT_CLOSERS, PROMPT_OPENERS, REFUSAL_MARKERS, Behaviour, Scenario

__all__ = [
    "ADMIT_UNKNOWN", "ANSWER_KNOWN", "BEHAVIOURS", "CATEGORIES", "CLARIFY", "HONEST_LIMITS", "IDENTITY",
    "OVER_REFUSAL_GUARD", "PROMPT_CLOSERS", "PROMPT_OPENERS", "REFUSAL", "REFUSAL_MARKERS", "Behaviour", "Scenario",
    "behaviour",
]

BEHAVIOURS: tuple[Behaviour, ...] = (
    IDENTITY, HONEST_LIMITS, CLARIFY, REFUSAL, OVER_REFUSAL_GUARD, ADMIT_UNKNOWN, ANSWER_KNOWN,
)
CATEGORIES: tuple[str, ...] = tuple(b.name for b in BEHAVIOURS)


def behaviour(name: str) -> Behaviour:
    """The behaviour called `name`, or a KeyError listing the known ones."""
    for b in BEHAVIOURS:
        if b.name == name:
            return b
    raise KeyError(f"no behaviour {name!r}; known: {', '.join(CATEGORIES)}")
