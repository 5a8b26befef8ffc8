"""Comparison records: validation, JSONL round trip, pairwise imports, edits."""

from __future__ import annotations

import json

import pytest

from chatforge.chat import Message
from chatforge.data.comparisons import (
    Comparison,
    ComparisonError,
    Rater,
    Response,
    comparison_from_edit,
    comparison_from_edit_record,
    load_comparisons,
    parse_comparison,
    save_comparisons,
    without_model,
)
from chatforge.data.edits import parse_edit_record


def native(**changes) -> dict:
    record = {
        "id": "cmp-1",
        "context": [{"role": "user", "content": "Name a prime number."}],
        "responses": [
            {"text": "7", "model": "sft-r1"},
            {"text": "8", "model": "sft-r1"},
            {"text": "Seven.", "model": "sft-r0"},
            {"text": "I like turtles.", "model": "base"},
        ],
        "ranks": [1, 3, 1, 4],
        "rater": {"id": "alice", "kind": "human"},
        "created_at": "2025-05-01T12:00:00+00:00",
        "source": "ranking",
        "category": "math",
        "meta": {"task": 17},
    }
    record.update(changes)
    return record


def write_jsonl(path, records) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def test_native_record_parses_and_round_trips(tmp_path):
    c = parse_comparison(native())
    assert c.k == 4
    assert c.context == (Message("user", "Name a prime number."),)
    assert c.responses[2] == Response("Seven.", "sft-r0")
    assert c.rater == Rater("alice", "human")
    assert c.best() == [0, 2]
    # Ties (0 and 2 share rank 1) give no pair; 3 is below everything.
    assert sorted(c.pairs()) == [(0, 1), (0, 3), (1, 3), (2, 1), (2, 3)]
    assert c.conversation(1).messages[-1] == Message("assistant", "8")
    assert c.category_name == "math"

    path = tmp_path / "cmp.jsonl"
    save_comparisons(
        path, [c, parse_comparison(native(id="cmp-2", rater={"id": "judge-v1", "kind": "simulated"}))]
    )
    loaded = load_comparisons(path)
    assert loaded[0] == c
    assert loaded[1].rater == Rater("judge-v1", "simulated")
    assert json.loads(path.read_text().splitlines()[0]) == c.to_dict()
    assert [p.name for p in tmp_path.iterdir()] == ["cmp.jsonl"]  # no temporary file left behind


def test_shorthands_and_derived_ids():
    c = parse_comparison(
        {"context": "Hi?", "responses": ["Hello!", "Go away."], "ranks": [1, 2], "created_at": 1746100800}
    )
    assert c.context == (Message("user", "Hi?"),)
    assert c.responses == (Response("Hello!"), Response("Go away."))
    assert c.created_at == "2025-05-01T12:00:00+00:00"
    assert c.id.startswith("cmp-")
    assert (
        c.id
        == parse_comparison(
            {"context": "Hi?", "responses": ["Hello!", "Go away."], "ranks": [1, 2], "created_at": 1746100800}
        ).id
    )
    assert c.category_name is None
    assert parse_comparison(native(category=None, meta={"category": "chat"})).category_name == "chat"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ranks": [1, 2, 3]}, r"has 3 ranks for 4 responses"),
        ({"responses": ["only one"], "ranks": [1]}, r"has 1 responses; a comparison needs between 2 and 9"),
        ({"responses": [f"answer {i}" for i in range(10)], "ranks": list(range(1, 11))}, r"has 10 responses"),
        ({"responses": ["fine", "  "], "ranks": [1, 2]}, r"response 1 is empty"),
        ({"responses": ["a", "b"], "ranks": [1, 1]}, r"all 2 responses are tied .* no preference"),
        ({"responses": ["same", "same "], "ranks": [1, 2]}, r"responses 0 and 1 are the same text"),
        ({"responses": ["a", "b"], "ranks": ["1", "2"]}, r"'ranks' must be a list of integers"),
        ({"responses": ["a", "b"], "ranks": [True, 2]}, r"'ranks' must be a list of integers"),
        ({"responses": ["a", "b"], "ranks": [0, 1]}, r"ranks must be between 1 \(best\) and 2"),
        ({"responses": ["a", "b"], "ranks": [2, 2]}, r"the best rank must be 1"),
        ({"responses": "a, b", "ranks": [1, 2]}, r"'responses' must be a list"),
        ({"responses": ["a", 5], "ranks": [1, 2]}, r"response 1 must be text or an object"),
        ({"responses": [{"text": "a"}, {"txt": "b"}], "ranks": [1, 2]}, r"response 1 has no 'text'"),
        (
            {"context": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            r"context: the last message must be from the user",
        ),
        ({"rater": {"id": "bot", "kind": "robot"}}, r"rater kind must be one of human, simulated"),
        ({"rater": "alice"}, r"'rater' must be an object"),
        ({"source": "email"}, r"source must be one of ranking, thumbs, ab, edit, import"),
        ({"created_at": "yesterday"}, r"created_at must be an ISO 8601 time"),
        ({"score": 3}, r"unknown key\(s\) 'score'.*put anything else in 'meta'"),
        ({"meta": [1]}, r"'meta' must be an object"),
    ],
)
def test_malformed_rankings_are_rejected_with_the_reason(changes, message):
    with pytest.raises(ComparisonError, match=message) as info:
        parse_comparison(native(**changes))
    assert "cmp-1" in str(info.value)  # the message names the record


def test_building_a_record_in_code_is_validated_too():
    with pytest.raises(ComparisonError, match=r"comparison 'x': has 3 ranks for 2 responses"):
        Comparison("x", [{"role": "user", "content": "q"}], [Response("a"), Response("b")], [1, 2, 3])
    ok = Comparison("y", [{"role": "user", "content": "q"}], [Response("a"), Response("b")], [2, 1])
    assert ok.pairs() == [(1, 0)] and isinstance(ok.ranks, tuple)


def test_load_reports_file_and_line_and_can_skip(tmp_path):
    path = tmp_path / "cmp.jsonl"
    write_jsonl(
        path,
        [
            native(),
            "",  # blank lines are fine
            "{not json",
            native(id="cmp-2", ranks=[1, 1, 1, 1]),
            native(),  # the id of line 1 again
            native(id="cmp-3"),
            ["a", "list"],
        ],
    )
    with pytest.raises(ComparisonError, match=rf"^{path}:3: not valid JSON"):
        load_comparisons(path)
    errors: list[str] = []
    kept = load_comparisons(path, strict=False, errors=errors)
    assert [c.id for c in kept] == ["cmp-1", "cmp-3"]
    assert [e.split(": ", 1)[0] for e in errors] == [f"{path}:3", f"{path}:4", f"{path}:5", f"{path}:7"]
    assert "all 4 responses are tied" in errors[1]
    assert "repeats the id of line 1" in errors[2]
    assert "expected a JSON object, got list" in errors[3]
    with pytest.raises(ComparisonError, match="cannot read"):
        load_comparisons(tmp_path / "missing.jsonl")


def test_save_is_atomic(tmp_path):
    path = tmp_path / "cmp.jsonl"
    good = parse_comparison(native())
    save_comparisons(path, [good])
    before = path.read_text()
    unserialisable = Comparison("bad", good.context, good.responses, good.ranks, meta={"when": object()})
    with pytest.raises(TypeError):
        save_comparisons(path, [good, unserialisable])  # fails after the first record was written
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cmp.jsonl"]


# ----------------------------------------------------------------------------------------------------------------
# Pairwise formats
# ----------------------------------------------------------------------------------------------------------------


def test_prompt_chosen_rejected_strings():
    c = parse_comparison({"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "category": "math"})
    assert c.context == (Message("user", "What is 2+2?"),)
    assert [r.text for r in c.responses] == ["4", "5"]
    assert c.ranks == (1, 2)
    assert c.source == "import" and c.rater is None and c.category == "math"


def test_trl_conversational_with_explicit_prompt():
    prompt = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    c = parse_comparison(
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": "Paris."}],
            "rejected": [{"role": "assistant", "content": "Lyon."}],
        }
    )
    assert [m.role for m in c.context] == ["system", "user"]
    assert [r.text for r in c.responses] == ["Paris.", "Lyon."]
    # Some exports repeat the prompt at the start of each side.
    repeated = parse_comparison(
        {
            "prompt": prompt,
            "chosen": [*prompt, {"role": "assistant", "content": "Paris."}],
            "rejected": [*prompt, {"role": "assistant", "content": "Lyon."}],
        }
    )
    assert repeated.context == c.context and repeated.responses == c.responses


def test_trl_conversational_with_implicit_prompt():
    shared = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ]
    c = parse_comparison(
        {
            "chosen": [*shared, {"role": "assistant", "content": "Why did the chicken cross the road?"}],
            "rejected": [*shared, {"role": "assistant", "content": "No."}],
        }
    )
    assert len(c.context) == 3 and c.context[-1].content == "Tell me a joke."
    assert [r.text for r in c.responses] == ["Why did the chicken cross the road?", "No."]

    with pytest.raises(ComparisonError, match="differ before their last assistant turn"):
        parse_comparison(
            {
                "chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "x"}],
                "rejected": [{"role": "user", "content": "B"}, {"role": "assistant", "content": "y"}],
            }
        )


def test_anthropic_hh_text():
    chosen = (
        "\n\nHuman: What's a good name for a cat?\n\nAssistant: How about Whiskers?"
        "\n\nHuman: Something more unusual.\n\nAssistant: Try Marmalade or Pixel."
    )
    rejected = (
        "\n\nHuman: What's a good name for a cat?\n\nAssistant: How about Whiskers?"
        "\n\nHuman: Something more unusual.\n\nAssistant: Cat."
    )
    c = parse_comparison({"chosen": chosen, "rejected": rejected})
    assert [(m.role, m.content) for m in c.context] == [
        ("user", "What's a good name for a cat?"),
        ("assistant", "How about Whiskers?"),
        ("user", "Something more unusual."),
    ]
    assert [r.text for r in c.responses] == ["Try Marmalade or Pixel.", "Cat."]
    # The split form: an HH prompt ending in "Assistant:" and the two replies as text.
    split = parse_comparison(
        {"prompt": "\n\nHuman: Say hi.\n\nAssistant:", "chosen": " Hi there!", "rejected": " Bye."}
    )
    assert split.context == (Message("user", "Say hi."),)
    assert [r.text for r in split.responses] == [" Hi there!", " Bye."]


def test_pairwise_problems_are_named(tmp_path):
    with pytest.raises(ComparisonError, match="without a 'prompt'.*must be whole conversations"):
        parse_comparison({"chosen": "good", "rejected": "bad"})
    with pytest.raises(ComparisonError, match="are the same text"):
        parse_comparison({"prompt": "q", "chosen": "same", "rejected": "same"})
    with pytest.raises(ComparisonError, match="response 1 is empty"):  # HH has a few of these
        parse_comparison({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant:"})
    with pytest.raises(ComparisonError, match=r"not a comparison: .* got keys answer, question"):
        parse_comparison({"question": "q", "answer": "a"})
    path = tmp_path / "pairs.jsonl"
    write_jsonl(
        path, [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": 3, "rejected": "b"}]
    )
    with pytest.raises(ComparisonError, match=rf"{path}:2: 'chosen' must be text or a list of messages"):
        load_comparisons(path)


# ----------------------------------------------------------------------------------------------------------------
# Edits
# ----------------------------------------------------------------------------------------------------------------


def test_an_edit_becomes_edited_over_original():
    c = comparison_from_edit(
        "Summarise: the cat sat.",
        "The cat sat, it is a cat that sat.",
        "A cat sat.",
        editor="bob",
        model="sft-r2",
        created_at="2025-05-02T09:00:00+00:00",
    )
    assert [r.text for r in c.responses] == ["A cat sat.", "The cat sat, it is a cat that sat."]
    assert c.ranks == (1, 2) and c.pairs() == [(0, 1)]
    assert c.responses[1].model == "sft-r2" and c.responses[0].model == "human-edit"
    assert c.source == "edit" and c.rater == Rater("bob", "human")
    with pytest.raises(ComparisonError, match="the edited answer is the same as the original"):
        comparison_from_edit("q", "same answer", "same answer ")

    record = parse_edit_record(
        {
            "id": "e1",
            "prompt": [{"role": "user", "content": "Fix: teh"}],
            "model_answer": "teh",
            "edited_answer": "the",
            "editor": "carol",
            "meta": {"model": "sft-r1"},
        }
    )
    from_record = comparison_from_edit_record(record)
    assert from_record.id == "e1"
    assert [r.text for r in from_record.responses] == ["the", "teh"]
    assert from_record.responses[1].model == "sft-r1" and from_record.rater == Rater("carol", "human")


def test_without_model_drops_a_writer_and_renumbers_the_ranks():
    c = parse_comparison(native())  # ranks 1 (sft-r1 "7"), 3 (sft-r1 "8"), 1 (sft-r0), 4 (base)
    rest = without_model(c, "sft-r0")
    assert [r.text for r in rest.responses] == ["7", "8", "I like turtles."] and rest.ranks == (1, 2, 3)
    assert rest.pairs() == [(0, 1), (0, 2), (1, 2)] and rest.id == c.id
    assert without_model(c, "nobody") is c
    # nothing left to compare: one response, or only ties
    assert without_model(parse_comparison(native(responses=[{"text": "a", "model": "x"}, {"text": "b", "model": "y"}], ranks=[1, 2])), "x") is None
    tied = native(ranks=[1, 3, 1, 4])
    tied["responses"][1]["model"] = tied["responses"][3]["model"] = "drop"
    assert without_model(parse_comparison(tied), "drop") is None
