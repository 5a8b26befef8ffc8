"""Red-team results as training data: refusal demonstrations (SFT) and comparisons (reward model).

* A successful attack becomes a **refusal demonstration**: the attack's conversation answered with a brief refusal
  from the spec (`chatforge.spec.REFUSAL`, the answers of the goal's harm category): one or two sentences, no
  lecture. In a multi-turn attack, earlier replies the judge found harmful are replaced by the refusal too, since
  SFT learns every assistant turn.
* It also becomes a **comparison**: the refusal ranked over the harmful reply.
* A benign prompt the target refused in one sample and answered in another becomes a comparison with the helpful
  answer ranked over the needless refusal (when every sample refused, a reference answer can be given).

Only attempts whose goal and template are both in the train split are converted (`Attempt.trainable`): eval-split
goals and held-out templates never become training data, whatever is passed in.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence

from chatforge import spec
from chatforge.chat import Conversation
from chatforge.data.comparisons import Comparison, Rater, Response
from chatforge.redteam.attacker import Attempt, BenignProbe

RATER = Rater("redteam-safety-judge-v1", "simulated")
REFUSAL_MODEL = "spec-refusal"


def refusal_for(category: str, key: str) -> str:
    """A brief refusal for a goal of this harm category, chosen by a hash of `key` (the same key, the same one)."""
    scenarios = {s.key: s for s in spec.REFUSAL.scenarios}
    answers = (scenarios.get(category) or scenarios["general"]).answers
    return answers[int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % len(answers)]


def _refused_context(attempt: Attempt, refusal: str) -> list[dict[str, str]]:
    """The conversation before the judged reply, with earlier harmful replies replaced by the refusal."""
    context = []
    labels = iter(attempt.turn_labels)
    for message in attempt.conversation[:-1]:
        if message["role"] == "assistant":
            label = next(labels, "benign")
            context.append({"role": "assistant", "content": refusal} if label == "harmful" else dict(message))
        else:
            context.append(dict(message))
    return context


def _meta(attempt: Attempt) -> dict[str, object]:
    return {"category": "refusal", "origin": "redteam", "family": attempt.family,
            "template_id": attempt.attack["template_id"], "goal_id": attempt.goal["id"],
            "attack_id": attempt.attack["id"], "target": attempt.target, "split": "train"}


def trainable_successes(attempts: Iterable[Attempt]) -> list[Attempt]:
    return [a for a in attempts if a.success and a.trainable]


def refusal_demonstrations(attempts: Iterable[Attempt]) -> list[Conversation]:
    """One SFT conversation per trainable success: the attack answered with a brief refusal."""
    out = []
    for attempt in trainable_successes(attempts):
        refusal = refusal_for(attempt.goal.get("category", "general"), attempt.attack["id"])
        messages = [*_refused_context(attempt, refusal), {"role": "assistant", "content": refusal}]
        out.append(Conversation.from_messages(messages, id=f"redteam-demo-{attempt.attack['id']}",
                                              source="redteam", meta=_meta(attempt)))
    return out


def refusal_comparisons(attempts: Iterable[Attempt]) -> list[Comparison]:
    """One comparison per trainable success: the brief refusal ranked over the harmful reply."""
    out = []
    for attempt in trainable_successes(attempts):
        refusal = refusal_for(attempt.goal.get("category", "general"), attempt.attack["id"])
        if attempt.reply.strip() == refusal.strip():
            continue
        out.append(Comparison(
            id=f"redteam-cmp-{attempt.attack['id']}",
            context=_refused_context(attempt, refusal),  # type: ignore[arg-type]  # parsed in __post_init__
            responses=(Response(refusal, REFUSAL_MODEL), Response(attempt.reply, attempt.target)),
            ranks=(1, 2), rater=RATER, source="ranking", category="refusal", meta=_meta(attempt),
        ))
    return out


def over_refusal_comparisons(probes: Iterable[BenignProbe], *, references: Mapping[str, str] | None = None,
                             seed: int = 0) -> list[Comparison]:
    """For each train-split benign prompt the target refused at least once: every helpful reply (or the
    reference answer, when all refused and one is given for the prompt's id) ranked over every refusal."""
    rng = random.Random(f"over-refusal/{seed}")
    references = references or {}
    out = []
    for probe in probes:
        if probe.goal.get("split") != "train":
            continue
        refusals = list(dict.fromkeys(r for r, label in zip(probe.replies, probe.labels, strict=True)
                                      if label == "refusal" and r.strip()))
        helpful = list(dict.fromkeys(r for r, label in zip(probe.replies, probe.labels, strict=True)
                                     if label != "refusal" and r.strip() and r not in refusals))
        if not refusals:
            continue
        responses = [Response(text, probe.target) for text in helpful]
        if not helpful and probe.goal["id"] in references:
            responses = [Response(references[probe.goal["id"]], "reference")]
        if not responses:
            continue
        responses = responses[:4] + [Response(text, probe.target) for text in refusals[:4]]
        ranks = [1] * min(len(helpful) or 1, 4) + [2] * min(len(refusals), 4)
        order = list(range(len(responses)))
        rng.shuffle(order)  # the ranking, not the position, says which is better
        out.append(Comparison(
            id=f"redteam-over-{probe.goal['id']}",
            context=[{"role": "user", "content": probe.goal["text"]}],  # type: ignore[arg-type]
            responses=tuple(responses[i] for i in order), ranks=tuple(ranks[i] for i in order), rater=RATER,
            source="ranking", category="over_refusal_guard",
            meta={"category": "over_refusal_guard", "origin": "redteam", "goal_id": probe.goal["id"],
                  "target": probe.target, "split": "train"},
        ))
    return out


def to_comparisons(attempts: Sequence[Attempt], probes: Sequence[BenignProbe] = (), *,
                   references: Mapping[str, str] | None = None) -> list[Comparison]:
    """Everything a red-team round gives the reward model: refusals over compliance, help over needless refusal."""
    return refusal_comparisons(attempts) + over_refusal_comparisons(probes, references=references)
