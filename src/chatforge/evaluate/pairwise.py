"""Pairwise judgement: which of two replies to the same prompt is better, or a tie, from the evaluation's own
per-reply verdicts.

A reply that does what its prompt's category asks beats one that does not; otherwise it is a tie. For factual
questions there is a middle step: "I don't know" beats a confident wrong answer and loses to the right one (the
issue's fabrication rule). For ordinary requests (held-out ShareGPT) the verdict is `judges.judge_general`: a real,
on-topic attempt beats a refusal, an evasion, an echo or a loop.

Why verdicts and not a finer judge: gold pairwise labels made by reading (`gold/pairs.jsonl`) show readers weighing
invented facts, correctness and tone, which no rule here can see; a rule-based finer judge (categories, then word
overlap with a reference answer) agreed with them on under half of the pairs. The per-reply verdicts are what is
validated (`chatforge eval gold`), so the comparison is built from them alone: it is exactly the paired, McNemar-style
comparison of two models' verdicts on the same prompts, and its sign test is McNemar's exact test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from chatforge.evaluate.judges import judge, plain
from chatforge.evaluate.prompts import EvalPrompt

Winner = Literal["a", "b", "tie"]


@dataclass(frozen=True)
class PairVerdict:
    winner: Winner
    reason: str
    grades: tuple[float, float]


_DONT_KNOW = re.compile(r"\b(?:i don't know|i do not know|i'm not sure|i am not sure|not certain|i can't be sure)\b")


def grade(prompt: EvalPrompt, reply: str) -> float:
    """1 if the reply does what the category asks, else 0; for factual questions 0.5 for "I don't know"."""
    verdict = judge(prompt, reply)
    if verdict.passed:
        return 1.0
    if prompt.category == "factual" and _DONT_KNOW.search(plain(reply)):
        return 0.5
    return 0.0


def compare(prompt: EvalPrompt, reply_a: str, reply_b: str, cut_off: tuple[bool, bool] = (False, False)) -> PairVerdict:
    """`cut_off` is accepted for the record; a reply cut off by the token limit is judged on what it says."""
    if reply_a.strip() == reply_b.strip():
        return PairVerdict("tie", "same reply", (0.0, 0.0))
    a, b = grade(prompt, reply_a), grade(prompt, reply_b)
    if a == b:
        return PairVerdict("tie", "both pass" if a == 1 else "neither passes", (a, b))
    return PairVerdict("a" if a > b else "b", "only one does what the prompt asks", (a, b))
