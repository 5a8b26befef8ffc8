"""Win rate of one model over another on the same evaluation prompts, from the evaluation's verdicts on each reply
(`pairwise.compare`), with its statistics.

A win is a prompt where only this model's reply does what the prompt asks, a loss one where only the other's does;
a win counts 1, a tie 1/2. The p-value is the two-sided exact sign test of wins against losses (ties left out),
which is McNemar's exact test on the two models' verdicts; the interval is Wilson's on the win share among decided
prompts. Per-category rows show where a model gains and where it pays (the alignment tax shows up in "general").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chatforge.evaluate.behaviour import Answer
from chatforge.evaluate.pairwise import compare
from chatforge.evaluate.stats import sign_test, wilson_interval


@dataclass
class Tally:
    wins: int = 0
    ties: int = 0
    losses: int = 0

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def rate(self) -> float:
        return (self.wins + 0.5 * self.ties) / self.n if self.n else 0.5

    @property
    def p_value(self) -> float:
        return sign_test(self.wins, self.losses, self.ties).p_value

    @property
    def decided_interval(self) -> tuple[float, float]:
        return wilson_interval(self.wins, self.wins + self.losses)

    def to_dict(self) -> dict[str, Any]:
        low, high = self.decided_interval
        return {
            "wins": self.wins, "ties": self.ties, "losses": self.losses, "n": self.n, "win_rate": self.rate,
            "p_value": self.p_value, "decided_low": low, "decided_high": high,
        }


@dataclass
class WinRate:
    total: Tally = field(default_factory=Tally)
    by_category: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    records: list[dict[str, Any]] = field(default_factory=list)

    def format(self, name_a: str = "A", name_b: str = "B") -> str:
        t = self.total
        low, high = t.decided_interval
        lines = [
            f"win rate of {name_a} over {name_b}: {100 * t.rate:.1f}% (n={t.n}: {t.wins} won, {t.ties} tied, {t.losses} lost; "
            f"sign test p = {t.p_value:.3g}; wins among decided {100 * low:.0f}-{100 * high:.0f}% (95%))"
        ]
        for category, c in sorted(self.by_category.items()):
            lines.append(f"  {category:14} {100 * c.rate:5.1f}%  ({c.wins}/{c.ties}/{c.losses}, p = {c.p_value:.2g})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.total.to_dict(),
            "by_category": {c: t.to_dict() for c, t in sorted(self.by_category.items())},
            "records": self.records,
        }


def win_rate(answers_a: Sequence[Answer], answers_b: Sequence[Answer]) -> WinRate:
    """A's win rate over B on the prompts both answered (matched by prompt id)."""
    theirs = {a.prompt.id: a for a in answers_b}
    result = WinRate()
    for mine in answers_a:
        other = theirs.get(mine.prompt.id)
        if other is None:
            continue
        verdict = compare(mine.prompt, mine.reply, other.reply, (mine.cut_off, other.cut_off))
        bucket = result.by_category[mine.prompt.category]
        for tally in (result.total, bucket):
            if verdict.winner == "a":
                tally.wins += 1
            elif verdict.winner == "b":
                tally.losses += 1
            else:
                tally.ties += 1
        result.records.append(
            {
                "id": mine.prompt.id,
                "category": mine.prompt.category,
                "prompt": mine.prompt.text,
                "a": mine.reply,
                "b": other.reply,
                "winner": verdict.winner,
                "reason": verdict.reason,
            }
        )
    if not result.records:
        raise ValueError("the two reports share no prompt: compare reports made on the same evaluation prompts")
    return result
