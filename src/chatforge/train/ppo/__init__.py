"""PPO with a per-token KL penalty to the SFT model (InstructGPT step 3), optionally PPO-ptx.

``PPOTrainer(config, policy, tokenizer, reward, prompts, ptx_conversations=None).train()``. ``reward`` is a
``RewardModel`` (``chatforge.train.reward``) or any callable ``score(conversations) -> list[float]``.

One step:

1. **rollout**: each process samples one response per prompt of its share of the step's prompts with the
   generation engine on the policy (``TorchEngine``, temperature ``config.temperature``, default 1, no top-k/p);
2. **score**: the reward model scores each (context, response); truncated responses (no end-of-turn within
   ``max_new_tokens``) can get a fixed ``truncation_reward`` instead, empty ones get ``empty_reward``;
3. **old log-probs, values, reference log-probs**: one no-grad, eval-mode forward pass of the policy over the
   packed sequences (we do *not* reuse the sampling log-probs: batched KV-cache decoding and the packed training
   forward differ in numerics, and PPO's first ratio must be exactly 1); the reference is the same weights with
   the LoRA adapters disabled, or a frozen copy of the initial policy without LoRA;
4. **rewards**: r_t = -beta (logp_t - logp_ref_t) at every response token, plus the score at the last one;
   beta fixed, or adapted towards ``adaptive_kl_target`` (Ziegler et al. 2019);
5. **GAE** (gamma, lambda) with the value head's estimates; advantages whitened over the rollout batch (all
   processes);
6. ``ppo_epochs`` passes over shuffled minibatches: clipped policy loss + vf_coef * clipped value loss
   - entropy_coef * entropy (+ ptx_coef * SFT loss on SFT conversations), one optimizer step per minibatch; the
   epochs stop early when a minibatch's approx-KL to the rollout policy exceeds ``early_stop_kl``.

The critic is a scalar linear head on the policy's final hidden state (shared trunk), not a second model: on a
CPU the costly part of a step is the transformer, and a shared trunk computes log-probs, entropies and values in
the same forward pass; a separate critic would double the forward and backward cost and the memory. The head
starts at zero (a value of 0 everywhere) and is saved with the trainer state (``value_head`` in
``trainer_state.pt``) and as ``value_head.safetensors`` in each checkpoint and in ``final/``.

All forward passes run in eval mode (no dropout), so the rollout policy and the policy being optimised differ only
by the updates. A run directory looks like SFT's: ``metrics.jsonl``, ``reward_kl.png``, ``checkpoint-<step>/``,
``final/`` (and ``adapter/`` with LoRA). Resuming restores model, value head, optimizer, scheduler, every
process's RNG, the step and the adaptive KL coefficient; sampling is seeded per (step, process), so a resumed run
produces the very same rollouts.

One module per concern: ``config`` (``PPOConfig``), ``trainer`` (``PPOTrainer``, the reward/KL plot) and ``cli``
(the ``ppo`` command). The losses are ``chatforge.train.losses``; sampling, scoring and the packed forward pass,
which DPO and best-of-n share, are ``chatforge.train.rollout``.
"""

from chatforge.train.ppo.cli import add_arguments, main, register_cli, run_command
from chatforge.train.ppo.config import PPOConfig, PPOConfigError
from chatforge.train.ppo.trainer import PPOResult, PPOTrainer, plot_curves

__all__ = [
    "PPOConfig",
    "PPOConfigError",
    "PPOResult",
    "PPOTrainer",
    "add_arguments",
    "main",
    "plot_curves",
    "register_cli",
    "run_command",
]
