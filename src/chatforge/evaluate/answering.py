"""What every evaluation that generates does: answer prompt conversations once, greedily, in batches, and save
its report as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from chatforge.chat import Conversation
from chatforge.generation import Completion, SamplingParams, TorchEngine


def greedy_completions(
    engine: TorchEngine,
    conversations: Sequence[Conversation],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    on_batch: Callable[[int, int], None] | None = None,
) -> Iterator[Completion]:
    """One greedy completion per conversation, in order; ``on_batch(done, total)`` is told after each batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0)
    for start in range(0, len(conversations), batch_size):
        batch = conversations[start : start + batch_size]
        yield from engine.chat(batch, params)
        if on_batch is not None:
            on_batch(start + len(batch), len(conversations))


def write_json(path: str | Path, report: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
