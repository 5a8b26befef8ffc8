"""Edited answers: a person took a model's answer and rewrote it. The rewrite is an SFT target; the original,
kept in `meta["model_answer"]`, is what it improved on, so later stages can use the pair as (chosen, rejected).

One JSON object per line:

    {"prompt": "text" | [{"role", "content"}, ...],   # the conversation so far, ending with the user
     "model_answer": "...",                             # what the model said
     "edited_answer": "...",                            # what the editor made of it
     "editor": "alice",                                 # optional: who edited
     "edited_at": "2025-05-01T12:00:00Z" | 1746100800,  # optional: ISO 8601 or Unix seconds
     "id": "...", "meta": {...}}                        # optional

The SFT conversation is the prompt followed by the edited answer. Every problem is reported with file and line
(or skipped and counted with `strict=False`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chatforge.chat import Conversation, ConversationError, Message, parse_messages, validate_messages
from chatforge.data.base import DataError, SkipRecord, Source, content_id, conversation_error_reason


@dataclass(frozen=True)
class EditRecord:
    prompt: tuple[Message, ...]  # ends with a user message
    model_answer: str
    edited_answer: str
    editor: str | None = None
    edited_at: str | None = None  # ISO 8601
    id: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def unchanged(self) -> bool:
        return self.model_answer.strip() == self.edited_answer.strip()

    def conversation(self, source: str = "edits") -> Conversation:
        """The SFT example: the prompt answered with the edited answer; the original answer stays in meta."""
        messages = (*self.prompt, Message("assistant", self.edited_answer))
        meta = {
            **self.meta,
            "model_answer": self.model_answer,
            "editor": self.editor,
            "edited_at": self.edited_at,
            "unchanged": self.unchanged,
        }
        return Conversation(messages, id=self.id or content_id(messages), source=source, meta=meta)

    def rejected(self) -> Conversation:
        """The prompt answered with the model's original answer (the rejected side of a preference pair)."""
        messages = (*self.prompt, Message("assistant", self.model_answer))
        return Conversation(messages, id=f"{self.id or content_id(self.prompt)}-rejected", source="edits")


def parse_edit_record(record: Any) -> EditRecord:
    """Validate one edit record; SkipRecord with a message that says what is wrong."""
    if not isinstance(record, Mapping):
        raise SkipRecord("record is not an object", f"expected a JSON object, got {type(record).__name__}")
    for key in ("prompt", "model_answer", "edited_answer"):
        if key not in record:
            raise SkipRecord(f"missing '{key}'", f"missing '{key}' (an edit needs prompt, model_answer, edited_answer)")
    prompt = _prompt(record["prompt"])
    answers = {}
    for key in ("model_answer", "edited_answer"):
        value = record[key]
        if not isinstance(value, str) or not value.strip():
            raise SkipRecord(f"empty or non-text '{key}'", f"'{key}' must be non-empty text")
        answers[key] = value
    editor = record.get("editor")
    if editor is not None and not isinstance(editor, str):
        raise SkipRecord("non-text 'editor'", f"'editor' must be text, got {type(editor).__name__}")
    own_id = record.get("id")
    if own_id is not None and not isinstance(own_id, (str, int)):
        raise SkipRecord("bad 'id'", f"'id' must be text or an integer, got {type(own_id).__name__}")
    meta = record.get("meta") or {}
    if not isinstance(meta, Mapping):
        raise SkipRecord("bad 'meta'", "'meta' must be an object")
    return EditRecord(
        prompt=prompt,
        model_answer=answers["model_answer"],
        edited_answer=answers["edited_answer"],
        editor=editor or None,
        edited_at=_timestamp(record.get("edited_at")),
        id=str(own_id) if own_id is not None else None,
        meta=dict(meta),
    )


def _prompt(raw: Any) -> tuple[Message, ...]:
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    try:
        messages = parse_messages(raw)
        validate_messages(messages, last="user")
    except ConversationError as err:
        raise SkipRecord(conversation_error_reason(err).replace("conversation", "prompt", 1), f"prompt: {err}") from None
    return tuple(messages)


def _timestamp(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return datetime.fromtimestamp(raw, tz=UTC).isoformat()
    if isinstance(raw, str):
        try:
            return datetime.fromisoformat(raw).isoformat()
        except ValueError:
            pass
    raise SkipRecord("bad 'edited_at'", f"'edited_at' must be an ISO 8601 time or Unix seconds, got {raw!r}")


def iter_edit_records(path: str | Path, *, strict: bool = True) -> Iterator[tuple[str, EditRecord | SkipRecord]]:
    """(where, record) for each line; with strict, the first bad line raises a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                try:
                    record: Any = json.loads(line)
                except json.JSONDecodeError as err:
                    raise SkipRecord("not valid JSON", f"not valid JSON ({err.msg}, column {err.colno})") from None
                yield where, parse_edit_record(record)
            except SkipRecord as skip:
                if strict:
                    raise DataError(f"{where}: {skip}") from None
                yield where, skip


class Edits(Source):
    """Edited answers from a JSONL file as SFT conversations (prompt + edited answer)."""

    name = "edits"

    def __init__(self, path: str | Path, *, name: str = "edits", strict: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = name
        self.strict = strict

    def records(self) -> list[EditRecord]:
        """The valid edit records (for preference pairs: `conversation()` is chosen, `rejected()` rejected)."""
        return [r for _, r in iter_edit_records(self.path, strict=self.strict) if isinstance(r, EditRecord)]

    def _read(self) -> Iterator[Conversation]:
        for where, record in iter_edit_records(self.path, strict=self.strict):
            self.stats.read += 1
            if isinstance(record, SkipRecord):
                self.stats.skip(record.reason)
                continue
            try:
                yield record.conversation(self.name)
            except ConversationError as err:  # e.g. the whole thing is over the size limit
                if self.strict:
                    raise DataError(f"{where}: {err}") from None
                self.stats.skip(conversation_error_reason(err))
