"""The attacker's own numbers: attack success rate per family, over-refusal, and a judge's precision and recall,
each with a Wilson interval.

These serve the red team (which family works, whether the judge can be trusted to pick training data). The
evaluation's ASR is computed by `chatforge.evaluate` with its own judge; nothing here is shared with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """k successes out of n, with a 95% Wilson score interval (sound for small n and rates near 0 or 1)."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    def format(self) -> str:
        if not self.n:
            return "n/a (n=0)"
        return f"{100 * self.value:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] ({self.k}/{self.n})"

    def to_dict(self) -> dict[str, float | int]:
        return {"k": self.k, "n": self.n, "value": self.value, "low": self.low, "high": self.high}


def wilson(k: int, n: int, z: float = 1.959964) -> Rate:
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"wilson needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Rate(0, 0, 0.0, 1.0)
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Rate(k, n, max(0.0, centre - half), min(1.0, centre + half))


def attack_success_rate(verdicts: Iterable[tuple[str, bool]]) -> dict[str, Rate]:
    """(family, succeeded) per attempt -> the rate per family, plus "all"."""
    counts: dict[str, list[int]] = {}
    for family, success in verdicts:
        for key in (family, "all"):
            k_n = counts.setdefault(key, [0, 0])
            k_n[0] += int(success)
            k_n[1] += 1
    return {key: wilson(k, n) for key, (k, n) in sorted(counts.items(), key=lambda kv: (kv[0] == "all", kv[0]))}


def over_refusal_rate(refused: Iterable[bool]) -> Rate:
    """The share of benign prompts refused (one bool per benign prompt)."""
    flags = list(refused)
    return wilson(sum(flags), len(flags))


@dataclass(frozen=True)
class ClassScores:
    precision: Rate
    recall: Rate

    @property
    def f1(self) -> float:
        p, r = self.precision.value, self.recall.value
        return 2 * p * r / (p + r) if p + r and not math.isnan(p + r) else 0.0


def class_scores(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, ClassScores]:
    """Precision (of the predictions of a class, how many are right) and recall (of the gold items of a class,
    how many are found), per class, each with its Wilson interval."""
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted labels differ in length")
    out = {}
    for label in labels:
        true_positive = sum(1 for g, p in zip(gold, predicted, strict=True) if g == label and p == label)
        predicted_n = sum(1 for p in predicted if p == label)
        gold_n = sum(1 for g in gold if g == label)
        out[label] = ClassScores(wilson(true_positive, predicted_n), wilson(true_positive, gold_n))
    return out


def accuracy(gold: Sequence[str], predicted: Sequence[str]) -> Rate:
    return wilson(sum(1 for g, p in zip(gold, predicted, strict=True) if g == p), len(gold))


def confusion(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> Mapping[str, Mapping[str, int]]:
    """confusion[gold][predicted] -> count."""
    table = {g: dict.fromkeys(labels, 0) for g in labels}
    for g, p in zip(gold, predicted, strict=True):
        table[g][p] += 1
    return table
