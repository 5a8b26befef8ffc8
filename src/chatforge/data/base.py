"""What every data source shares: the Source interface, its skip/repair counts, stable ids, package lookup.

A source reads records from somewhere (a packaged dataset, a user's file, chatforge's own behaviour spec) and
yields validated `Conversation`s tagged with the source's name and a stable id. It never raises on a bad record of
a dataset it does not control: it skips the record and counts why, so a run's report can say how much of a
dataset was usable. User files are different: by default a bad record there is an error naming the file and line,
because the user can fix it (`strict=False` turns those errors into counted skips too).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatforge.chat import Conversation, ConversationError, Message


class DataError(ValueError):
    """A data source or file that cannot be used; the message names the file (and line) and the problem."""


class SkipRecord(Exception):
    """Raised while converting one record to say it cannot be used.

    `reason` is what gets counted (so it names no line or value); `detail`, when given, is the fuller message
    for an error about this one record.
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason)
        self.reason = reason


@dataclass
class SourceStats:
    """What one pass over a source saw.

    `skipped` counts records that produced no conversation, by reason; `repaired` counts fixes applied to
    records that were kept (a merged turn, a dropped empty turn), by what was done. One record can be repaired
    several ways, so `repaired` does not add up to anything.
    """

    read: int = 0
    yielded: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    repaired: Counter[str] = field(default_factory=Counter)

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] += count

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "yielded": self.yielded,
            "skipped": dict(self.skipped.most_common()),
            "repaired": dict(self.repaired.most_common()),
        }

    def format(self, indent: str = "  ") -> str:
        lines = [f"{indent}records read: {self.read}, conversations: {self.yielded}"]
        for reason, count in self.skipped.most_common():
            lines.append(f"{indent}  skipped {count:>6}  {reason}")
        for what, count in self.repaired.most_common():
            lines.append(f"{indent}  repaired {count:>5}  {what}")
        return "\n".join(lines)


class Source(ABC):
    """A named, re-iterable stream of validated conversations.

    Subclasses implement `_read`, counting into `self.stats` as they go. Each full iteration starts the counts
    afresh, so after `list(source)` the stats describe exactly that pass.
    """

    name: str = "source"
    # An eval-only source (a benchmark) is refused by the training mixture unless explicitly allowed, so that
    # evaluation questions do not leak into SFT data by accident.
    eval_only: bool = False

    def __init__(self) -> None:
        self.stats = SourceStats()

    def __iter__(self) -> Iterator[Conversation]:
        self.stats = SourceStats()
        for conversation in self._read():
            self.stats.yielded += 1
            yield conversation

    @abstractmethod
    def _read(self) -> Iterator[Conversation]: ...

    def load(self) -> list[Conversation]:
        return list(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ListSource(Source):
    """Conversations already in memory, as a source (for tests, and for data built by other chatforge stages)."""

    def __init__(self, name: str, conversations: Iterable[Conversation], *, eval_only: bool = False) -> None:
        super().__init__()
        self.name = name
        self.eval_only = eval_only
        self._conversations = list(conversations)

    def _read(self) -> Iterator[Conversation]:
        for conversation in self._conversations:
            self.stats.read += 1
            yield conversation


def content_id(messages: Sequence[Message] | Sequence[Mapping[str, str]], prefix: str = "") -> str:
    """A stable id from a conversation's roles and text: same content, same id, on any machine."""
    digest = hashlib.sha256()
    for m in messages:
        role, content = (m.role, m.content) if isinstance(m, Message) else (m["role"], m["content"])
        # Unit/record separators cannot occur in role names and keep ("ab","c") apart from ("a","bc").
        digest.update(role.encode())
        digest.update(b"\x1f")
        digest.update(content.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1e")
    return prefix + digest.hexdigest()[:16]


def make_conversation(
    messages: Sequence[Message | Mapping[str, Any]],
    *,
    source: str,
    id: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Conversation:
    """Build a Conversation, giving it a content-hash id when the record has none of its own."""
    conversation = Conversation.from_messages(messages, source=source, meta=meta)
    if id is None:
        id = content_id(conversation.messages)
    return Conversation(conversation.messages, id=id, source=source, meta=conversation.meta)


def conversation_error_reason(err: ConversationError) -> str:
    """A countable reason from a validation error: the message without the message index or sizes, so that
    "message 3 (user) is empty" and "message 7 (user) is empty" count together."""
    text = re.sub(r"^message \d+ \((\w+)\)", r"\1 message", str(err))  # "message 3 (user) is empty"
    text = re.sub(r"^message \d+: ", "", text)  # "message 2: assistant follows assistant; ..."
    text = re.sub(r"\d+", "N", text)  # "too long: 250000 characters"
    return f"invalid conversation: {text}"


def package_dir(module: str) -> Path | None:
    """The directory of an installed package, found without importing it (importing may have side effects
    or need dependencies chatforge does not have). None when it is not installed."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location)
        if path.is_dir():
            return path
    return None


def require_package_file(module: str, distribution: str, relative: str) -> Path:
    """A data file shipped inside an installed package, or a DataError saying which package to install."""
    root = package_dir(module)
    if root is None:
        raise DataError(f"the {distribution!r} package is not installed (pip install {distribution})")
    path = root / relative
    if not path.is_file():
        raise DataError(f"the {distribution!r} package is installed but has no {relative} (looked in {root})")
    return path


def repair_turn_order(messages: list[dict[str, str]], repairs: Counter[str]) -> list[dict[str, str]]:
    """Make real-world turns into a conversation chatforge accepts: an optional system message, then user and
    assistant alternating, ending with the assistant. Every change is counted in `repairs`.

    * consecutive turns of one role are merged (a lost reply between two user turns, a reply split in two);
    * leading assistant turns are dropped (a conversation split into chunks starts mid-way, with a reply whose
      question is in the previous chunk);
    * a trailing user turn is dropped (nothing answers it, so it teaches nothing in SFT).
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest = messages[len(system) :]
    if any(m["role"] == "system" for m in rest):
        raise SkipRecord("system message after the first turn")
    merged: list[dict[str, str]] = []
    for m in rest:
        if merged and merged[-1]["role"] == m["role"]:
            merged[-1] = {"role": m["role"], "content": merged[-1]["content"] + "\n\n" + m["content"]}
            repairs["consecutive same-role turns merged"] += 1
        else:
            merged.append(dict(m))
    while merged and merged[0]["role"] == "assistant":
        merged.pop(0)
        repairs["leading assistant turn dropped"] += 1
    if merged and merged[-1]["role"] == "user":
        merged.pop()
        repairs["trailing user turn dropped"] += 1
    if not merged:
        raise SkipRecord("no user turn answered by the assistant")
    return system + merged
