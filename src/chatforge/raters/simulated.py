"""Simulated raters: the embedded default when no people are available to rank responses (as AlpacaFarm did).

A rater scores each response to a prompt and ranks them by score. The score is a weighted sum of features that
anyone can read, and it *is* chatforge's specification of a good answer:

| feature | value | weight |
| --- | --- | --- |
| spec | +1 if the reply passes the behaviour rule of the prompt's category (`spec.rules.follows_spec`), -1 if not; for ordinary prompts, -1 for refusing a benign request, else 0 | 2.0 |
| reference | cosine similarity (MiniLM) to the reference answer, where one exists | 1.0 |
| on_topic | cosine similarity between prompt and reply | 0.5 |
| repetition | minus the share of repeated 4-grams (loops are the commonest failure of small models) | 1.5 |
| complete | -1 for an empty reply, -0.5 for one cut off by the token limit, else 0 | 1.0 |
| length | -0.5 under 3 words; beyond 300 words, -0.2 per further 100 (mild: long is not better) | 1.0 |

The prompt's category comes from the task (behaviour prompts carry it) or, failing that, from the nearest
behaviour prompt in embedding space (`CategoryGuesser`): a prompt close to a HarmBench request is treated as one.

Each rater adds Gaussian noise of its own (`noise`, seeded by rater and task), so a panel of raters disagrees the
way people do. How much they agree is *measured* (`panel_agreement`) and can be tuned to a target such as the ~73%
InstructGPT reports for its labelers (`calibrate_noise`), never assumed.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chatforge import spec
from chatforge.data.comparisons import Comparison, Rater
from chatforge.data.tasks import RatingTask, without_reference
from chatforge.raters.embedding import Embedder, shared_embedder
from chatforge.spec.rules import evades, follows_spec

GENERAL = "general"
WEIGHTS: Mapping[str, float] = {
    "spec": 2.0,
    "reference": 1.0,
    "on_topic": 0.5,
    "repetition": 1.5,
    "complete": 1.0,
    "length": 1.0,
}


# --------------------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------------------


def repetition(text: str) -> float:
    """Share of the reply's word 4-grams that repeat an earlier one (0 = none, near 1 = a loop)."""
    words = text.split()
    if len(words) < 8:
        return 0.0
    grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    return 1.0 - len(set(grams)) / len(grams)


def length_penalty(text: str) -> float:
    words = len(text.split())
    if words < 3:
        return -0.5
    return -0.2 * max(0.0, (words - 300) / 100)


class CategoryGuesser:
    """The behaviour category of a prompt that has none: the category of its nearest behaviour prompt, if near
    enough (cosine >= `threshold`), else "general"."""

    def __init__(self, embedder: Embedder, *, threshold: float = 0.62, seed: int = 0) -> None:
        from chatforge.data.behaviours import Behaviours

        self.embedder = embedder
        self.threshold = threshold
        examples = list(Behaviours("train", seed=seed))
        self.prompts = [c.messages[-2].content for c in examples]
        self.categories = [str(c.meta["category"]) for c in examples]
        self.vectors = embedder.encode(self.prompts)

    def guess(self, prompt: str) -> tuple[str, float]:
        similarity = self.vectors @ self.embedder.encode([prompt])[0]
        best = int(similarity.argmax())
        score = float(similarity[best])
        return (self.categories[best] if score >= self.threshold else GENERAL), score


class FeatureCache:
    """Feature values are the same for every rater of a panel (only the noise differs): compute them once."""

    def __init__(self, embedder: Embedder | None = None, guesser: CategoryGuesser | None = None) -> None:
        self.embedder = embedder or shared_embedder()
        self._guesser = guesser
        self._features: dict[tuple[str, int], dict[str, float]] = {}
        self._categories: dict[str, str] = {}

    def category(self, task: RatingTask) -> str:
        if task.category:
            return task.category
        if task.id not in self._categories:
            if self._guesser is None:
                self._guesser = CategoryGuesser(self.embedder)
            self._categories[task.id] = self._guesser.guess(task.prompt)[0]
        return self._categories[task.id]

    def features(self, task: RatingTask, index: int) -> dict[str, float]:
        key = (task.id, index)
        if key not in self._features:
            self._features[key] = self._compute(task, index)
        return self._features[key]

    def _compute(self, task: RatingTask, index: int) -> dict[str, float]:
        text = task.responses[index].text
        category = self.category(task)
        if category in spec.CATEGORIES:
            spec_value = 1.0 if follows_spec(category, text, task.reference)[0] else -1.0
        else:  # an ordinary request: refusing it, or hiding behind a limit, is the failure the spec names
            spec_value = -1.0 if text.strip() and evades(text) else 0.0
        empty = not text.strip()
        vectors = self.embedder.encode([task.prompt, text or " "] + ([task.reference] if task.reference else []))
        return {
            "spec": spec_value,
            "reference": float(vectors[1] @ vectors[2]) if task.reference else 0.0,
            "on_topic": 0.0 if empty else float(vectors[0] @ vectors[1]),
            "repetition": -repetition(text),
            "complete": -1.0 if empty else (-0.5 if task.truncated and task.truncated[index] else 0.0),
            "length": length_penalty(text),
        }


# --------------------------------------------------------------------------------------------------------------
# Raters and panels
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SimulatedRater:
    """One simulated person: the spec's weights plus noise of its own (0 = a perfectly consistent rater)."""

    id: str
    seed: int = 0
    noise: float = 0.0
    weights: Mapping[str, float] = field(default_factory=lambda: dict(WEIGHTS))
    features: FeatureCache = field(default_factory=FeatureCache)

    def scores(self, task: RatingTask) -> list[float]:
        out = []
        for index in range(len(task.responses)):
            values = self.features.features(task, index)
            score = sum(self.weights.get(name, 0.0) * value for name, value in values.items())
            if self.noise:
                digest = hashlib.sha256(f"{self.id}|{self.seed}|{task.id}|{index}".encode()).digest()
                score += random.Random(digest).gauss(0.0, self.noise)
            out.append(score)
        return out

    def ranks(self, task: RatingTask) -> list[int]:
        """1 = best; responses whose scores are equal (to 1e-9) tie."""
        scores = self.scores(task)
        distinct = sorted({round(s, 9) for s in scores}, reverse=True)
        return [distinct.index(round(s, 9)) + 1 for s in scores]

    def compare(self, task: RatingTask) -> Comparison | None:
        """The rater's ranking as a comparison record, or None when it sees no difference at all."""
        ranks = self.ranks(task)
        if len(set(ranks)) == 1:
            return None
        category = task.category or self.features.category(task)
        return Comparison(
            id=f"{task.id}/{self.id}",
            context=task.context,
            responses=task.responses,
            ranks=tuple(ranks),
            rater=Rater(self.id, "simulated"),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            source="ranking",
            category=category,
            meta={"task": task.id, **dict(task.meta)},
        )


def make_panel(
    size: int = 3, *, noise: float = 0.5, seed: int = 0, prefix: str = "sim", features: FeatureCache | None = None
) -> list[SimulatedRater]:
    """`size` raters sharing one feature cache (`features`, or a new one), with different noise seeds."""
    if size < 1:
        raise ValueError(f"a panel needs at least one rater, got {size}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    features = features or FeatureCache()
    return [SimulatedRater(f"{prefix}-{seed + i}", seed=seed + i, noise=noise, features=features) for i in range(size)]


def pair_agreement(a: Sequence[int], b: Sequence[int]) -> tuple[int, int]:
    """(agreements, comparable pairs) between two rankings of the same responses; a pair counts when both order
    it strictly."""
    agree = total = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            if a[i] == a[j] or b[i] == b[j]:
                continue
            total += 1
            agree += (a[i] < a[j]) == (b[i] < b[j])
    return agree, total


def panel_agreement(panel: Sequence[SimulatedRater], tasks: Sequence[RatingTask]) -> float:
    """Mean pairwise agreement between every two raters of the panel over every response pair of every task
    (the statistic InstructGPT reports as ~73% between its labelers). NaN if nothing is comparable."""
    agree = total = 0
    rankings = [[rater.ranks(task) for task in tasks] for rater in panel]
    for r1 in range(len(panel)):
        for r2 in range(r1 + 1, len(panel)):
            for a, b in zip(rankings[r1], rankings[r2], strict=True):
                got, n = pair_agreement(a, b)
                agree += got
                total += n
    return agree / total if total else math.nan


def calibrate_noise(
    tasks: Sequence[RatingTask],
    target: float,
    *,
    size: int = 3,
    seed: int = 0,
    steps: int = 12,
    features: FeatureCache | None = None,
) -> tuple[float, float]:
    """The noise level at which a panel's measured agreement on `tasks` comes closest to `target`, by bisection
    (agreement falls as noise grows). Returns (noise, measured agreement). Pass the panel's `features` to compute
    the (noise-free) feature values once for calibration and rating alike."""
    if not 0.5 < target <= 1.0:
        raise ValueError(f"target agreement must be in (0.5, 1], got {target}")
    features = features or FeatureCache()

    def agreement(noise: float) -> float:
        panel = [SimulatedRater(f"sim-{seed + i}", seed=seed + i, noise=noise, features=features) for i in range(size)]
        return panel_agreement(panel, tasks)

    low, high = 0.0, 0.5
    while agreement(high) > target and high < 64:
        high *= 2
    best = (high, agreement(high))
    for _ in range(steps):
        middle = (low + high) / 2
        measured = agreement(middle)
        if abs(measured - target) < abs(best[1] - target):
            best = (middle, measured)
        if measured > target:
            low = middle
        else:
            high = middle
    return best


def calibrated_panel(
    tasks: Sequence[RatingTask],
    *,
    size: int,
    noise: float,
    agreement: float | None,
    seed: int = 0,
    features: FeatureCache | None = None,
) -> tuple[list[SimulatedRater], float, float]:
    """The panel that rates `tasks`: `size` raters with score `noise`, or, when `agreement` is given, with the noise
    that brings their measured agreement closest to it. Returns (panel, noise, measured agreement; NaN for one rater).

    Agreement is a property of ranking the policy's own samples, so it is calibrated and measured without the
    reference answers `with_reference` added: a demonstration is usually easy to rank, and counting those pairs
    would call for far noisier raters than the target describes."""
    samples = [t for t in map(without_reference, tasks) if t is not None] or list(tasks)
    features = features or FeatureCache()
    if agreement is not None:
        noise, measured = calibrate_noise(samples, agreement, size=size, seed=seed, features=features)
    panel = make_panel(size, noise=noise, seed=seed, features=features)
    if agreement is None:
        measured = panel_agreement(panel, samples) if size > 1 else math.nan
    return panel, noise, measured


def rate_tasks(
    panel: Sequence[SimulatedRater], tasks: Sequence[RatingTask], *, every_rater: bool = False
) -> list[Comparison]:
    """Comparisons for training: each task ranked by one rater in turn (as InstructGPT's labelers shared the work),
    or by every rater (`every_rater`, for measuring agreement or training on all of a panel's opinions)."""
    out: list[Comparison] = []
    for n, task in enumerate(tasks):
        raters = panel if every_rater else [panel[n % len(panel)]]
        for rater in raters:
            comparison = rater.compare(task)
            if comparison is not None:
                out.append(comparison)
    return out
