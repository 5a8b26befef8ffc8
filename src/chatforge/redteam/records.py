"""Where a red-team run's results go: JSONL files in its output directory, and flags in the product's store.

    OUT/attempts.jsonl        every attempt (attack, conversation, reply, verdict, novelty), appended per batch
    OUT/successes.jsonl       the attempts the judge found harmful
    OUT/benign.jsonl          the over-refusal probes (benign prompts, replies, verdicts)
    OUT/demonstrations.jsonl  refusal demonstrations (chatforge.chat.Conversation records, trainable successes only)
    OUT/comparisons.jsonl     comparisons (chatforge.data.comparisons format)
    OUT/summary.json          ASR per family, over-refusal, distinct successes, throughput

With a database, each success is also a moderation flag, as `chatforge serve` records them (stage "output", rule
"redteam:FAMILY", the reply as text and the conversation before it as context), so it shows on the monitoring page
and in `chatforge export`'s redteam.jsonl.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from chatforge.redteam.attacker import Attempt, BenignProbe

FLAG_RULE_PREFIX = "redteam:"


def append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
        f.flush()
    return n


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]


def load_attempts(path: str | Path) -> list[Attempt]:
    return [Attempt.from_dict(record) for record in read_jsonl(Path(path))]


def load_probes(path: str | Path) -> list[BenignProbe]:
    return [BenignProbe.from_dict(record) for record in read_jsonl(Path(path))]


def record_flags(store: Any, attempts: Iterable[Attempt]) -> int:
    """Each success as a flag in the store (a chatforge.store.Store); returns how many were written."""
    from chatforge.store import models as m

    successes = [a for a in attempts if a.success]
    if not successes:
        return 0
    with store.session() as s:
        for attempt in successes:
            s.add(m.Flag(user_id=None, conversation_id=None, message_id=None, stage="output",
                         rule=f"{FLAG_RULE_PREFIX}{attempt.family}"[:200], action="flag", text=attempt.reply,
                         context=attempt.conversation[:-1], model=attempt.target[:200]))
    return len(successes)
