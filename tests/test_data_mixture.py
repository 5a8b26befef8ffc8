"""The SFT mixture (spec parsing, proportions, filters, report), the preview, and the `data` CLI."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from chatforge.chat import Conversation, encode_conversation
from chatforge.data import (
    ListSource,
    MixSpecError,
    Mixture,
    looks_english,
    masked_runs,
    parse_mix,
    preview,
    register_cli,
)
from chatforge.data import cli as data_cli
from chatforge.data.mixture import allocate

TOPICS = ["gardening", "chess", "baking", "cycling", "astronomy", "knitting", "sailing", "jazz", "hiking", "pottery"]


def english(source: str, i: int, *, reply: str | None = None, text_of: str | None = None) -> Conversation:
    """An English conversation; its text names `text_of` (default: the source), so sources do not overlap."""
    topic = TOPICS[i % len(TOPICS)]
    question = f"Could you tell me one thing about {topic} that a beginner should know? ({text_of or source} {i})"
    answer = reply or f"Sure. The first thing to know about {topic} is that it takes practice, and that is fine ({i})."
    return Conversation.from_messages(
        [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], id=f"{source}-{i}", source=source
    )


def source_of(name: str, n: int) -> ListSource:
    return ListSource(name, [english(name, i) for i in range(n)])


# --------------------------------------------------------------------------------------------------------------
# Mix specs
# --------------------------------------------------------------------------------------------------------------


def test_parse_mix():
    entries = parse_mix(" sharegpt=0.6, chitchat=0.2,behaviours=0.2 ")
    assert [(e.name, e.weight) for e in entries] == [("sharegpt", 0.6), ("chitchat", 0.2), ("behaviours", 0.2)]
    assert [e.name for e in parse_mix("file:data/a=b.jsonl=2,edits:e.jsonl=1,x.parquet=1,hf:org/set=1")] == [
        "file:data/a=b.jsonl",
        "edits:e.jsonl",
        "x.parquet",
        "hf:org/set",
    ]
    assert [(e.name, e.weight) for e in parse_mix("sharegpt")] == [("sharegpt", 1.0)]  # one bare name: that source alone


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "the mix spec is empty"),
        ("sharegpt,chitchat", r"'sharegpt' is not name=weight"),
        ("=0.5", r"'=0.5' is not name=weight"),
        ("sharegpt=lots", r"the weight of 'sharegpt' is not a number: 'lots'"),
        ("sharegpt=-1", r"the weight of 'sharegpt' must be a positive number, not -1"),
        ("sharegpt=0", r"must be a positive number, not 0"),
        ("sharegpt=nan", r"must be a positive number, not nan"),
        ("sharegpt=inf", r"must be a positive number, not inf"),
        ("wikipedia=1", r"unknown source 'wikipedia' in the mix spec; known sources: behaviours, chitchat, mtbench"),
        ("sharegpt=1,sharegpt=2", r"source 'sharegpt' appears twice"),
        ("sharegpt=1,,chitchat=1", r"empty item in the mix spec"),
        ("sharegpt=1,", r"empty item"),
        ("file:=1", r"source 'file:' needs a path"),
    ],
)
def test_bad_mix_specs_are_rejected_clearly(spec, message):
    with pytest.raises(MixSpecError, match=message):
        parse_mix(spec)
    with pytest.raises(MixSpecError, match=message):
        Mixture(spec)


def test_bad_mixture_arguments():
    with pytest.raises(MixSpecError, match="must be a positive number"):
        Mixture([(source_of("a", 3), 0)])
    with pytest.raises(MixSpecError, match="appears twice"):
        Mixture([(source_of("a", 3), 1), (source_of("a", 3), 1)])
    with pytest.raises(MixSpecError, match="evaluation set"):
        Mixture([(ListSource("bench", [], eval_only=True), 1)])
    Mixture([(ListSource("bench", [], eval_only=True), 1)], allow_eval=True)
    with pytest.raises(ValueError, match="only language filter is 'en'"):
        Mixture([(source_of("a", 3), 1)], language="fr")


def test_allocate_adds_up():
    assert allocate(3, [0.6, 0.2, 0.2]) == [2, 1, 0]
    assert allocate(10, [1 / 3] * 3) in ([4, 3, 3], [3, 4, 3], [3, 3, 4])
    assert all(sum(allocate(n, [0.55, 0.3, 0.15])) == n for n in range(50))


# --------------------------------------------------------------------------------------------------------------
# Proportions
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [7, 100, 400])
def test_proportions_match_weights(size):
    sources = [(source_of("a", 500), 0.6), (source_of("b", 300), 0.25), (source_of("c", 300), 0.15)]
    result = Mixture(sources, size=size, seed=3).build()
    assert len(result.conversations) == size == result.report.size
    counts = {s.name: sum(c.source == s.name for c in result.conversations) for s, _ in sources}
    for source, weight in sources:
        assert abs(counts[source.name] / size - weight) <= 1 / size + 1e-9
        report = next(r for r in result.report.sources if r.name == source.name)
        assert report.kept == counts[source.name] and report.trimmed == 0
    # interleaved, not one source after another
    assert len({c.source for c in result.conversations[: max(3, size // 4)]}) > 1 or size < 10


def test_without_size_the_mixture_is_as_large_as_the_proportions_allow():
    result = Mixture([(source_of("a", 500), 0.6), (source_of("b", 300), 0.2), (source_of("c", 300), 0.2)]).build()
    size = result.report.size
    # a's 500 conversations are 60 % of 833.3: the largest size whose rounded quotas fit is 834 (500/167/167)
    assert size == 834
    assert [r.kept for r in result.report.sources] == [500, 167, 167]
    for report in result.report.sources:
        assert abs(report.kept / size - report.share) <= 1 / size
    assert [r.trimmed for r in result.report.sources] == [0, 133, 133]
    assert result.report.notes == []


def test_a_short_source_trims_the_others_and_says_so():
    result = Mixture([(source_of("big", 200), 0.5), (source_of("small", 20), 0.5)], size=100).build()
    # small has 20: the largest mixture it can fill at 50 % is 41 (its rounded quota of 41 * 0.5 is 20)
    assert result.report.size == 41
    report = {r.name: r for r in result.report.sources}
    assert (report["big"].kept, report["small"].kept) == (21, 20)
    assert report["big"].trimmed == 50 - 21 and report["small"].trimmed == 0
    assert "small could not fill the requested share" in result.report.notes[0]
    assert "41 conversations instead of 100" in result.report.notes[0]


def test_seeded_and_reproducible():
    def ids(seed: int) -> list[str | None]:
        sources = [(source_of("a", 50), 1), (source_of("b", 50), 1)]
        return [c.id for c in Mixture(sources, size=20, seed=seed).build().conversations]

    assert ids(1) == ids(1)
    assert ids(1) != ids(2)


# --------------------------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------------------------


def test_duplicates_are_dropped_across_sources_after_normalising():
    original = english("a", 1)
    shouty = Conversation.from_messages(
        [{"role": m.role, "content": "  " + m.content.upper().replace(" ", "   ")} for m in original.messages],
        id="a-dup",
    )
    a = ListSource("a", [original, shouty, english("a", 2)])
    b = ListSource("b", [english("b", 1, text_of="a"), english("b", 3)])  # b-1 has the same text as a-1
    result = Mixture([(a, 1), (b, 1)], language=None).build()
    report = {r.name: r for r in result.report.sources}
    assert report["a"].dropped["duplicate"] == 1
    assert report["b"].dropped["duplicate"] == 1
    texts = [tuple(m.content.lower().split()) for c in result.conversations for m in c.messages]
    assert len(texts) == len(set(texts))


def test_length_filter_uses_the_chat_template(smol_tokenizer):
    long_reply = "This is a sentence that is here to make the reply long. " * 40
    convs = [english("s", 0), english("s", 1, reply=long_reply), english("s", 2, reply="Ok.")]
    lengths = [len(encode_conversation(smol_tokenizer, c)) for c in convs]
    short_assistant = sum(encode_conversation(smol_tokenizer, convs[2]).assistant_mask)
    max_tokens = lengths[0] + 5
    assert lengths[1] > max_tokens and lengths[2] <= max_tokens
    result = Mixture(
        [(ListSource("s", convs), 1)],
        tokenizer=smol_tokenizer,
        max_tokens=max_tokens,
        min_assistant_tokens=short_assistant + 1,
    ).build()
    (report,) = result.report.sources
    assert [c.id for c in result.conversations] == ["s-0"]
    assert report.dropped == {"too_long": 1, "too_short": 1}
    assert result.report.max_tokens == max_tokens
    # the template's own tokens count: a limit just under the templated length drops the conversation
    exact = Mixture([(ListSource("s", convs[:1]), 1)], tokenizer=smol_tokenizer, max_tokens=lengths[0] - 1).build()
    assert exact.report.sources[0].dropped == {"too_long": 1}


def test_language_filter():
    spanish = Conversation.from_messages(
        [
            {"role": "user", "content": "¿Me puedes explicar cómo funciona la fotosíntesis en las plantas?"},
            {"role": "assistant", "content": "Claro. La fotosíntesis es el proceso por el que las plantas usan la luz del sol para producir su alimento."},
        ]
    )
    chinese = Conversation.from_messages(
        [{"role": "user", "content": "请解释一下光合作用是如何进行的。"}, {"role": "assistant", "content": "光合作用是植物利用阳光制造养分的过程。"}]
    )
    code_question = english("s", 9, reply="Use this:\n```python\nfor x in range(10):\n    print(x ** 2)\n```\nIt prints the squares.")
    source = ListSource("s", [english("s", 1), spanish, chinese, code_question, english("s", 2, reply="lol ok")])
    result = Mixture([(source, 1)]).build()
    assert result.report.sources[0].dropped == {"language": 2}
    assert len(result.conversations) == 3
    assert len(Mixture([(source, 1)], language=None).build().conversations) == 5
    assert looks_english("hi there") and not looks_english("Das ist nicht so wie ich es mir vorgestellt habe, aber gut.")


def test_conversations_that_are_not_training_examples_are_invalid():
    prompt_only = Conversation.from_messages([{"role": "user", "content": "Could you tell me about chess openings?"}])
    result = Mixture([(ListSource("s", [prompt_only, english("s", 1)]), 1)]).build()
    assert result.report.sources[0].dropped == {"invalid": 1}


# --------------------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------------------


def test_report_prints_and_writes_json(tmp_path, smol_tokenizer):
    sources = [(source_of("a", 40), 3), (source_of("b", 40), 1)]
    report = Mixture(sources, tokenizer=smol_tokenizer, size=20, seed=5).build().report
    text = report.format()
    assert "mixture: 20 conversations (requested 20), seed 5" in text
    assert re.search(r"^a\s+3\s+75\.0%\s+75\.0%\s+15\s+15\s+15\s+0\s+0\s+0\s+0\s+0\s+0$", text, re.MULTILINE)
    assert "reading b:" in text and str(report) == text
    path = report.write_json(tmp_path / "out" / "report.json")
    data = json.loads(path.read_text())
    assert data["size"] == 20 and data["seed"] == 5
    assert data["filters"]["max_tokens"] == 2048 and data["filters"]["language"] == "en"
    first = data["sources"][0]
    assert first["name"] == "a" and first["share"] == 0.75 and first["actual_share"] == 0.75
    assert set(first["dropped"]) == {"invalid", "duplicate", "language", "too_long", "too_short"}
    assert first["reading"]["read"] == 40


# --------------------------------------------------------------------------------------------------------------
# Preview and CLI
# --------------------------------------------------------------------------------------------------------------


def test_preview_marks_exactly_the_assistant_tokens(smol_tokenizer):
    conversation = Conversation.from_messages(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi [there]"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Teal — a blue-green."},
        ],
        id="p1",
        source="test",
    )
    text = preview([conversation], smol_tokenizer, n=5)
    assert "1 of 1 conversations" in text and "source test · id p1" in text
    legend, body = text.split("\n\n", 1)
    assert "⟦between brackets⟧" in legend
    marked = re.findall(r"⟦(.*?)⟧", body, re.DOTALL)
    assert marked == ["Hello! How can I help?<|im_end|>", "Teal — a blue-green.<|im_end|>"]
    # the marked runs are exactly the tokens the mask selects, and everything else is the rest of the rendering
    encoded = encode_conversation(smol_tokenizer, conversation)
    masked_ids = [t for t, m in zip(encoded.input_ids, encoded.assistant_mask, strict=True) if m]
    assert smol_tokenizer.encode("".join(marked), add_special_tokens=False) == masked_ids
    runs = masked_runs(smol_tokenizer, conversation)
    assert "".join(t for t, _ in runs) == smol_tokenizer.decode(encoded.input_ids, skip_special_tokens=False)
    assert "Be brief." in text and "⟦" not in "".join(t for t, a in runs if not a)
    coloured = preview([conversation], smol_tokenizer, colour=True)
    assert "\x1b[32mHello! How can I help?<|im_end|>\x1b[0m" in coloured


def cli_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatforge")
    register_cli(parser.add_subparsers(dest="command"))
    return parser


def test_cli_preview(monkeypatch, capsys, smol_tokenizer):
    monkeypatch.setattr(data_cli, "_load_tokenizer", lambda name: smol_tokenizer)
    args = cli_parser().parse_args(["data", "preview", "--mix", "behaviours=1", "-n", "2", "--seed", "4", "--colour", "never"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "2 of 2 conversations" in out and out.count("⟦") == 3 and "source behaviours" in out  # legend + 2


def test_cli_stats_with_a_mix_writes_json(tmp_path, monkeypatch, capsys):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"messages": english("f", i).to_dicts()}) + "\n" for i in range(30)))
    out_json = tmp_path / "report.json"
    args = cli_parser().parse_args(
        ["data", "stats", "--mix", f"file:{path}=1,behaviours=1", "--size", "20", "--json", str(out_json)]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "mixture: 20 conversations" in out and f"file:{path}" in out
    report = json.loads(out_json.read_text())
    assert [s["kept"] for s in report["sources"]] == [10, 10]


def test_cli_errors_are_reported_not_raised(capsys):
    args = cli_parser().parse_args(["data", "stats", "--mix", "wikipedia=1"])
    assert args.func(args) == 2
    assert "unknown source 'wikipedia'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_parser().parse_args(["data"])  # a subcommand is required
