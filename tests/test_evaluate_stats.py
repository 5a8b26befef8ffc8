"""chatforge.evaluate.stats against values computed by hand or printed in the papers that define them."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest

from chatforge.evaluate import stats


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3 (score
        # interval without continuity correction)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
        # 7/10 by hand: z = 1.959964, z^2/n = 0.384146; centre = (0.7 + 0.192073) / 1.384146 = 0.644493,
        # half = 1.959964 / 1.384146 * sqrt(0.021 + 0.0096037) = 0.247716
        (7, 10, 0.3968, 0.8922),
    ],
)
def test_wilson_interval_matches_published_values(successes, n, low, high):
    got_low, got_high = stats.wilson_interval(successes, n)
    assert got_low == pytest.approx(low, abs=5e-5)
    assert got_high == pytest.approx(high, abs=5e-5)


def test_wilson_interval_edges_and_errors():
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    low, high = stats.wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(1 - stats.wilson_interval(0, 10)[1])
    wider = stats.wilson_interval(7, 10, confidence=0.99)
    assert wider[0] < 0.3968 and wider[1] > 0.8922
    with pytest.raises(ValueError, match="successes <= n"):
        stats.wilson_interval(11, 10)
    with pytest.raises(ValueError, match="confidence"):
        stats.wilson_interval(1, 10, confidence=1.0)


def test_proportion_and_pass_rate():
    p = stats.pass_rate([True, True, False, True])
    assert (p.successes, p.n, p.rate) == (3, 4, 0.75)
    assert p.to_dict() == json.loads(json.dumps(p.to_dict()))
    assert p.format().startswith("75.0% [")
    assert stats.pass_rate([]).rate == 0.0


def _two_sided_by_hand(k: int, n: int) -> float:
    """Sum the probability of every outcome no likelier than k under Binomial(n, 1/2), exactly."""
    probability = [Fraction(math.comb(n, i), 2**n) for i in range(n + 1)]
    return float(sum(p for p in probability if p <= probability[k]))


def test_binomial_two_sided_p_by_hand():
    # 2 of 10: P(X<=2) = (1 + 10 + 45) / 1024 = 56/1024, doubled = 0.109375
    assert stats.binomial_two_sided_p(2, 10) == 0.109375
    assert stats.binomial_two_sided_p(8, 10) == 0.109375
    # 0 of 5: 2/32
    assert stats.binomial_two_sided_p(0, 5) == 0.0625
    assert stats.binomial_two_sided_p(5, 10) == 1.0
    assert stats.binomial_two_sided_p(0, 0) == 1.0
    for n in (1, 7, 20, 48):
        for k in range(n + 1):
            assert stats.binomial_two_sided_p(k, n) == pytest.approx(_two_sided_by_hand(k, n), rel=1e-12)
    # large n stays exact and finite (big integers until the one division)
    assert 0 < stats.binomial_two_sided_p(400, 1000) < 1e-9


def test_sign_test_excludes_ties_and_counts_them_half_in_the_win_rate():
    result = stats.sign_test(7, 3, 2)
    assert result.win_rate == pytest.approx(8 / 12)
    # ties excluded: 7 wins vs 3 losses, P(X<=3 | 10) = (1 + 10 + 45 + 120) / 1024 = 176/1024, doubled
    assert result.p_value == pytest.approx(352 / 1024)
    assert (result.low, result.high) == stats.wilson_interval(8, 12)
    assert result.n == 12
    # the numbers: 57.3% over 48 prompts is nowhere near significant
    assert stats.sign_test(25, 19, 4).p_value > 0.4
    assert stats.win_rate([1, 1, 0, 0.5, 1]).to_dict()["wins"] == 3
    with pytest.raises(ValueError, match="outcomes must be"):
        stats.win_rate([1, 2])


def test_mcnemar_is_the_sign_test_on_discordant_prompts():
    a = [True, True, False, False, True, False, False, False, True, False]
    b = [True, False, True, True, True, True, True, False, True, True]
    result = stats.mcnemar(a, b)
    # discordant: A only on prompt 1; B only on prompts 2, 3, 5, 6, 9 -> 1 vs 5, p = 2 * 7/64
    assert (result.only_a, result.only_b) == (1, 5)
    assert result.p_value == pytest.approx(14 / 64)
    assert (result.passes_a, result.passes_b) == (4, 8)
    assert result.difference.difference == pytest.approx(0.4)
    assert result.difference.low <= 0.4 <= result.difference.high
    assert json.loads(json.dumps(result.to_dict()))["only_b"] == 5
    with pytest.raises(ValueError, match="differ in length"):
        stats.mcnemar([True], [True, False])


def test_paired_bootstrap_by_hand():
    # two pairs with differences 0 and 1: a resampled mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4, so the 95%
    # percentile interval is [0, 1] and the 40% one (30th to 70th percentile) is [0.5, 0.5]
    wide = stats.paired_bootstrap([0, 0], [0, 1])
    assert (wide.low, wide.high, wide.difference) == (0.0, 1.0, 0.5)
    narrow = stats.paired_bootstrap([0, 0], [0, 1], confidence=0.4)
    assert (narrow.low, narrow.high) == (0.5, 0.5)
    # a constant difference has a zero-width interval
    constant = stats.paired_bootstrap([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])
    assert constant.low == pytest.approx(0.5) and constant.high == pytest.approx(0.5)
    # seeded: the same seed gives the same interval, another seed may not
    xs = [0.1, 0.4, 0.35, 0.8, 0.5, 0.2, 0.9, 0.05]
    ys = [0.3, 0.5, 0.30, 0.9, 0.7, 0.1, 0.95, 0.4]
    assert stats.paired_bootstrap(xs, ys, seed=3) == stats.paired_bootstrap(xs, ys, seed=3)
    with pytest.raises(ValueError, match="differ in length"):
        stats.paired_bootstrap([1.0], [1.0, 2.0])


def test_bootstrap_mean():
    mean = stats.bootstrap_mean([0.0, 1.0])
    assert (mean.mean, mean.low, mean.high, mean.n) == (0.5, 0.0, 1.0, 2)
    with pytest.raises(ValueError, match="at least one"):
        stats.bootstrap_mean([])


def test_cohen_kappa_textbook_example():
    # 50 items, rater A says yes to 25, rater B to 30; both yes 20, both no 15:
    # p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.4
    a = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert stats.cohen_kappa(a, b) == pytest.approx(0.4)
    assert stats.cohen_kappa(a, a) == pytest.approx(1.0)
    # agreement exactly at chance: p_o = p_e = 0.5
    assert stats.cohen_kappa(["y", "y", "n", "n"], ["y", "n", "y", "n"]) == pytest.approx(0.0)
    assert math.isnan(stats.cohen_kappa(["y", "y"], ["y", "y"]))


def test_agreement_reports_raw_rate_interval_and_kappa():
    a = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    result = stats.agreement(a, b)
    assert (result.agree, result.n, result.rate) == (35, 50, 0.7)
    assert (result.low, result.high) == stats.wilson_interval(35, 50)
    assert result.kappa == pytest.approx(0.4)
    assert result.kappa_low < 0.4 < result.kappa_high
    undefined = stats.agreement(["y", "y"], ["y", "y"])
    assert json.loads(json.dumps(undefined.to_dict()))["kappa"] is None
    assert "undefined" in undefined.format()
    with pytest.raises(ValueError, match="different numbers"):
        stats.agreement(["y"], ["y", "n"])
