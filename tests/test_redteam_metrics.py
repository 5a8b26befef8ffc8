"""The attacker's metrics on fixed examples, checked against values computed by hand."""

from __future__ import annotations

import math

import pytest

from chatforge.redteam.metrics import (
    accuracy,
    attack_success_rate,
    class_scores,
    confusion,
    over_refusal_rate,
    wilson,
)


def test_wilson_matches_hand_computed_values():
    # p = 0.5, n = 10: centre 0.5, half-width 1.96*sqrt(0.025 + 0.0096)/1.384 = 0.2634
    r = wilson(5, 10)
    assert (round(r.low, 4), round(r.high, 4)) == (0.2366, 0.7634)
    # k = 0 keeps a non-zero upper bound: z^2/(n+z^2) = 3.8415/13.8415
    r = wilson(0, 10)
    assert r.low == 0.0 and r.high == pytest.approx(0.2775, abs=1e-4)
    assert wilson(10, 10).high == pytest.approx(1.0) and wilson(10, 10).low == pytest.approx(0.7225, abs=1e-4)
    assert wilson(0, 0).n == 0 and math.isnan(wilson(0, 0).value)
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_attack_success_rate_per_family():
    verdicts = [("persona", True), ("persona", False), ("persona", True), ("obfuscation", False),
                ("obfuscation", False), ("multi_turn", True)]
    asr = attack_success_rate(verdicts)
    assert (asr["persona"].k, asr["persona"].n) == (2, 3)
    assert (asr["obfuscation"].k, asr["obfuscation"].n) == (0, 2)
    assert (asr["multi_turn"].k, asr["multi_turn"].n) == (1, 1)
    assert (asr["all"].k, asr["all"].n) == (3, 6) and asr["all"].value == 0.5
    assert list(asr)[-1] == "all"


def test_over_refusal_rate():
    rate = over_refusal_rate([True, False, False, False])
    assert (rate.k, rate.n, rate.value) == (1, 4, 0.25)


def test_precision_and_recall_per_class():
    gold = ["harmful", "harmful", "harmful", "refusal", "refusal", "benign"]
    pred = ["harmful", "refusal", "harmful", "refusal", "harmful", "benign"]
    scores = class_scores(gold, pred, ["harmful", "refusal", "benign"])
    # harmful: predicted 3 times, 2 right; gold 3 times, 2 found
    assert (scores["harmful"].precision.k, scores["harmful"].precision.n) == (2, 3)
    assert (scores["harmful"].recall.k, scores["harmful"].recall.n) == (2, 3)
    # refusal: predicted twice (1 right), gold twice (1 found)
    assert scores["refusal"].precision.value == 0.5 and scores["refusal"].recall.value == 0.5
    assert scores["benign"].f1 == 1.0
    assert accuracy(gold, pred).k == 4
    table = confusion(gold, pred, ["harmful", "refusal", "benign"])
    assert table["harmful"]["refusal"] == 1 and table["refusal"]["harmful"] == 1 and table["benign"]["benign"] == 1
