"""The PPO/DPO math of chatforge.train.losses against numbers worked out by hand (in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from chatforge.train import losses


def close(tensor, expected, tol=1e-6):
    torch.testing.assert_close(tensor.float(), torch.tensor(expected, dtype=torch.float32), atol=tol, rtol=0)


def test_masked_mean_var_whiten():
    x = torch.tensor([[1.0, 2.0], [3.0, 100.0]])
    m = torch.tensor([[1, 1], [1, 0]])
    # (1 + 2 + 3) / 3 = 2; the 100 is masked out.
    assert float(losses.masked_mean(x, m)) == pytest.approx(2.0)
    # squares of deviations: 1 + 0 + 1 = 2; unbiased: 2 / (3 - 1) = 1; biased: 2 / 3.
    assert float(losses.masked_var(x, m)) == pytest.approx(1.0)
    assert float(losses.masked_var(x, m, unbiased=False)) == pytest.approx(2 / 3)
    # (x - 2) / sqrt(1) on the mask, 0 elsewhere.
    close(losses.masked_whiten(x, m), [[-1.0, 0.0], [1.0, 0.0]])
    # shift_mean=False keeps the mean: (x - 2) / 1 + 2.
    close(losses.masked_whiten(x, m, shift_mean=False), [[1.0, 2.0], [3.0, 0.0]])
    assert float(losses.masked_mean(x, torch.zeros_like(m))) == 0.0


def test_kl_estimators():
    logp = torch.tensor([-1.0, -2.0])
    ref = torch.tensor([-1.5, -1.0])
    # log r = ref - logp = [-0.5, 1.0]
    assert losses.kl_estimate(logp, ref, "k1").tolist() == pytest.approx([0.5, -1.0])
    assert losses.kl_estimate(logp, ref, "k2").tolist() == pytest.approx([0.125, 0.5])
    # k3 = (r - 1) - log r: e^-0.5 - 1 + 0.5 = 0.1065307; e^1 - 1 - 1 = 0.7182818
    assert losses.kl_estimate(logp, ref, "k3").tolist() == pytest.approx([0.1065307, 0.7182818], abs=1e-6)
    with pytest.raises(ValueError):
        losses.kl_estimate(logp, ref, "k4")


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.4, 9.0, 9.0]])  # the 9s are padding and must not leak in
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    adv, ret = losses.gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: d2 = 1 - 0.3 = 0.7; d1 = 0.3 - 0.2 = 0.1, A1 = 0.1 + 0.5 * 0.7 = 0.45; d0 = 0.2 - 0.1 = 0.1,
    #        A0 = 0.1 + 0.5 * 0.45 = 0.325.   R = A + V = 0.425, 0.65, 1.0
    # row 1: one token, terminal: d0 = 0.5 - 0.4 = 0.1 = A0, R0 = 0.5
    close(adv, [[0.325, 0.45, 0.7], [0.1, 0.0, 0.0]])
    close(ret, [[0.425, 0.65, 1.0], [0.5, 0.0, 0.0]])
    # lam = 1: returns are the discounted sums of rewards (gamma 0.5: 0.25, 0.5, 1), whatever the values.
    adv, ret = losses.gae(rewards, values, mask, gamma=0.5, lam=1.0)
    assert ret[0].tolist() == pytest.approx([0.25, 0.5, 1.0], abs=1e-6)
    assert adv[0].tolist() == pytest.approx([0.15, 0.3, 0.7], abs=1e-6)


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(1, 4)
    logp = torch.tensor([[math.log(1.5), math.log(0.5), math.log(1.1), 5.0]])
    adv = torch.tensor([[1.0, -1.0, 2.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = losses.policy_loss(logp, old, adv, mask, clip_range=0.2)
    # ratio 1.5, A 1: max(-1.5, -1.2) = -1.2 (clipped); ratio 0.5, A -1: max(0.5, 0.8) = 0.8 (clipped);
    # ratio 1.1, A 2: max(-2.2, -2.2) = -2.2 (inside the bound). Mean = -2.6 / 3.
    assert float(loss) == pytest.approx(-2.6 / 3, abs=1e-6)
    assert stats.clip_fraction == pytest.approx(2 / 3)
    # k3 of log r = -log ratio: 1/1.5 - 1 + 0.405465 = 0.072132; 2 - 1 - 0.693147 = 0.306853;
    # 1/1.1 - 1 + 0.095310 = 0.004401; mean 0.127795
    assert stats.approx_kl == pytest.approx(0.127795, abs=1e-5)
    assert stats.ratio_mean == pytest.approx((1.5 + 0.5 + 1.1) / 3, abs=1e-6)
    # The gradient flows only where the ratio is inside the bound: d/dlogp of -A r / 3 at token 3 = -2.2 / 3.
    logp = logp.clone().requires_grad_(True)
    loss, _ = losses.policy_loss(logp, old, adv, mask, clip_range=0.2)
    loss.backward()
    close(logp.grad, [[0.0, 0.0, -2.2 / 3, 0.0]])


def test_clipped_value_loss_by_hand():
    values = torch.tensor([1.0, 0.0, 0.5, 7.0])
    old = torch.tensor([0.5, 0.5, 0.5, 0.0])
    returns = torch.tensor([2.0, 0.0, 0.0, 0.0])
    mask = torch.tensor([1, 1, 1, 0])
    loss, fraction = losses.value_loss(values, old, returns, mask, clip_range=0.2)
    # (1-2)^2 = 1 vs V_clip 0.7: 1.69; (0-0)^2 = 0 vs V_clip 0.3: 0.09; 0.25 vs 0.25. 0.5 * 2.03 / 3
    assert float(loss) == pytest.approx(0.5 * 2.03 / 3, abs=1e-6)
    assert fraction == pytest.approx(2 / 3)
    loss, _ = losses.value_loss(values, old, returns, mask, clip_range=None)
    assert float(loss) == pytest.approx(0.5 * (1 + 0 + 0.25) / 3, abs=1e-6)


def test_entropy_and_explained_variance():
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])
    # uniform over 2: ln 2; probs (0.25, 0.75): 0.25 ln 4 + 0.75 ln(4/3) = 0.346574 + 0.215762
    assert losses.entropy_from_logits(logits).tolist() == pytest.approx([0.693147, 0.562335], abs=1e-5)
    returns = torch.tensor([1.0, 2.0, 3.0, 50.0])
    values = torch.tensor([1.0, 2.0, 2.0, 0.0])
    mask = torch.tensor([1, 1, 1, 0])
    # Var(R) = 2/3; residuals (0, 0, 1): Var = 2/9; 1 - (2/9) / (2/3) = 2/3
    assert losses.explained_variance(values, returns, mask) == pytest.approx(2 / 3, abs=1e-6)


def test_adaptive_kl_controller():
    # KL 12 vs target 6: error clipped to 0.2; beta 0.1 * (1 + 0.2 * 64 / 10000) = 0.100128
    assert losses.adaptive_kl_coef(0.1, 12.0, 6.0, 64, 10000) == pytest.approx(0.100128)
    # KL 5.4: error -0.1; 0.1 * (1 - 0.1 * 64 / 10000) = 0.099936
    assert losses.adaptive_kl_coef(0.1, 5.4, 6.0, 64, 10000) == pytest.approx(0.099936)


def test_dpo_loss_by_hand():
    pc, pr = torch.tensor([-1.0]), torch.tensor([-3.0])
    rc, rr = torch.tensor([-2.0]), torch.tensor([-2.0])
    loss, chosen, rejected = losses.dpo_loss(pc, pr, rc, rr, beta=0.5)
    # z = 0.5 * ((−1 + 2) − (−3 + 2)) = 1; −log sigmoid(1) = log(1 + e^−1) = 0.3132617
    assert float(loss) == pytest.approx(0.3132617, abs=1e-6)
    assert chosen.tolist() == pytest.approx([0.5]) and rejected.tolist() == pytest.approx([-0.5])
    loss, _, _ = losses.dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.1)
    # 0.9 * 0.3132617 + 0.1 * log(1 + e) = 0.2819355 + 0.1313262
    assert float(loss) == pytest.approx(0.4132617, abs=1e-6)


@pytest.mark.parametrize(("softcap", "temperature", "chunk_elements"), [(None, 1.0, 1 << 26), (2.0, 0.7, 40)])
def test_fused_head_logprobs_match_autograd_through_the_plain_formula(monkeypatch, softcap, temperature, chunk_elements):
    from chatforge.train import token_loss

    monkeypatch.setattr(token_loss, "CHUNK_ELEMENTS", chunk_elements)  # 40 elements / 11 tokens: 3-row chunks
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(6, 11, bias=False)
    hidden = torch.randn(8, 6, generator=g, requires_grad=True)
    targets = torch.randint(0, 11, (8,), generator=g)
    upstream = torch.randn(8, generator=g)

    def plain() -> tuple[torch.Tensor, torch.Tensor]:
        z = head(hidden)
        if softcap is not None:
            z = torch.tanh(z / softcap) * softcap
        z = z / temperature
        logp = torch.log_softmax(z, -1)
        return logp.gather(-1, targets[:, None])[:, 0], -(logp.exp() * logp).sum(-1)

    results = []
    for fn in (plain, lambda: token_loss.head_logprobs(head, hidden, targets, softcap=softcap, temperature=temperature)):
        hidden.grad = head.weight.grad = None
        logprobs, entropy = fn()
        (logprobs * upstream).sum().backward()
        results.append((logprobs.detach(), entropy.detach(), hidden.grad.clone(), head.weight.grad.clone()))
    for expected, got in zip(*results, strict=True):
        torch.testing.assert_close(got, expected)
    assert not token_loss.head_logprobs(head, hidden, targets)[1].requires_grad  # entropy is monitored only
    with torch.no_grad():  # the reference's path: nothing kept for a backward pass, the same numbers
        no_grad_logprobs, no_grad_entropy = token_loss.head_logprobs(
            head, hidden, targets, softcap=softcap, temperature=temperature
        )
    torch.testing.assert_close(no_grad_logprobs, results[0][0])
    torch.testing.assert_close(no_grad_entropy, results[0][1])
    logprobs_only, none = token_loss.head_logprobs(
        head, hidden, targets, softcap=softcap, temperature=temperature, with_entropy=False
    )
    assert none is None
    torch.testing.assert_close(logprobs_only.detach(), results[0][0])
    assert token_loss.head_logprobs(torch.nn.Sequential(head), hidden, targets) is None  # not a plain Linear
