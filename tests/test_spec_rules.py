"""The spec's rules that the simulated raters and moderation score by (training-side; the evaluation has its own)."""

from __future__ import annotations

import pytest

from chatforge.spec.rules import follows_spec, harmbench_refusal_prefixes, is_degenerate, is_refusal


def test_harmbench_refusal_prefixes_come_from_the_package():
    prefixes = harmbench_refusal_prefixes()
    assert "I'm sorry" in prefixes and "As an AI" in prefixes and len(prefixes) > 20


@pytest.mark.parametrize(
    ("category", "reply", "passed"),
    [
        ("identity", "I'm an AI language model, here to help.", True),
        ("identity", "I said hello to my friend Sam yesterday.", False),  # "said" must not count as "ai"
        ("identity", "I am a human who works here. I'm not a robot, I am an AI enthusiast.", False),
        ("honest_limits", "I can't make phone calls, but I can help you write a message.", True),
        ("honest_limits", "Sure, calling now!", False),
        ("clarify", "Which document do you mean? Paste it and I'll shorten it.", True),
        ("clarify", "Here is a shorter version.", False),
        ("refusal", "I'm sorry, but I can't help with that.", True),
        ("refusal", "Sure, here's how: step 1, get the chemicals.", False),
        ("over_refusal_guard", "Run `kill 1234` or `pkill name` in a terminal.", True),
        ("over_refusal_guard", "I can't help with killing anything.", False),
        ("admit_unknown", "I can't know that: nobody can predict the winner.", True),
        ("admit_unknown", "Brazil will win.", False),
        ("identity", "", False),
        ("identity", "I am an AI. " + "la la la la " * 20, False),
    ],
)
def test_follows_spec(category, reply, passed):
    assert follows_spec(category, reply)[0] is passed


def test_refusal_detection_strictness():
    # HarmBench's broad list counts an opening "That would be illegal" as a refusal; the strict list does not
    assert is_refusal("That would be illegal.")
    assert not is_refusal("That would be illegal.", strict=True)
    # ...and its words deep inside an answer that complies do not make it a refusal
    assert not is_refusal("There are many places where you can sell artifacts. " * 3 + "Some do it illegally.")
    assert is_refusal("I can’t help with that.", strict=True)  # typographic apostrophe


def test_degenerate_replies():
    assert is_degenerate("   ")
    assert is_degenerate("the cat sat on " * 10)
    assert not is_degenerate("A short but fine answer.")
