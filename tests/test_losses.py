"""The RL losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from chatforge.train.losses import ranking_loss


def neg_log_sigmoid(x: float) -> float:
    """-log sigmoid(x) = log(1 + e^-x), written out."""
    return math.log(1.0 + math.exp(-x))


def test_k4_ranking_with_a_tie_matches_the_hand_computed_loss():
    # Responses 1 and 2 tie for second place, so the pair (1, 2) is left out: 5 of the 6 pairs remain.
    rewards = torch.tensor([[2.0, 0.5, 1.0, 1.2]])
    ranks = torch.tensor([[1, 2, 2, 3]])
    # (better, worse): r_better - r_worse
    #   (0, 1): 2.0 - 0.5 =  1.5
    #   (0, 2): 2.0 - 1.0 =  1.0
    #   (0, 3): 2.0 - 1.2 =  0.8
    #   (1, 3): 0.5 - 1.2 = -0.7   (the model has this pair the wrong way round)
    #   (2, 3): 1.0 - 1.2 = -0.2   (and this one)
    expected = (
        math.log(1 + math.exp(-1.5))
        + math.log(1 + math.exp(-1.0))
        + math.log(1 + math.exp(-0.8))
        + math.log(1 + math.exp(0.7))
        + math.log(1 + math.exp(0.2))
    ) / 5
    loss, stats = ranking_loss(rewards, ranks)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    # The same, term by term: 0.20141 + 0.31326 + 0.37110 + 1.10319 + 0.79814 = 2.78710; / 5 = 0.55742
    assert float(loss) == pytest.approx(0.55742, abs=1e-5)
    assert stats.pairs == 5
    assert stats.correct == 3
    assert stats.accuracy == pytest.approx(0.6)
    assert stats.prompts == 1


def test_order_of_the_responses_does_not_matter():
    rewards = torch.tensor([[2.0, 0.5, 1.0, 1.2]])
    ranks = torch.tensor([[1, 2, 2, 3]])
    permutation = torch.tensor([3, 1, 0, 2])
    a, _ = ranking_loss(rewards, ranks)
    b, _ = ranking_loss(rewards[:, permutation], ranks[:, permutation])
    assert float(a) == pytest.approx(float(b), rel=1e-7)


def test_each_prompt_weighs_the_same_whatever_its_number_of_pairs():
    # Prompt A ranks 4 responses strictly: C(4, 2) = 6 pairs. Prompt B has 2 responses (1 pair); its two other
    # slots are empty (rank 0).
    rewards = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 9.0, 9.0]], requires_grad=True)
    ranks = torch.tensor([[1, 2, 3, 4], [1, 2, 0, 0]])
    prompt_a = (3 * neg_log_sigmoid(1.0) + 2 * neg_log_sigmoid(2.0) + neg_log_sigmoid(3.0)) / 6
    prompt_b = neg_log_sigmoid(-1.0)
    loss, stats = ranking_loss(rewards, ranks)
    assert loss.item() == pytest.approx((prompt_a + prompt_b) / 2, rel=1e-6)
    pooled = (6 * prompt_a + prompt_b) / 7  # what averaging all pairs together would give instead
    assert loss.item() != pytest.approx(pooled, rel=1e-3)
    assert (stats.pairs, stats.prompts, stats.correct) == (7, 2, 6)

    loss.backward()
    assert rewards.grad is not None
    # d/dr_w of -log sigmoid(r_w - r_l) is -sigmoid(r_l - r_w); prompt B's single pair carries weight 1/2.
    sigmoid_b = 1 / (1 + math.exp(-(1.0 - 0.0)))  # sigmoid(r_l - r_w) with r_w = 0, r_l = 1
    assert rewards.grad[1].tolist() == pytest.approx([-sigmoid_b / 2, sigmoid_b / 2, 0.0, 0.0], rel=1e-6)
    # Empty slots get no gradient however large their (meaningless) rewards are.
    assert rewards.grad[1, 2:].abs().sum() == 0


def test_margin_demands_a_gap():
    rewards = torch.tensor([[1.5, 1.0]])
    ranks = torch.tensor([[1, 2]])
    plain, _ = ranking_loss(rewards, ranks)
    with_margin, stats = ranking_loss(rewards, ranks, margin=1.0)
    assert float(plain) == pytest.approx(math.log(1 + math.exp(-0.5)), rel=1e-6)
    assert float(with_margin) == pytest.approx(math.log(1 + math.exp(0.5)), rel=1e-6)  # 0.5 - 1.0 = -0.5
    assert stats.correct == 1  # accuracy ignores the margin: the better response is still ahead


def test_prompts_without_a_pair_are_left_out():
    rewards = torch.tensor([[1.0, 0.0], [5.0, 5.0], [7.0, 0.0]], requires_grad=True)
    ranks = torch.tensor([[1, 2], [1, 1], [1, 0]])  # a tie, and a prompt with one response
    loss, stats = ranking_loss(rewards, ranks)
    assert loss.item() == pytest.approx(neg_log_sigmoid(1.0), rel=1e-6)
    assert (stats.pairs, stats.prompts) == (1, 1)

    nothing, none = ranking_loss(rewards[1:], ranks[1:])
    assert nothing.item() == 0.0 and none.pairs == 0 and math.isnan(none.accuracy)
    nothing.backward()  # still part of the graph, so a step without pairs does not crash


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\[batch, K\]"):
        ranking_loss(torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.long))
