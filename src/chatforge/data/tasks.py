"""Rating tasks: a prompt and K responses to rank, as `chatforge sample` writes them and raters (people in the
workbench, or the simulated panel) read them. A data record, like a comparison: it lives with the data, below both
the sampler that writes it and the raters that read it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chatforge.atomic import write_text_atomically
from chatforge.chat import Message, parse_messages, validate_messages
from chatforge.data.comparisons import Response


class RatingError(ValueError):
    """A rating task that cannot be used; the message names the task and the problem."""


@dataclass(frozen=True)
class RatingTask:
    """A prompt (conversation ending with the user) and K responses to rank, as `chatforge sample` writes them."""

    id: str
    context: tuple[Message, ...]
    responses: tuple[Response, ...]
    category: str | None = None
    reference: str | None = None
    truncated: tuple[bool, ...] = ()  # per response: cut off by the token limit
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.responses) < 2:
            raise RatingError(f"task {self.id!r}: needs at least 2 responses, has {len(self.responses)}")
        if self.truncated and len(self.truncated) != len(self.responses):
            raise RatingError(f"task {self.id!r}: 'truncated' has {len(self.truncated)} entries for {len(self.responses)} responses")
        try:
            validate_messages(self.context, last="user")
        except ValueError as err:
            raise RatingError(f"task {self.id!r}: context: {err}") from None

    @property
    def prompt(self) -> str:
        return self.context[-1].content

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "context": [m.to_dict() for m in self.context],
            "responses": [r.to_dict() for r in self.responses],
            "category": self.category,
            "reference": self.reference,
            "truncated": list(self.truncated),
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> RatingTask:
        try:
            responses = tuple(
                Response(str(r["text"]), r.get("model")) if isinstance(r, Mapping) else Response(str(r))
                for r in record["responses"]
            )
            return cls(
                id=str(record["id"]),
                context=tuple(parse_messages(record["context"])),
                responses=responses,
                category=record.get("category"),
                reference=record.get("reference"),
                truncated=tuple(bool(t) for t in record.get("truncated") or ()),
                meta=dict(record.get("meta") or {}),
            )
        except KeyError as err:
            raise RatingError(f"task {record.get('id', '?')!r}: missing {err.args[0]!r}") from None
        except (TypeError, ValueError) as err:
            raise RatingError(f"task {record.get('id', '?')!r}: {err}") from None


def load_tasks(path: str | os.PathLike[str]) -> list[RatingTask]:
    tasks = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                tasks.append(RatingTask.from_dict(json.loads(line)))
            except (json.JSONDecodeError, RatingError) as err:
                raise RatingError(f"{path}:{number}: {err}") from None
    return tasks


def save_tasks(path: str | os.PathLike[str], tasks: Iterable[RatingTask]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(target, "".join(json.dumps(task.to_dict(), ensure_ascii=False) + "\n" for task in tasks))
    return target


REFERENCE_MODEL = "reference"  # the `model` of a demonstration ranked among policy samples


def with_reference(task: RatingTask) -> RatingTask:
    """`task` with its reference answer (the demonstration written for the prompt) as one more response to rank,
    when it has one that is not already among the responses and there is room (K <= 9).

    Raters then rank the demonstration against the policy's samples like any other answer (it is not assumed best).
    On a small budget this matters: a 135M policy's K samples for a harmful request rarely include a refusal, so
    without the demonstration the reward model would never see the behaviour the spec asks for ranked above the
    failures."""
    if not task.reference or len(task.responses) >= 9 or task.reference in {r.text for r in task.responses}:
        return task
    return replace(
        task,
        responses=(*task.responses, Response(task.reference, REFERENCE_MODEL)),
        truncated=(*task.truncated, False) if task.truncated else (),
    )


def without_reference(task: RatingTask) -> RatingTask | None:
    """`task` with the reference answer that `with_reference` added taken out again (None if fewer than two answers
    remain). The panel's noise is calibrated on these: a demonstration is usually easy to rank, and agreement
    measured with it would call for far noisier raters than the target describes."""
    keep = [i for i, r in enumerate(task.responses) if r.model != REFERENCE_MODEL]
    if len(keep) == len(task.responses):
        return task
    if len(keep) < 2:
        return None
    return replace(
        task,
        responses=tuple(task.responses[i] for i in keep),
        truncated=tuple(task.truncated[i] for i in keep) if task.truncated else (),
    )
