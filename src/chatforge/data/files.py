"""A user's own conversations: JSONL, JSON arrays, Parquet files and Hugging Face datasets.

Each record is one conversation in any of three formats, recognised record by record (so files can mix them):

* OpenAI chat: `{"messages": [{"role", "content"}, ...]}` (`developer` counts as `system`; content may be a
  list of `{"type": "text", "text"}` parts);
* Alpaca: `{"instruction", "input" (optional), "output"}`, plus an optional `system`: the instruction and input
  become the user turn, the output the assistant reply;
* ShareGPT: `{"conversations": [{"from", "value"}, ...]}`, converted and repaired as the ShareGPT source does.

A record may carry its own `id` (used as the conversation id; otherwise a hash of its content) and a `meta`
object (kept). A bad record is an error naming the file and line (row, for Parquet and datasets), because the
user can fix it; with `strict=False` it is skipped and counted instead.

Conversations are yielded as they are, whatever their last turn: a file of prompts (ending in a user turn) is as
valid here as a file of SFT examples; the mixture checks that training examples end with a reply.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from chatforge.chat import Conversation, ConversationError
from chatforge.data.base import (
    DataError,
    SkipRecord,
    Source,
    conversation_error_reason,
    make_conversation,
)
from chatforge.data.jsonarray import iter_json_array
from chatforge.data.sharegpt import sharegpt_messages

SUFFIXES = (".jsonl", ".json", ".parquet")
_OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


# --------------------------------------------------------------------------------------------------------------
# Record formats
# --------------------------------------------------------------------------------------------------------------


def record_format(record: Any) -> str:
    """The record's format ("openai", "alpaca" or "sharegpt") from its keys; SkipRecord when none matches."""
    if not isinstance(record, Mapping):
        raise SkipRecord("record is not an object", f"expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        return "openai"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "conversations" in record:
        return "sharegpt"
    keys = ", ".join(sorted(map(str, record))) or "none"
    raise SkipRecord(
        "unknown record format",
        "unknown record format: expected 'messages' (OpenAI), 'instruction' and 'output' (Alpaca) or "
        f"'conversations' (ShareGPT); the record has keys: {keys}",
    )


def _text_content(content: Any, index: int) -> Any:
    """Message content as a string; OpenAI content-part lists are joined if every part is text."""
    if not isinstance(content, list):
        return content  # strings pass; other types are rejected by Conversation validation with their type
    texts = []
    for part in content:
        if not (isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)):
            raise SkipRecord("non-text message content", f"message {index}: only text content parts are supported")
        texts.append(part["text"])
    return "".join(texts)


def openai_messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise SkipRecord("'messages' is not a list", f"'messages' must be a list, got {type(raw).__name__}")
    messages = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise SkipRecord("message is not an object", f"message {i}: expected an object, got {type(item).__name__}")
        role = item.get("role")
        if role in ("tool", "function") or "tool_calls" in item:
            raise SkipRecord("tool messages are not supported", f"message {i}: tool calls and results are not supported")
        if role not in _OPENAI_ROLES:
            raise SkipRecord("unknown role", f"message {i}: unknown role {role!r}; expected system, user or assistant")
        if "content" not in item:
            raise SkipRecord("message without content", f"message {i} ({role}): missing 'content'")
        messages.append({"role": _OPENAI_ROLES[role], "content": _text_content(item["content"], i)})
    return messages


def alpaca_messages(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    for key in ("instruction", "output"):
        if not isinstance(record[key], str) or not record[key].strip():
            raise SkipRecord(f"empty or non-text '{key}'", f"Alpaca record: '{key}' must be non-empty text")
    extra = record.get("input") or ""
    if not isinstance(extra, str):
        raise SkipRecord("non-text 'input'", f"Alpaca record: 'input' must be text, got {type(extra).__name__}")
    prompt = record["instruction"].strip() + (f"\n\n{extra.strip()}" if extra.strip() else "")
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]
    system = record.get("system")
    if isinstance(system, str) and system.strip():
        messages.insert(0, {"role": "system", "content": system})
    return messages


def record_conversation(record: Any, *, source: str, repairs: Counter[str]) -> Conversation:
    """One record of any supported format as a validated Conversation (SkipRecord/ConversationError if bad)."""
    fmt = record_format(record)
    if fmt == "openai":
        messages = openai_messages(record["messages"])
    elif fmt == "alpaca":
        messages = alpaca_messages(record)
    else:
        messages = sharegpt_messages(record["conversations"], repairs)
    meta: dict[str, Any] = {"format": fmt}
    if isinstance(record.get("meta"), Mapping):
        meta.update(record["meta"])
    own_id = record.get("id")
    has_id = isinstance(own_id, (str, int)) and not isinstance(own_id, bool) and str(own_id) != ""
    return make_conversation(messages, source=source, id=str(own_id) if has_id else None, meta=meta)


# --------------------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------------------


class RecordSource(Source):
    """A source of records in the formats above; subclasses say where the records come from."""

    def __init__(self, name: str, *, strict: bool = True) -> None:
        super().__init__()
        self.name = name
        self.strict = strict

    @abstractmethod
    def _records(self) -> Iterator[tuple[str, Any]]:
        """(where, record) pairs; `where` names the record for messages ("file.jsonl:12"). A record that could
        not even be read is passed as a SkipRecord."""

    def _read(self) -> Iterator[Conversation]:
        for where, record in self._records():
            self.stats.read += 1
            repairs: Counter[str] = Counter()
            try:
                if isinstance(record, SkipRecord):
                    raise record
                conversation = record_conversation(record, source=self.name, repairs=repairs)
            except SkipRecord as skip:
                self._reject(where, skip.reason, str(skip))
                continue
            except ConversationError as err:
                self._reject(where, conversation_error_reason(err), str(err))
                continue
            self.stats.repaired.update(repairs)
            yield conversation

    def _reject(self, where: str, reason: str, detail: str) -> None:
        if self.strict:
            raise DataError(f"{where}: {detail}")
        self.stats.skip(reason)


class FileSource(RecordSource):
    """Conversations from a `.jsonl`, `.json` (an array of records) or `.parquet` file."""

    def __init__(self, path: str | Path, *, name: str | None = None, strict: bool = True) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in SUFFIXES:
            raise DataError(f"{self.path}: unsupported file type {suffix or '(none)'!r}; use {', '.join(SUFFIXES)}")
        super().__init__(name or self.path.stem, strict=strict)

    def _records(self) -> Iterator[tuple[str, Any]]:
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such file")
        suffix = self.path.suffix.lower()
        if suffix == ".jsonl":
            yield from jsonl_records(self.path)
        elif suffix == ".json":
            yield from json_array_records(self.path)
        else:
            yield from parquet_records(self.path)


def jsonl_records(path: Path) -> Iterator[tuple[str, Any]]:
    # Read bytes and decode line by line, so that a bad byte is reported with its line number.
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield where, SkipRecord("not UTF-8 text", f"not UTF-8 text (byte {err.start + 1} of the line)")
                continue
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as err:
                yield where, SkipRecord("not valid JSON", f"not valid JSON ({err.msg}, column {err.colno})")


def json_array_records(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as stream:
        elements = iter_json_array(stream, looks_like_element=_looks_like_record)
        for number, element in enumerate(elements, 1):
            where = f"{path} record {number} (character {element.offset})"
            if element.error is not None:
                yield where, SkipRecord("not valid JSON", element.error)
            else:
                yield where, element.value


def _looks_like_record(value: Any) -> bool:
    return isinstance(value, Mapping) and any(key in value for key in ("messages", "instruction", "conversations"))


def parquet_records(path: Path) -> Iterator[tuple[str, Any]]:
    """Rows of a Parquet file, through pyarrow (streamed in batches) or else pandas."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    if pq is not None:
        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                yield f"{path} row {number}", row
        return
    try:
        import pandas
    except ImportError:
        raise DataError(f"{path}: reading Parquet files needs pyarrow: pip install pyarrow") from None
    try:
        frame = pandas.read_parquet(path)
    except ImportError as err:  # pandas without a Parquet engine
        raise DataError(f"{path}: reading Parquet files needs pyarrow: pip install pyarrow ({err})") from None
    for number, row in enumerate(frame.to_dict("records"), 1):
        yield f"{path} row {number}", _plain(row)


def _plain(value: Any) -> Any:
    """pandas gives nested lists as numpy arrays; turn them back into Python lists and dicts."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    return value


class HFDataset(RecordSource):
    """Conversations from a Hugging Face dataset (hub id or local directory), when `datasets` is installed.

    Extra keyword arguments go to `datasets.load_dataset`. Hub ids need a network; a local directory or a
    dataset already in the Hugging Face cache does not.
    """

    def __init__(
        self,
        path: str,
        *,
        split: str = "train",
        config: str | None = None,
        name: str | None = None,
        strict: bool = True,
        **load_kwargs: Any,
    ) -> None:
        super().__init__(name or path.rstrip("/").rsplit("/", 1)[-1], strict=strict)
        self.path = path
        self.split = split
        self.config = config
        self.load_kwargs = load_kwargs

    def _records(self) -> Iterator[tuple[str, Any]]:
        try:
            import datasets
        except ImportError:
            raise DataError(
                f"reading the Hugging Face dataset {self.path!r} needs the 'datasets' package: pip install datasets"
            ) from None
        dataset = datasets.load_dataset(self.path, self.config, split=self.split, **self.load_kwargs)
        for number, row in enumerate(dataset, 1):
            yield f"{self.path} [{self.split}] row {number}", row
