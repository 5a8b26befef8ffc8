"""The RL math as small pure functions, apart from the trainers that call them, each tested against values
computed by hand (tests/test_losses.py).

* ``ranking_loss``: InstructGPT's K-wise reward-model loss.
* PPO: ``masked_mean`` / ``masked_var`` / ``masked_whiten``, ``kl_estimate`` (k1, k2, k3), ``gae``, ``policy_loss``
  (clipped surrogate), ``value_loss`` (clipped), ``entropy_from_logits``, ``explained_variance``,
  ``adaptive_kl_coef`` (tests/test_losses_ppo.py);
* ``dpo_loss``: direct preference optimisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RankingStats:
    """What a ranking loss saw. Counts are plain numbers so that trainers can add them over micro-batches."""

    pairs: int  # ordered pairs (winner ranked strictly better than loser) over the batch
    correct: float  # pairs whose winner got the higher reward
    prompts: int  # prompts with at least one pair (the ones the loss averages over)

    @property
    def accuracy(self) -> float:
        return self.correct / self.pairs if self.pairs else float("nan")


def ranking_loss(
    rewards: torch.Tensor, ranks: torch.Tensor, margin: float = 0.0
) -> tuple[torch.Tensor, RankingStats]:
    """InstructGPT's reward-model loss over K ranked responses per prompt.

    ``rewards`` [B, K] are the scalar rewards of the K responses of each of B prompts; ``ranks`` [B, K] their
    ranks (1 = best, equal = tie, 0 = no response in this slot, for prompts with fewer than K responses).

    Every ordered pair (w, l) of a prompt with rank_w < rank_l contributes -log sigmoid(r_w - r_l - margin); ties
    and empty slots give no pair. Each prompt's pairs are averaged first and then the prompts, so a prompt with
    K = 9 (36 pairs) weighs as much as one with K = 2 (1 pair): the paper's 1 / C(K, 2) factor, which keeps the
    many correlated pairs of one ranking from dominating (and overfitting) the batch. Prompts without a pair do
    not count. A batch without any pair gives a zero loss that still depends on ``rewards`` (so backward works).

    Returns the loss (a scalar, float32) and the batch's pair statistics.
    """
    if rewards.shape != ranks.shape or rewards.ndim != 2:
        raise ValueError(
            f"rewards and ranks must both be [batch, K]; got {tuple(rewards.shape)} and {tuple(ranks.shape)}"
        )
    rewards = rewards.float()
    present = ranks > 0
    # better[b, i, j]: response i of prompt b is ranked strictly above response j (both present).
    better = (ranks.unsqueeze(2) < ranks.unsqueeze(1)) & present.unsqueeze(2) & present.unsqueeze(1)
    difference = rewards.unsqueeze(2) - rewards.unsqueeze(1)  # r_i - r_j
    pair_loss = -F.logsigmoid(difference - margin)
    pair_loss = torch.where(better, pair_loss, torch.zeros_like(pair_loss))
    pairs_per_prompt = better.sum(dim=(1, 2))
    has_pairs = pairs_per_prompt > 0
    prompts = int(has_pairs.sum())
    if prompts == 0:
        return rewards.sum() * 0.0, RankingStats(pairs=0, correct=0.0, prompts=0)
    prompt_loss = pair_loss.sum(dim=(1, 2)) / pairs_per_prompt.clamp(min=1)
    loss = prompt_loss[has_pairs].mean()
    with torch.no_grad():
        correct = float(((difference > 0) & better).sum())
    return loss, RankingStats(pairs=int(pairs_per_prompt.sum()), correct=correct, prompts=prompts)


# --------------------------------------------------------------------------------------------------------------
# PPO (tests/test_losses_ppo.py). Per-token tensors are [batch, T] with a 0/1 ``mask`` of the response tokens.
# --------------------------------------------------------------------------------------------------------------


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is 1 (every token weighs the same; 0 if none)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the masked positions; ``unbiased`` applies Bessel's correction n / (n - 1)."""
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    n = mask.sum()
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """(values - mean) / sqrt(var + eps) with mean and (unbiased) variance over the masked positions; with
    ``shift_mean=False`` the mean is added back (only the scale changes). Masked-out positions become 0."""
    mean = masked_mean(values, mask)
    var = masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimates of KL(pi || pi_ref) from samples of pi (Schulman, "Approximating KL divergence").

    With log r = logp_ref - logp: k1 = -log r = logp - logp_ref (unbiased, high variance, can be negative);
    k2 = (log r)^2 / 2 (biased, low variance, >= 0); k3 = (r - 1) - log r (unbiased, low variance, >= 0)."""
    log_ratio = ref_logprobs.float() - logprobs.float()
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}; expected k1, k2 or k3")


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens (Schulman et al. 2016).

    ``rewards``, ``values``, ``mask``: [B, T]; each row's response occupies the masked positions, left-aligned
    (positions past the end are padding). The episode ends after the last response token, so the value after it
    is 0. delta_t = r_t + gamma V_{t+1} - V_t; A_t = delta_t + gamma lam A_{t+1}; returns R_t = A_t + V_t.
    Returns (advantages, returns), both 0 on padding."""
    mask = mask.to(values.dtype)
    rewards = rewards.float() * mask
    values = values.float() * mask
    steps = rewards.shape[1]
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    returns = (advantages + values) * mask
    return advantages, returns


@dataclass(frozen=True)
class PolicyLossStats:
    clip_fraction: float  # share of tokens whose ratio the clip bound (the clipped term was the larger loss)
    approx_kl: float  # mean k3 estimate of KL(pi_old || pi) over the tokens
    ratio_mean: float


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> tuple[torch.Tensor, PolicyLossStats]:
    """PPO's clipped surrogate, as a loss to minimise: mean over tokens of
    max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)) with ratio = exp(logp - logp_old)."""
    log_ratio = logprobs.float() - old_logprobs.float()
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = PolicyLossStats(
            clip_fraction=float(masked_mean((clipped > unclipped).float(), mask)),
            approx_kl=float(masked_mean(torch.expm1(-log_ratio) + log_ratio, mask)),
            ratio_mean=float(masked_mean(ratio, mask)),
        )
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float | None = 0.2,
) -> tuple[torch.Tensor, float]:
    """Clipped value loss: 0.5 * mean over tokens of max((V - R)^2, (V_clip - R)^2) with
    V_clip = V_old + clip(V - V_old, -eps, eps); without ``clip_range`` plain 0.5 (V - R)^2.
    Returns (loss, share of tokens where the clipped term was the larger)."""
    values = values.float()
    unclipped = (values - returns) ** 2
    if clip_range is None:
        return 0.5 * masked_mean(unclipped, mask), 0.0
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        fraction = float(masked_mean((clipped > unclipped).float(), mask))
    return loss, fraction


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax of ``logits`` along the last dimension: logsumexp(z) - sum softmax(z) z."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over the masked tokens (1: perfect critic, 0: no better than a constant)."""
    var_returns = masked_var(returns.float(), mask, unbiased=False)
    if float(var_returns) == 0.0:
        return float("nan")
    return float(1.0 - masked_var(returns.float() - values.float(), mask, unbiased=False) / var_returns)


def adaptive_kl_coef(coef: float, kl: float, target: float, batch: int, horizon: int) -> float:
    """Ziegler et al. (2019)'s proportional controller: e = clip(KL / target - 1, -0.2, 0.2);
    beta <- beta (1 + e * batch / horizon), with ``kl`` the mean per-response KL of the rollout batch."""
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return coef * (1.0 + error * batch / horizon)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al. 2023) on summed response log-probabilities [B]:
    z = beta ((logp_w - ref_w) - (logp_l - ref_l)); loss = mean of -(1 - s) log sigmoid(z) - s log sigmoid(-z)
    (s = label smoothing, the conservative DPO of cDPO). Returns (loss, chosen rewards, rejected rewards) where a
    reward is beta (logp - ref), detached."""
    chosen = policy_chosen.float() - reference_chosen.float()
    rejected = policy_rejected.float() - reference_rejected.float()
    logits = beta * (chosen - rejected)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return losses.mean(), beta * chosen.detach(), beta * rejected.detach()
