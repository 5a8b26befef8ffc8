"""Comparisons: a conversation so far, K responses to it, and how one rater ranked them.

A comparison is the reward model's training example (InstructGPT's "rank K outputs" task). One JSON object per
line:

    {"id": "cmp-0001",
     "context": [{"role": "user", "content": "Name a prime."}],   # ends with the user; a plain string is a
                                                                   # single user message
     "responses": [{"text": "7", "model": "sft-r1"},                # 2 <= K <= 9, each non-empty and distinct
                   {"text": "8", "model": "sft-r1"},
                   {"text": "Seven.", "model": "sft-r0"}],
     "ranks": [1, 3, 1],                                           # 1 = best; equal ranks are ties
     "rater": {"id": "alice", "kind": "human"},                    # or {"id": "spec-v1", "kind": "simulated"}
     "created_at": "2025-05-01T12:00:00+00:00",                    # ISO 8601 (Unix seconds are converted)
     "source": "ranking",                                          # ranking | thumbs | ab | edit | import
     "category": "math", "meta": {...}}                            # optional

`load_comparisons` also reads the common pairwise formats, one pair a line, as K = 2 comparisons:

* ``{"prompt": "...", "chosen": "...", "rejected": "..."}`` with plain strings;
* TRL's conversational format: ``chosen``/``rejected`` as message lists, with a ``prompt`` message list or
  (implicit prompt) the whole conversation in each, sharing everything but the last assistant turn;
* Anthropic HH: ``chosen``/``rejected`` as one text with ``"\\n\\nHuman: "`` / ``"\\n\\nAssistant: "`` turns.

Every problem names the record (by id, and by FILE:LINE when read from a file) and what is wrong with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from chatforge.chat import Conversation, ConversationError, Message, parse_messages, validate_messages
from chatforge.data.base import DataError

if TYPE_CHECKING:
    from chatforge.data.edits import EditRecord

MIN_RESPONSES = 2
# InstructGPT showed labelers between 4 and 9 responses; more than 9 is more than a person can rank reliably.
MAX_RESPONSES = 9

RaterKind = Literal["human", "simulated"]
RATER_KINDS: tuple[str, ...] = ("human", "simulated")

# Where a comparison came from: the ranking task (rank K samples), thumbs up/down given to different answers to
# the same prompt, the chat UI's "which answer is better" A/B choice, a person's edit of an answer (the edit beats
# the original), or a dataset imported from elsewhere.
SOURCES: tuple[str, ...] = ("ranking", "thumbs", "ab", "edit", "import")

_NATIVE_KEYS = frozenset(
    {"id", "context", "responses", "ranks", "rater", "created_at", "source", "category", "meta"}
)


class ComparisonError(DataError):
    """A comparison that cannot be used; the message names the record (and file and line) and the problem."""


@dataclass(frozen=True)
class Response:
    text: str
    model: str | None = None  # the model or checkpoint that wrote it (None when unknown, e.g. imported data)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "model": self.model}


@dataclass(frozen=True)
class Rater:
    id: str  # a person's id, or the name and version of a simulated rater
    kind: RaterKind = "human"

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "kind": self.kind}


@dataclass(frozen=True)
class Comparison:
    """One rater's ranking of K responses to one context. Lists given for the sequence fields become tuples."""

    id: str
    context: tuple[Message, ...]  # validated, ends with a user message
    responses: tuple[Response, ...]
    ranks: tuple[int, ...]  # ranks[k] of responses[k]; 1 = best, equal = tie
    rater: Rater | None = None  # None when unknown (imported data)
    created_at: str | None = None  # ISO 8601
    source: str = "ranking"
    category: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Accept lists (and Message dicts for the context) so that building a record by hand is not a chore.
        object.__setattr__(self, "responses", tuple(self.responses))
        object.__setattr__(self, "ranks", tuple(self.ranks))
        if not isinstance(self.context, tuple) or not all(isinstance(m, Message) for m in self.context):
            try:
                object.__setattr__(self, "context", tuple(parse_messages(self.context)))
            except ConversationError as err:
                raise ComparisonError(f"comparison {self.id!r}: context: {err}") from None
        problems = comparison_problems(self)
        if problems:
            raise ComparisonError(f"comparison {self.id!r}: " + "; ".join(problems))

    @property
    def k(self) -> int:
        return len(self.responses)

    def pairs(self) -> list[tuple[int, int]]:
        """(better, worse) response indices of every pair the ranking orders strictly; ties give no pair."""
        return [(i, j) for i in range(self.k) for j in range(self.k) if self.ranks[i] < self.ranks[j]]

    def best(self) -> list[int]:
        """Indices of the top-ranked responses (more than one when they tie for first)."""
        top = min(self.ranks)
        return [i for i, r in enumerate(self.ranks) if r == top]

    def conversation(self, index: int) -> Conversation:
        """The context answered with response ``index``: what the reward model scores."""
        messages = (*self.context, Message("assistant", self.responses[index].text))
        return Conversation(messages, id=f"{self.id}/{index}", source=self.source)

    @property
    def category_name(self) -> str | None:
        """The category, from the record or, failing that, from ``meta["category"]``."""
        if self.category:
            return self.category
        value = self.meta.get("category")
        return str(value) if value not in (None, "") else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "context": [m.to_dict() for m in self.context],
            "responses": [r.to_dict() for r in self.responses],
            "ranks": list(self.ranks),
            "rater": self.rater.to_dict() if self.rater else None,
            "created_at": self.created_at,
            "source": self.source,
            "category": self.category,
            "meta": dict(self.meta),
        }


def without_model(comparison: Comparison, model: str) -> Comparison | None:
    """The comparison with the responses written by `model` left out (their ranks too), or None when fewer than two
    responses, or no strictly ordered pair, remain. Used to measure a reward model on policy samples alone when the
    rankings also held demonstrations."""
    keep = [i for i, r in enumerate(comparison.responses) if r.model != model]
    if len(keep) == comparison.k:
        return comparison
    ranks = [comparison.ranks[i] for i in keep]
    if len(keep) < 2 or len(set(ranks)) < 2:
        return None
    # re-number the ranks densely (1 = best) so they stay valid after the removal
    distinct = sorted(set(ranks))
    return dataclasses.replace(
        comparison,
        responses=tuple(comparison.responses[i] for i in keep),
        ranks=tuple(distinct.index(r) + 1 for r in ranks),
    )


def comparison_problems(c: Comparison) -> list[str]:
    """Every reason ``c`` cannot be used as a ranking (empty when it can)."""
    out: list[str] = []
    if not isinstance(c.id, str) or not c.id.strip():
        out.append(f"id must be non-empty text, got {c.id!r}")
    try:
        validate_messages(c.context, last="user")
    except ConversationError as err:
        out.append(f"context: {err}")
    k = len(c.responses)
    if not MIN_RESPONSES <= k <= MAX_RESPONSES:
        out.append(f"has {k} responses; a comparison needs between {MIN_RESPONSES} and {MAX_RESPONSES}")
    seen: dict[str, int] = {}
    for i, response in enumerate(c.responses):
        if not isinstance(response, Response):
            out.append(f"response {i} must be a Response, got {type(response).__name__}")
            continue
        if not isinstance(response.text, str):
            out.append(f"response {i}: text must be a string, got {type(response.text).__name__}")
            continue
        if not response.text.strip():
            out.append(f"response {i} is empty")
            continue
        if "\x00" in response.text:
            out.append(f"response {i} contains a NUL character")
        if response.model is not None and not isinstance(response.model, str):
            out.append(f"response {i}: model must be text, got {type(response.model).__name__}")
        # Two copies of one answer ranked apart contradict each other, and tied they teach nothing.
        key = response.text.strip()
        if key in seen:
            out.append(f"responses {seen[key]} and {i} are the same text")
        else:
            seen[key] = i
    ranks = c.ranks
    if len(ranks) != k:
        out.append(f"has {len(ranks)} ranks for {k} responses; give one rank per response")
    elif not all(isinstance(r, int) and not isinstance(r, bool) for r in ranks):
        out.append(f"ranks must be integers, got {list(ranks)!r}")
    elif any(not 1 <= r <= k for r in ranks):
        out.append(f"ranks must be between 1 (best) and {k}, got {list(ranks)}")
    elif min(ranks) != 1:
        out.append(f"the best rank must be 1, got {list(ranks)}")
    elif len(set(ranks)) == 1 and k >= MIN_RESPONSES:
        out.append(f"all {k} responses are tied ({list(ranks)}): the ranking states no preference")
    if c.rater is not None:
        if not isinstance(c.rater, Rater):
            out.append(f"rater must be a Rater, got {type(c.rater).__name__}")
        elif not isinstance(c.rater.id, str) or not c.rater.id.strip():
            out.append(f"rater id must be non-empty text, got {c.rater.id!r}")
        elif c.rater.kind not in RATER_KINDS:
            out.append(f"rater kind must be one of {', '.join(RATER_KINDS)}, got {c.rater.kind!r}")
    if c.created_at is not None:
        try:
            datetime.fromisoformat(c.created_at)
        except (TypeError, ValueError):
            out.append(f"created_at must be an ISO 8601 time, got {c.created_at!r}")
    if c.source not in SOURCES:
        out.append(f"source must be one of {', '.join(SOURCES)}, got {c.source!r}")
    if c.category is not None and not isinstance(c.category, str):
        out.append(f"category must be text, got {type(c.category).__name__}")
    if not isinstance(c.meta, Mapping):
        out.append(f"meta must be an object, got {type(c.meta).__name__}")
    return out


# --------------------------------------------------------------------------------------------------------------
# Parsing records
# --------------------------------------------------------------------------------------------------------------


def _derived_id(context: Sequence[Message], texts: Sequence[str], extra: Any = None) -> str:
    """A stable id from the content: the same record gets the same id on any machine."""
    payload = json.dumps(
        [[m.to_dict() for m in context], list(texts), extra], ensure_ascii=False, sort_keys=True
    )
    return "cmp-" + hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:16]


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
    raise ValueError(f"created_at must be an ISO 8601 time or Unix seconds, got {raw!r}")


def _context(raw: Any) -> tuple[Message, ...]:
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    try:
        messages = parse_messages(raw)
        validate_messages(messages, last="user")
    except ConversationError as err:
        raise ValueError(f"context: {err}") from None
    return tuple(messages)


def _optional_text(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and key == "id":
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be text, got {type(value).__name__}")
    return value


def _meta(record: Mapping[str, Any]) -> dict[str, Any]:
    meta = record.get("meta")
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ValueError(f"'meta' must be an object, got {type(meta).__name__}")
    return dict(meta)


def _native(record: Mapping[str, Any]) -> Comparison:
    unknown = sorted(set(record) - _NATIVE_KEYS)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(map(repr, unknown))}; a comparison has {', '.join(sorted(_NATIVE_KEYS))} "
            "(put anything else in 'meta')"
        )
    for key in ("context", "responses", "ranks"):
        if key not in record:
            raise ValueError(f"missing '{key}'")
    context = _context(record["context"])
    raw_responses = record["responses"]
    if not isinstance(raw_responses, list):
        raise ValueError(f"'responses' must be a list, got {type(raw_responses).__name__}")
    responses = []
    for i, item in enumerate(raw_responses):
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, Mapping):
            raise ValueError(f"response {i} must be text or an object with 'text', got {type(item).__name__}")
        if "text" not in item:
            raise ValueError(f"response {i} has no 'text'")
        extra = sorted(set(item) - {"text", "model"})
        if extra:
            raise ValueError(
                f"response {i}: unknown key(s) {', '.join(map(repr, extra))}; expected text, model"
            )
        text, model = item["text"], item.get("model")
        if not isinstance(text, str):
            raise ValueError(f"response {i}: 'text' must be a string, got {type(text).__name__}")
        if model is not None and not isinstance(model, str):
            raise ValueError(f"response {i}: 'model' must be text, got {type(model).__name__}")
        responses.append(Response(text, model))
    ranks = record["ranks"]
    if not isinstance(ranks, list):
        raise ValueError(f"'ranks' must be a list of integers, got {type(ranks).__name__}")
    if not all(isinstance(r, int) and not isinstance(r, bool) for r in ranks):
        raise ValueError(f"'ranks' must be a list of integers, got {ranks!r}")
    rater = None
    raw_rater = record.get("rater")
    if raw_rater is not None:
        if not isinstance(raw_rater, Mapping) or "id" not in raw_rater:
            raise ValueError("'rater' must be an object with 'id' and 'kind' (human or simulated)")
        rater_id, kind = raw_rater["id"], raw_rater.get("kind", "human")
        if not isinstance(rater_id, str):
            raise ValueError(f"rater 'id' must be text, got {type(rater_id).__name__}")
        rater = Rater(rater_id, kind)
    source = _optional_text(record, "source") or "ranking"
    ident = _optional_text(record, "id") or _derived_id(
        context, [r.text for r in responses], [ranks, raw_rater, record.get("created_at")]
    )
    return Comparison(
        id=ident,
        context=context,
        responses=tuple(responses),
        ranks=tuple(ranks),
        rater=rater,
        created_at=_timestamp(record.get("created_at")),
        source=source,
        category=_optional_text(record, "category"),
        meta=_meta(record),
    )


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


def parse_hh_text(text: str) -> list[Message]:
    """An Anthropic HH transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") as messages."""
    if not text.startswith("\n\n"):
        text = "\n\n" + text  # some copies drop the leading blank line
    parts = _HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise ValueError("text without '\\n\\nHuman:' / '\\n\\nAssistant:' turns")
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append(Message("user" if speaker == "Human" else "assistant", content.strip()))
    return messages


def _looks_like_hh(text: str) -> bool:
    return bool(re.match(r"(\n\n)?Human:", text)) and "\n\nAssistant:" in text


def _as_messages(value: Any, what: str) -> list[Message] | str:
    """A side of a pairwise record: message list, HH transcript (as messages) or a plain response string."""
    if isinstance(value, str):
        return parse_hh_text(value) if _looks_like_hh(value) else value
    if isinstance(value, list):
        try:
            return parse_messages(value)
        except ConversationError as err:
            raise ValueError(f"'{what}': {err}") from None
    raise ValueError(f"'{what}' must be text or a list of messages, got {type(value).__name__}")


def _pairwise(record: Mapping[str, Any]) -> Comparison:
    chosen = _as_messages(record["chosen"], "chosen")
    rejected = _as_messages(record["rejected"], "rejected")
    if "prompt" in record and record["prompt"] is not None:
        prompt = record["prompt"]
        if isinstance(prompt, str) and _looks_like_hh(prompt):
            # An HH prompt ends with an empty "Assistant:" turn for the response to fill.
            context = _context([m.to_dict() for m in parse_hh_text(prompt) if m.content])
        else:
            context = _context(prompt)
        texts = [
            _response_after(context, side, name)
            for side, name in ((chosen, "chosen"), (rejected, "rejected"))
        ]
    else:
        if isinstance(chosen, str) or isinstance(rejected, str):
            raise ValueError(
                "without a 'prompt', 'chosen' and 'rejected' must be whole conversations: message lists or "
                "'\\n\\nHuman:' / '\\n\\nAssistant:' text"
            )
        for side, name in ((chosen, "chosen"), (rejected, "rejected")):
            if not side or side[-1].role != "assistant":
                raise ValueError(f"'{name}' must end with an assistant turn (the response being compared)")
        if tuple(chosen[:-1]) != tuple(rejected[:-1]):
            raise ValueError(
                "'chosen' and 'rejected' differ before their last assistant turn; a comparison needs one shared "
                "context"
            )
        context = _context([m.to_dict() for m in chosen[:-1]])
        texts = [chosen[-1].content, rejected[-1].content]
    ident = _optional_text(record, "id") or _optional_text(record, "prompt_id")
    return Comparison(
        id=ident or _derived_id(context, texts),
        context=context,
        responses=(Response(texts[0]), Response(texts[1])),
        ranks=(1, 2),
        source="import",
        category=_optional_text(record, "category"),
        meta=_meta(record),
    )


def _response_after(context: tuple[Message, ...], side: list[Message] | str, name: str) -> str:
    """The response in a pairwise side given with a separate prompt: the text itself, or the single assistant
    message left once the prompt (when repeated at its start) is removed."""
    if isinstance(side, str):
        return side
    rest = side[len(context) :] if tuple(side[: len(context)]) == context else side
    if len(rest) != 1 or rest[0].role != "assistant":
        raise ValueError(
            f"'{name}' must be the response: one assistant message (or the prompt followed by one), got "
            f"{len(rest)} message(s) after the prompt"
        )
    return rest[0].content


def parse_comparison(record: Any) -> Comparison:
    """A comparison from a parsed JSON record in chatforge's format or a pairwise format (see the module doc).
    Raises ComparisonError naming the record and the problem."""
    if not isinstance(record, Mapping):
        raise ComparisonError(f"expected a JSON object, got {type(record).__name__}")
    label = record.get("id") if isinstance(record.get("id"), (str, int)) else None
    try:
        if "responses" in record or "ranks" in record:
            return _native(record)
        if "chosen" in record and "rejected" in record:
            return _pairwise(record)
    except ComparisonError:
        raise
    except ValueError as err:
        raise ComparisonError(f"comparison {label!r}: {err}" if label is not None else str(err)) from None
    raise ComparisonError(
        "not a comparison: expected chatforge's {context, responses, ranks} or a pairwise {chosen, rejected} "
        f"record (with or without 'prompt'), got keys {', '.join(sorted(map(str, record))) or 'none'}"
    )


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------


def load_comparisons(
    path: str | os.PathLike[str], *, strict: bool = True, errors: list[str] | None = None
) -> list[Comparison]:
    """The comparisons of a JSONL file (chatforge's format and the pairwise formats may be mixed).

    With ``strict`` the first bad line raises ComparisonError("FILE:LINE: reason"); without, bad lines are
    skipped and their "FILE:LINE: reason" appended to ``errors`` when given. A repeated id is a bad line.
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ComparisonError(f"cannot read {file}: {err}") from None
    out: list[Comparison] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ComparisonError(f"not valid JSON ({err.msg}, column {err.colno})") from None
            comparison = parse_comparison(record)
            if comparison.id in first_line:
                raise ComparisonError(
                    f"comparison {comparison.id!r} repeats the id of line {first_line[comparison.id]}"
                )
        except ComparisonError as err:
            message = f"{file}:{number}: {err}"
            if strict:
                raise ComparisonError(message) from None
            if errors is not None:
                errors.append(message)
            continue
        first_line[comparison.id] = number
        out.append(comparison)
    return out


def save_comparisons(path: str | os.PathLike[str], comparisons: Sequence[Comparison]) -> Path:
    """Write comparisons as JSONL, atomically: a reader sees the old file or the whole new one, never a part."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            for comparison in comparisons:
                handle.write(json.dumps(comparison.to_dict(), ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


# --------------------------------------------------------------------------------------------------------------
# Edits
# --------------------------------------------------------------------------------------------------------------


def comparison_from_edit(
    prompt: str | Sequence[Message | Mapping[str, Any]],
    original: str,
    edited: str,
    *,
    editor: str | None = None,
    model: str | None = None,
    created_at: str | float | None = None,
    id: str | None = None,
    category: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Comparison:
    """A person rewrote a model's answer: the edited answer (response 0) ranks above the original (response 1).
    ``model`` is the model that wrote the original; the edit's author is the rater."""
    try:
        context = _context(prompt)
        stamp = _timestamp(created_at)
    except ValueError as err:
        raise ComparisonError(f"edit {id!r}: {err}") from None
    if isinstance(original, str) and isinstance(edited, str) and original.strip() == edited.strip():
        raise ComparisonError(f"edit {id!r}: the edited answer is the same as the original: no preference")
    return Comparison(
        id=id or _derived_id(context, [edited, original], "edit"),
        context=context,
        responses=(Response(edited, model="human-edit"), Response(original, model)),
        ranks=(1, 2),
        rater=Rater(editor, "human") if editor else None,
        created_at=stamp,
        source="edit",
        category=category,
        meta=dict(meta or {}),
    )


def comparison_from_edit_record(record: EditRecord, *, model: str | None = None) -> Comparison:
    """The comparison of a `chatforge.data.edits.EditRecord` (edited answer > the model's answer)."""
    meta = dict(record.meta)
    return comparison_from_edit(
        list(record.prompt),
        record.model_answer,
        record.edited_answer,
        editor=record.editor,
        model=model if model is not None else meta.get("model"),
        created_at=record.edited_at,
        id=record.id,
        category=meta.get("category") if isinstance(meta.get("category"), str) else None,
        meta=meta,
    )
