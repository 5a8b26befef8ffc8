"""The statistics every number in an evaluation report carries: small pure functions, no scipy.

* ``proportion`` / ``wilson_interval``: a pass rate with its Wilson score interval (Wilson 1927; the interval
  Newcombe 1998 and Brown, Cai & DasGupta 2001 recommend over the normal "Wald" interval, which collapses to a
  point at 0/n and n/n and undercovers at small n).
* ``sign_test``: a win rate between two models judged on the same prompts, ties counted half, with its interval
  and the exact two-sided sign test (ties excluded) for "one model wins more often than the other".
* ``mcnemar``: "model B passes more prompts than model A" on the same prompts: the exact McNemar test, which is
  the sign test on the discordant prompts (A passes and B fails, or the other way round).
* ``bootstrap_mean`` / ``paired_bootstrap``: a percentile bootstrap interval for a mean (e.g. a continuous score)
  and for a difference of means on paired items (the same prompts answered by two models); seeded.
* ``cohen_kappa`` / ``agreement``: a judge against gold labels: raw agreement with its Wilson interval, and Cohen's
  kappa (agreement beyond what the two label distributions give by chance) with a bootstrap interval.

Every result is a frozen dataclass whose ``to_dict()`` is JSON-serialisable. Intervals default to 95%.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

CONFIDENCE = 0.95


def _z(confidence: float) -> float:
    """The two-sided standard normal quantile: 1.959964 for 95%."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a proportion of ``successes`` out of ``n`` (successes may be fractional, e.g.
    a win rate with ties counted half). ``n == 0`` gives the uninformative (0, 1)."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes!r}, n={n!r}")
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    # clamp the rounding error at the ends (0/n must give exactly 0, n/n exactly 1)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Proportion:
    successes: float
    n: int
    rate: float  # successes / n (0 when n == 0)
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """'62.5% [45.1, 77.3] (n=40)'."""
        return f"{100 * self.rate:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] (n={self.n})"


def proportion(successes: float, n: int, confidence: float = CONFIDENCE) -> Proportion:
    low, high = wilson_interval(successes, n, confidence)
    return Proportion(successes, n, successes / n if n else 0.0, low, high)


def pass_rate(passes: Sequence[bool], confidence: float = CONFIDENCE) -> Proportion:
    """The proportion of True values, with its Wilson interval."""
    return proportion(sum(bool(p) for p in passes), len(passes), confidence)


def binomial_two_sided_p(k: int, n: int) -> float:
    """Exact two-sided p-value of seeing a split as uneven as k of n under a fair coin: twice the smaller tail,
    capped at 1 (the fair-coin distribution is symmetric, so this equals summing every outcome no likelier than
    the one seen). ``n == 0`` gives 1."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k!r}, n={n!r}")
    if n == 0:
        return 1.0
    smaller = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(smaller + 1))
    return min(1.0, 2 * tail / 2**n)  # exact integers until the one division


@dataclass(frozen=True)
class SignTest:
    wins: int
    losses: int
    ties: int
    win_rate: float  # (wins + ties / 2) / (wins + losses + ties)
    low: float
    high: float
    p_value: float  # exact two-sided sign test on wins vs losses, ties excluded

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n": self.n}

    def format(self) -> str:
        return (
            f"{100 * self.win_rate:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] "
            f"({self.wins} wins, {self.losses} losses, {self.ties} ties; sign test p={self.p_value:.3g})"
        )


def sign_test(wins: int, losses: int, ties: int = 0, confidence: float = CONFIDENCE) -> SignTest:
    """A win rate with ties counted half, its interval, and the exact sign test.

    The interval is Wilson's on the half-counted wins. A tie is a certain half-win, so the per-prompt score has
    at most the variance of a coin with the same mean; treating it as a coin makes the interval conservative.
    """
    if min(wins, losses, ties) < 0:
        raise ValueError(f"counts must be non-negative, got wins={wins}, losses={losses}, ties={ties}")
    n = wins + losses + ties
    score = wins + ties / 2
    low, high = wilson_interval(score, n, confidence)
    return SignTest(wins, losses, ties, score / n if n else 0.5, low, high, binomial_two_sided_p(wins, wins + losses))


def win_rate(outcomes: Sequence[float], confidence: float = CONFIDENCE) -> SignTest:
    """``sign_test`` from per-prompt outcomes: 1 a win, 0 a loss, 0.5 a tie."""
    counts = Counter(outcomes)
    unknown = set(counts) - {0, 0.5, 1}
    if unknown:
        raise ValueError(f"outcomes must be 1 (win), 0 (loss) or 0.5 (tie), got {sorted(unknown)}")
    return sign_test(counts[1], counts[0], counts[0.5], confidence)


def _bootstrap_means(values: Sequence[float], resamples: int, seed: int) -> list[float]:
    """Sorted means of ``resamples`` resamples of ``values`` drawn with replacement."""
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    rng = random.Random(seed)
    n = len(values)
    return sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))


def _percentiles(sorted_draws: Sequence[float], confidence: float) -> tuple[float, float]:
    """The two-sided percentile interval of bootstrap draws (sorted)."""
    _z(confidence)  # validates it
    alpha = (1 - confidence) / 2
    last = len(sorted_draws) - 1
    return sorted_draws[math.floor(alpha * last)], sorted_draws[math.ceil((1 - alpha) * last)]


@dataclass(frozen=True)
class Mean:
    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self, scale: float = 1.0, digits: int = 1) -> str:
        return f"{scale * self.mean:.{digits}f} [{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}] (n={self.n})"


def bootstrap_mean(
    values: Sequence[float], *, resamples: int = 10_000, confidence: float = CONFIDENCE, seed: int = 0
) -> Mean:
    """A mean with its percentile bootstrap interval (seeded)."""
    if not values:
        raise ValueError("bootstrap_mean needs at least one value")
    floats = [float(v) for v in values]
    low, high = _percentiles(_bootstrap_means(floats, resamples, seed), confidence)
    return Mean(sum(floats) / len(floats), low, high, len(floats))


@dataclass(frozen=True)
class Difference:
    mean_a: float
    mean_b: float
    difference: float  # mean_b - mean_a
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    resamples: int = 10_000,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Difference:
    """Percentile bootstrap interval for mean(b) - mean(a) over paired items (item i of both is the same prompt):
    the per-item differences are resampled with replacement, which keeps each pair together."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    if not a:
        raise ValueError("paired_bootstrap needs at least one pair")
    differences = bootstrap_mean(
        [float(y) - float(x) for x, y in zip(a, b, strict=True)], resamples=resamples, confidence=confidence, seed=seed
    )
    n = len(a)
    mean_a, mean_b = sum(map(float, a)) / n, sum(map(float, b)) / n
    return Difference(mean_a, mean_b, differences.mean, differences.low, differences.high, n)


@dataclass(frozen=True)
class McNemar:
    n: int
    passes_a: int
    passes_b: int
    only_a: int  # prompts A passes and B fails
    only_b: int  # prompts B passes and A fails
    p_value: float  # exact two-sided McNemar test: the sign test on only_a vs only_b
    difference: Difference  # pass rate of B minus A with a paired bootstrap interval

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "difference": self.difference.to_dict()}

    def format(self) -> str:
        d = self.difference
        return (
            f"B - A = {100 * d.difference:+.1f} points [{100 * d.low:+.1f}, {100 * d.high:+.1f}] "
            f"({self.only_b} prompts only B passes, {self.only_a} only A; McNemar exact p={self.p_value:.3g})"
        )


def mcnemar(a: Sequence[bool], b: Sequence[bool], *, confidence: float = CONFIDENCE, seed: int = 0) -> McNemar:
    """Does B pass more prompts than A? ``a[i]`` and ``b[i]`` are the two models' verdicts on prompt i."""
    if len(a) != len(b):
        raise ValueError(f"paired verdicts differ in length: {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    p_value = binomial_two_sided_p(only_b, only_a + only_b)
    if a:
        difference = paired_bootstrap([float(x) for x in a], [float(y) for y in b], confidence=confidence, seed=seed)
    else:
        difference = Difference(0.0, 0.0, 0.0, 0.0, 0.0, 0)
    return McNemar(len(a), sum(map(bool, a)), sum(map(bool, b)), only_a, only_b, p_value, difference)


def cohen_kappa(x: Sequence[Hashable], y: Sequence[Hashable]) -> float:
    """Cohen's kappa between two labelings of the same items: (p_o - p_e) / (1 - p_e), with p_o the observed
    agreement and p_e the agreement expected from the two label distributions alone. When both label every item
    with one and the same label, p_e = 1 and kappa is undefined: NaN."""
    if len(x) != len(y):
        raise ValueError(f"labelings differ in length: {len(x)} and {len(y)}")
    if not x:
        raise ValueError("cohen_kappa needs at least one item")
    n = len(x)
    observed = sum(1 for u, v in zip(x, y, strict=True) if u == v) / n
    counts_x, counts_y = Counter(x), Counter(y)
    expected = sum(counts_x[label] * counts_y[label] for label in counts_x) / (n * n)
    if expected == 1:
        return math.nan
    return (observed - expected) / (1 - expected)


@dataclass(frozen=True)
class Agreement:
    n: int
    agree: int
    rate: float
    low: float  # Wilson interval of the raw agreement
    high: float
    kappa: float
    kappa_low: float  # percentile bootstrap interval of kappa (NaN when kappa is undefined)
    kappa_high: float

    def to_dict(self) -> dict[str, Any]:
        # NaN is not JSON: an undefined kappa is written as null
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    def format(self) -> str:
        kappa = "undefined" if math.isnan(self.kappa) else f"{self.kappa:.2f} [{self.kappa_low:.2f}, {self.kappa_high:.2f}]"
        return (
            f"agreement {100 * self.rate:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] "
            f"({self.agree}/{self.n}), kappa {kappa}"
        )


def agreement(
    judge: Sequence[Hashable],
    gold: Sequence[Hashable],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = 2_000,
    seed: int = 0,
) -> Agreement:
    """How well a judge's labels match gold labels on the same items: raw agreement (Wilson interval) and
    Cohen's kappa (percentile bootstrap interval over items; resamples where kappa is undefined are skipped)."""
    if len(judge) != len(gold):
        raise ValueError(f"judge and gold label different numbers of items: {len(judge)} and {len(gold)}")
    if not judge:
        raise ValueError("agreement needs at least one item")
    n = len(judge)
    agree = sum(1 for u, v in zip(judge, gold, strict=True) if u == v)
    low, high = wilson_interval(agree, n, confidence)
    kappa = cohen_kappa(judge, gold)
    kappa_low = kappa_high = math.nan
    if not math.isnan(kappa):
        rng = random.Random(seed)
        pairs = list(zip(judge, gold, strict=True))
        draws = []
        for _ in range(resamples):
            sample = rng.choices(pairs, k=n)
            value = cohen_kappa([p[0] for p in sample], [p[1] for p in sample])
            if not math.isnan(value):
                draws.append(value)
        if draws:
            kappa_low, kappa_high = _percentiles(sorted(draws), confidence)
    return Agreement(n, agree, agree / n, low, high, kappa, kappa_low, kappa_high)
