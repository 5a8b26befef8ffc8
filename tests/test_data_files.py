"""User files (JSONL, JSON, Parquet, Hugging Face datasets) and edited answers."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from chatforge.data import DataError, Edits, FileSource, HFDataset, parse_edit_record
from chatforge.data.base import SkipRecord


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


OPENAI = {"id": "chat-1", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
ALPACA = {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}
SHAREGPT = {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]}


def test_jsonl_mixes_formats_detected_per_record(tmp_path):
    with_system = {"instruction": "Say hi.", "output": "Hi!", "system": "Be terse."}
    parts = {"messages": [{"role": "developer", "content": "Be kind."}, {"role": "user", "content": [
        {"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]}, {"role": "assistant", "content": "Hi"}]}
    path = write_jsonl(tmp_path / "mine.jsonl", [OPENAI, "", ALPACA, SHAREGPT, with_system, parts])
    source = FileSource(path)
    conversations = source.load()
    assert [c.meta["format"] for c in conversations] == ["openai", "alpaca", "sharegpt", "alpaca", "openai"]
    assert all(c.source == "mine" for c in conversations)
    assert conversations[0].id == "chat-1"
    assert conversations[1].to_dicts() == [
        {"role": "user", "content": "Translate to French.\n\nGood morning"},
        {"role": "assistant", "content": "Bonjour"},
    ]
    assert conversations[1].id and conversations[1].id != conversations[2].id  # content-hash ids
    assert conversations[2].to_dicts()[1] == {"role": "assistant", "content": "4"}
    assert conversations[3].system == "Be terse."
    assert conversations[4].system == "Be kind."
    assert conversations[4].messages[1].content == "Hello there"
    assert source.stats.read == 5  # the blank line is not a record


def test_content_ids_are_stable(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [ALPACA])
    assert FileSource(path).load()[0].id == FileSource(path).load()[0].id


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"messages": [{"role": "user", "content": "hi"}', r"bad\.jsonl:3: not valid JSON"),
        ('{"prompt": "x", "completion": "y"}', r"bad\.jsonl:3: unknown record format.*completion, prompt"),
        ('{"messages": [{"role": "robot", "content": "hi"}]}', r"bad\.jsonl:3: message 0: unknown role 'robot'"),
        ('{"messages": [{"role": "assistant", "content": "hi"}]}', r"bad\.jsonl:3: message 0: the conversation must start"),
        ('{"instruction": "x", "output": ""}', r"bad\.jsonl:3: Alpaca record: 'output' must be non-empty"),
        ("[1, 2]", r"bad\.jsonl:3: expected a JSON object, got list"),
    ],
)
def test_bad_record_is_an_error_naming_file_and_line(tmp_path, bad_line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [OPENAI, ALPACA, bad_line, OPENAI])
    with pytest.raises(DataError, match=message):
        FileSource(path).load()


def test_not_strict_skips_and_counts(tmp_path):
    path = tmp_path / "mixed.jsonl"
    write_jsonl(path, [OPENAI, "{oops", {"foo": 1}, {"messages": [{"role": "user", "content": " "}]}, ALPACA])
    with open(path, "ab") as f:
        f.write(b'{"instruction": "caf\xe9", "output": "x"}\n')  # Latin-1, not UTF-8
    source = FileSource(path, strict=False)
    assert len(source.load()) == 2
    assert source.stats.skipped == {
        "not valid JSON": 1,
        "unknown record format": 1,
        "invalid conversation: user message is empty": 1,
        "not UTF-8 text": 1,
    }
    with pytest.raises(DataError, match=r"mixed\.jsonl:2: not valid JSON"):
        FileSource(path).load()
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(json.dumps(OPENAI).encode() + b'\n{"instruction": "caf\xe9", "output": "x"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl:2: not UTF-8 text"):
        FileSource(latin1).load()


def test_json_array_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([OPENAI, ALPACA]))
    assert len(FileSource(path).load()) == 2


def test_unsupported_suffix_and_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"unsupported file type '\.csv'"):
        FileSource(tmp_path / "data.csv")
    with pytest.raises(DataError, match="no such file"):
        FileSource(tmp_path / "missing.jsonl").load()


def test_parquet(tmp_path, monkeypatch):
    path = tmp_path / "data.parquet"
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        # Without pyarrow (or pandas), the error says what to install.
        monkeypatch.setitem(sys.modules, "pandas", None)
        path.write_bytes(b"PAR1")
        with pytest.raises(DataError, match="pip install pyarrow"):
            FileSource(path).load()
        return
    pq.write_table(pa.Table.from_pylist([ALPACA, {**ALPACA, "output": "Salut"}]), path)
    conversations = FileSource(path).load()
    assert [c.messages[-1].content for c in conversations] == ["Bonjour", "Salut"]


def test_hf_dataset_needs_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match="pip install datasets"):
        HFDataset("org/name").load()


def test_hf_dataset_rows(monkeypatch):
    calls = []

    def load_dataset(path, name=None, *, split, **kwargs):
        calls.append((path, name, split))
        return [OPENAI, {"bad": 1}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    source = HFDataset("org/chats", split="test", strict=False)
    assert [c.id for c in source.load()] == ["chat-1"]
    assert source.name == "chats" and calls == [("org/chats", None, "test")]
    with pytest.raises(DataError, match=r"org/chats \[test\] row 2: unknown record format"):
        HFDataset("org/chats", split="test").load()


# --------------------------------------------------------------------------------------------------------------
# Edited answers
# --------------------------------------------------------------------------------------------------------------

EDIT = {
    "id": "e1",
    "prompt": [{"role": "user", "content": "Who wrote Hamlet?"}],
    "model_answer": "Hamlet was written by Christopher Marlowe.",
    "edited_answer": "Hamlet was written by William Shakespeare, around 1600.",
    "editor": "alice",
    "edited_at": "2025-05-01T12:00:00Z",
}


def test_edits_import(tmp_path):
    path = write_jsonl(tmp_path / "edits.jsonl", [EDIT, {"prompt": "Say hi", "model_answer": "hi", "edited_answer": "Hi!"}])
    source = Edits(path)
    first, second = source.load()
    assert first.id == "e1" and first.source == "edits"
    assert first.to_dicts() == [
        {"role": "user", "content": "Who wrote Hamlet?"},
        {"role": "assistant", "content": EDIT["edited_answer"]},
    ]
    assert first.meta["model_answer"] == EDIT["model_answer"]
    assert first.meta["editor"] == "alice"
    assert first.meta["edited_at"] == "2025-05-01T12:00:00+00:00"
    assert first.meta["unchanged"] is False
    assert second.messages[0].content == "Say hi" and second.id  # a string prompt is one user message
    (record, _) = source.records()
    assert record.rejected().messages[-1].content == EDIT["model_answer"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"edited_answer": None}, "missing 'edited_answer'"),
        ({"model_answer": "  "}, "'model_answer' must be non-empty text"),
        ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, "last message must be from the user"),
        ({"prompt": []}, "prompt: conversation is empty"),
        ({"edited_at": "yesterday"}, "'edited_at' must be an ISO 8601 time"),
        ({"editor": 7}, "'editor' must be text"),
    ],
)
def test_edit_validation(tmp_path, change, message):
    bad = {key: value for key, value in {**EDIT, **change}.items() if value is not None}
    with pytest.raises(SkipRecord, match=message):
        parse_edit_record(bad)
    path = write_jsonl(tmp_path / "edits.jsonl", [EDIT, bad])
    with pytest.raises(DataError, match=r"edits\.jsonl:2: "):
        Edits(path).load()
    lenient = Edits(path, strict=False)
    assert len(lenient.load()) == 1 and sum(lenient.stats.skipped.values()) == 1
