"""Best-of-n sampling with a reward model, and expert iteration (fine-tune on the winners).

``best_of_n(engine, reward, prompts, n, params)`` samples n responses per prompt (one batched call), scores them
with the reward model (or any callable ``score(conversations) -> list[float]``) through the same code PPO uses
(``rollout.generate`` / ``rollout.score_rollouts``) and keeps the highest-scoring one. ``expert_iteration`` turns
the winners into conversations and runs ``SFTTrainer`` on them (Anthony et al. 2017; "rejection sampling
fine-tuning" in Llama 2). Both are cheap baselines for PPO: no value head, no KL term, but the best of n drifts
from the policy by at most log n nats of KL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatforge import chat
from chatforge.generation import SamplingParams
from chatforge.train import rollout


@dataclass(frozen=True)
class BestOfN:
    context: tuple[chat.Message, ...]
    best: rollout.Rollout
    score: float
    scores: list[float]  # every sample's score, in sampling order

    def conversation(self) -> chat.Conversation:
        return chat.Conversation(tuple(self.best.conversation()), source="best-of-n")


def best_of_n(
    engine: Any,
    reward: Any,
    prompts: Sequence[Any],
    n: int,
    params: SamplingParams,
    *,
    empty_reward: float = float("-inf"),
    max_prompt_tokens: int | None = None,
    reward_batch_size: int = 16,
) -> list[BestOfN]:
    """The reward model's favourite of ``n`` samples for each prompt (ties: the first sampled)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    contexts = [rollout.as_context(p) for p in prompts]
    repeated = [c for c in contexts for _ in range(n)]
    rolls = rollout.generate(engine, repeated, params, max_prompt_tokens=max_prompt_tokens)
    scores = rollout.score_rollouts(rollout.scorer(reward, reward_batch_size), rolls, empty_reward=empty_reward)
    out = []
    for i, context in enumerate(contexts):
        mine = scores[i * n : (i + 1) * n]
        k = max(range(n), key=lambda j: (mine[j], -j))
        out.append(BestOfN(context, rolls[i * n + k], mine[k], mine))
    return out


def expert_iteration(
    sft_config: Any,
    model: Any,
    tokenizer: Any,
    winners: Sequence[BestOfN],
    *,
    min_score: float | None = None,
) -> Any:
    """Fine-tune ``model`` on the winners (those scoring at least ``min_score``, and non-empty) with SFTTrainer."""
    from chatforge.train.sft import SFTTrainer

    conversations = [
        w.conversation() for w in winners if w.best.text.strip() and (min_score is None or w.score >= min_score)
    ]
    return SFTTrainer(sft_config, model, tokenizer, conversations).train()
