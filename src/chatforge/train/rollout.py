"""What the policy-optimisation stages (PPO, best-of-n, DPO) share: rollouts, scoring and a packed log-prob
forward pass (their config/CLI plumbing is `chatforge.train.config`, shared with SFT and the reward model).

* ``as_context``: a prompt (``sampling.PromptItem``, a ``Conversation`` or a message list ending with the user)
  as a tuple of messages;
* ``generate``: sample one response per context with the generation engine -> ``Rollout`` records;
* ``scorer`` / ``score_rollouts``: a ``RewardModel`` or any callable ``score(conversations) -> list[float]``
  (each conversation a list of ``chat.Message`` ending with the assistant reply) applied to rollouts;
* ``pack`` + ``sequence_forward``: run many (prompt, response) sequences through the decoder at once, packed
  without padding (position ids restart per sequence), and return the log-probability, entropy and hidden state
  at every response token, with the output head applied to the response positions only.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from chatforge import chat
from chatforge.generation import Completion, SamplingParams
from chatforge.train import losses, packing, token_loss

RewardFn = Callable[[list[list[chat.Message]]], Sequence[float]]

# --------------------------------------------------------------------------------------------------------------
# Rollouts and scores
# --------------------------------------------------------------------------------------------------------------


def as_context(item: Any) -> tuple[chat.Message, ...]:
    """The messages of a prompt: a ``PromptItem`` (``.context``), a ``Conversation`` or a message list; it must
    end with a user turn."""
    raw = getattr(item, "context", None)
    if raw is None:
        raw = item.messages if isinstance(item, chat.Conversation) else item
    messages = tuple(chat.parse_messages(raw))
    chat.validate_messages(messages, last="user")
    return messages


@dataclass
class Rollout:
    """One sampled response: the context, the prompt's token ids, the response's token ids (stop token included),
    the sampling log-probabilities, its text and why it ended ("stop" or "length")."""

    context: tuple[chat.Message, ...]
    prompt_ids: list[int]
    response_ids: list[int]
    sample_logprobs: list[float]
    text: str
    finish_reason: str | None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def conversation(self) -> list[chat.Message]:
        return [*self.context, chat.Message("assistant", self.text)]


def encode_contexts(
    tokenizer: Any, contexts: Sequence[tuple[chat.Message, ...]], max_prompt_tokens: int | None
) -> list[list[int]]:
    """Prompt token ids (context + generation prompt); an over-long prompt keeps its last ``max_prompt_tokens``."""
    out = []
    for context in contexts:
        ids = chat.encode_prompt(tokenizer, context)
        if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
            ids = ids[-max_prompt_tokens:]
        out.append(ids)
    return out


def generate(
    engine: Any,
    contexts: Sequence[tuple[chat.Message, ...]],
    params: SamplingParams,
    *,
    max_prompt_tokens: int | None = None,
) -> list[Rollout]:
    """One sampled response per context (all in one batched ``engine.generate`` call)."""
    prompts = encode_contexts(engine.tokenizer, contexts, max_prompt_tokens)
    completions: list[Completion] = engine.generate(prompts, params)
    return [
        Rollout(tuple(ctx), list(c.prompt_ids), list(c.token_ids), list(c.logprobs), c.text, c.finish_reason)
        for ctx, c in zip(contexts, completions, strict=True)
    ]


def scorer(reward: Any, batch_size: int = 16) -> RewardFn:
    """A scoring function from a ``RewardModel`` (anything with ``.score(items, batch_size=...)``) or a callable."""
    score = getattr(reward, "score", None)
    if callable(score):
        return lambda conversations: score(conversations, batch_size=batch_size)
    if callable(reward):
        return typing.cast(RewardFn, reward)
    raise TypeError(f"reward must be a RewardModel or a callable, got {type(reward).__name__}")


def score_rollouts(score: RewardFn, rollouts: Sequence[Rollout], *, empty_reward: float) -> list[float]:
    """The reward of each rollout's reply. An empty reply (the model ended its turn at once) cannot be rendered as
    a conversation, so it is not scored and gets ``empty_reward``."""
    keep = [i for i, r in enumerate(rollouts) if r.text.strip()]
    out = [float(empty_reward)] * len(rollouts)
    if keep:
        values = list(score([rollouts[i].conversation() for i in keep]))
        if len(values) != len(keep):
            raise ValueError(f"the reward function returned {len(values)} scores for {len(keep)} conversations")
        for i, value in zip(keep, values, strict=True):
            out[i] = float(value)
    return out


# --------------------------------------------------------------------------------------------------------------
# Packed forward pass over (prompt, response) sequences
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packed:
    """Sequences packed into rows. ``target_index`` are the flat positions whose next token is a response token,
    sequence after sequence; sequence i owns targets ``spans[i][0]:spans[i][1]``."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    target_index: torch.Tensor
    targets: torch.Tensor
    spans: list[tuple[int, int]]

    @property
    def lengths(self) -> list[int]:
        return [b - a for a, b in self.spans]


def pack(sequences: Sequence[tuple[Sequence[int], int]], pad_id: int, device: torch.device | None = None) -> Packed:
    """Pack (token ids, index of the first response token) pairs; every sequence needs one response token and
    one token before it."""
    lengths = [len(ids) for ids, _ in sequences]
    rows = packing.pack_rows(lengths, range(len(sequences)), max(lengths))
    input_ids, position_ids, where = packing.lay_out([ids for ids, _ in sequences], rows, pad_id)
    target_index: list[int] = []
    targets: list[int] = []
    spans = []
    for i, (ids, start) in enumerate(sequences):
        if not 1 <= start < len(ids):
            raise ValueError(f"sequence {i}: the response must start inside it after at least one token")
        first = len(targets)
        target_index.extend(range(where[i] + start - 1, where[i] + len(ids) - 1))
        targets.extend(int(t) for t in ids[start:])
        spans.append((first, len(targets)))
    out = Packed(
        input_ids,
        position_ids,
        torch.tensor(target_index, dtype=torch.long),
        torch.tensor(targets, dtype=torch.long),
        spans,
    )
    if device is not None:
        out = Packed(
            out.input_ids.to(device), out.position_ids.to(device), out.target_index.to(device), out.targets.to(device), spans
        )
    return out


@dataclass
class TokenOutputs:
    logprobs: torch.Tensor  # (k,) log-probability of each response token
    entropy: torch.Tensor | None  # (k,) entropy of the distribution it was drawn from
    hidden: torch.Tensor  # (k, hidden) final hidden state at the position predicting it


def sequence_forward(
    model: Any,
    batch: Packed,
    *,
    temperature: float = 1.0,
    with_entropy: bool = True,
    entropy_grad: bool = True,
    compute_dtype: torch.dtype | None = None,
) -> TokenOutputs:
    """Log-probabilities (at ``temperature``, as sampled) of the response tokens of a packed batch, their entropies
    and hidden states. The head runs only on the response positions. ``entropy_grad=False`` computes the entropy
    for monitoring only, outside the autograd graph: its softmax over the whole vocabulary at every response token
    otherwise roughly doubles the backward pass of the output head."""
    parts = token_loss.lm_parts(model)
    hidden = token_loss.hidden_at(parts.decoder, batch.input_ids, batch.position_ids, batch.target_index)
    if not (with_entropy and entropy_grad):
        fused = token_loss.head_logprobs(
            parts.head, hidden, batch.targets, softcap=parts.softcap, temperature=temperature,
            compute_dtype=compute_dtype, with_entropy=with_entropy,
        )
        if fused is not None:
            return TokenOutputs(fused[0], fused[1], hidden)
    with torch.autocast(hidden.device.type, enabled=False):
        weight = getattr(parts.head, "weight", None)
        if compute_dtype is not None and weight is not None and type(parts.head) is torch.nn.Linear:
            logits = (hidden.to(compute_dtype) @ weight.to(compute_dtype).T).float()
        else:
            logits = parts.head(hidden).float()
        if parts.softcap is not None:
            logits = torch.tanh(logits / parts.softcap) * parts.softcap
        if temperature != 1.0:
            logits = logits / temperature
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, batch.targets[:, None])[:, 0]
        entropy = None
        if with_entropy:
            entropy = losses.entropy_from_logits(logits if entropy_grad else logits.detach())
    return TokenOutputs(logprobs, entropy, hidden)


def padded(flat: torch.Tensor, spans: Sequence[tuple[int, int]], width: int | None = None) -> torch.Tensor:
    """Per-sequence slices of a flat (k, ...) tensor as a left-aligned [B, T, ...] tensor, zero-padded."""
    width = width or max((b - a for a, b in spans), default=0)
    out = flat.new_zeros((len(spans), width, *flat.shape[1:]))
    for i, (a, b) in enumerate(spans):
        out[i, : b - a] = flat[a:b]
    return out


def flat(values: torch.Tensor, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """The inverse of ``padded``: concatenate each row's first (b - a) entries."""
    return torch.cat([values[i, : b - a] for i, (a, b) in enumerate(spans)])


def response_mask(lengths: Sequence[int], width: int | None = None) -> torch.Tensor:
    width = width or max(lengths, default=0)
    return (torch.arange(width)[None, :] < torch.tensor(list(lengths))[:, None]).float()
