"""From conversations to packed training batches.

Three steps, each a plain function so it can be tested on its own:

1. ``encode_examples``: tokenize every conversation with ``chat.encode_conversation`` (the one place that knows
   which tokens are the assistant's), cut it at ``max_seq_len`` and count what was cut or dropped;
2. ``plan_micro_batches``: decide which examples go together, from a seeded order, by a token budget or a fixed
   number of sequences. The plan is a pure function of (lengths, seed, epoch), so a resumed run rebuilds exactly
   the plan of the run it continues and only needs to remember how far it got;
3. ``collate``: lay a micro-batch out as rows of packed examples. Each example keeps its own position ids
   (0, 1, 2, ... restarting at every example). With no 2D attention mask, transformers reads the restarts as
   packed-sequence boundaries and builds a block-diagonal causal mask (``masking_utils.find_packed_sequence_indices``),
   for full and sliding-window layers alike, so no example attends to its neighbours.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from chatforge import chat


@dataclass(frozen=True)
class Example:
    """One tokenized training conversation: its ids, and 1 where the token is the assistant's."""

    input_ids: list[int]
    assistant_mask: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_targets(self) -> int:
        # Token t is predicted from the tokens before it, so the first token can never carry a loss.
        return sum(self.assistant_mask[1:])


@dataclass(frozen=True)
class EncodingStats:
    conversations: int  # how many came in
    truncated: int  # longer than max_seq_len, cut to it
    dropped: int  # no assistant token left within max_seq_len, so nothing to learn from: left out
    tokens: int  # tokens of the examples kept
    loss_tokens: int  # of which carry a loss

    def describe(self) -> str:
        return (
            f"{self.conversations - self.dropped} of {self.conversations} conversations, {self.tokens} tokens "
            f"({self.loss_tokens} assistant tokens with a loss); {self.truncated} truncated to max_seq_len, "
            f"{self.dropped} dropped (no assistant token within max_seq_len)"
        )


def encode_examples(
    tokenizer: Any, conversations: Iterable[chat.Conversation], max_seq_len: int, *, what: str = "training"
) -> tuple[list[Example], EncodingStats]:
    """Tokenize conversations for SFT: each must end with an assistant reply; over-long ones are truncated."""
    examples: list[Example] = []
    count = truncated = dropped = 0
    for index, conversation in enumerate(conversations):
        count += 1
        label = f"{what} conversation {index}" + (
            f" (id {conversation.id})" if getattr(conversation, "id", None) else ""
        )
        if not isinstance(conversation, chat.Conversation):
            raise TypeError(
                f"{label}: expected a chatforge.chat.Conversation, got {type(conversation).__name__}"
            )
        last = conversation.messages[-1].role
        if last != "assistant":
            raise chat.ConversationError(
                f"{label} ends with a {last} message; supervised fine-tuning needs conversations that end with "
                "the assistant reply to learn"
            )
        encoded = chat.encode_conversation(tokenizer, conversation)
        if len(encoded) > max_seq_len:
            truncated += 1
        example = Example(encoded.input_ids[:max_seq_len], encoded.assistant_mask[:max_seq_len])
        if example.num_targets == 0:
            dropped += 1
            continue
        examples.append(example)
    stats = EncodingStats(
        conversations=count,
        truncated=truncated,
        dropped=dropped,
        tokens=sum(len(e) for e in examples),
        loss_tokens=sum(e.num_targets for e in examples),
    )
    return examples, stats


def fingerprint(examples: Sequence[Example]) -> str:
    """A short hash of the tokenized data, so that a resumed run can tell it is fed the same examples."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(len(example).to_bytes(4, "little"))
        digest.update(b"".join(i.to_bytes(4, "little") for i in example.input_ids))
        digest.update(bytes(example.assistant_mask))
    return digest.hexdigest()[:16]


def epoch_order(count: int, *, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch: a permutation that depends only on (seed, epoch)."""
    order = list(range(count))
    # A private generator: the data order never depends on (or disturbs) the global RNG that dropout uses.
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def plan_micro_batches(
    lengths: Sequence[int],
    order: Sequence[int],
    *,
    batch_tokens: int | None = None,
    batch_sequences: int | None = None,
) -> list[list[int]]:
    """Group example indices, in ``order``, into micro-batches of at most ``batch_tokens`` tokens (an example longer
    than the budget goes alone) or of exactly ``batch_sequences`` examples (the last may hold fewer)."""
    if (batch_tokens is None) == (batch_sequences is None):
        raise ValueError("give exactly one of batch_tokens and batch_sequences")
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index in order:
        if batch_tokens is not None and current and used + lengths[index] > batch_tokens:
            batches.append(current)
            current, used = [], 0
        current.append(index)
        used += lengths[index]
        if batch_sequences is not None and len(current) == batch_sequences:
            batches.append(current)
            current, used = [], 0
    if current:
        batches.append(current)
    return batches


def pack_rows(lengths: Sequence[int], indices: Sequence[int], capacity: int) -> list[list[int]]:
    """Pack examples into rows of at most ``capacity`` tokens, first-fit over the longest first (rows then come out
    nearly full, so little compute goes to padding). Deterministic for given input."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(indices, key=lambda i: (-lengths[i], i)):
        need = lengths[index]
        if need > capacity:
            raise ValueError(f"example {index} has {need} tokens, more than a row holds ({capacity})")
        for r, free in enumerate(room):
            if need <= free:
                rows[r].append(index)
                room[r] -= need
                break
        else:
            rows.append([index])
            room.append(capacity - need)
    return rows


@dataclass(frozen=True)
class PackedBatch:
    """A micro-batch laid out for the model: rows of packed examples, padded to the longest row."""

    input_ids: torch.Tensor  # (rows, width)
    position_ids: torch.Tensor  # (rows, width): restarts at 0 at every example, and for the padding
    target_index: (
        torch.Tensor
    )  # (k,) flat index into rows*width of each position whose NEXT token carries a loss
    targets: torch.Tensor  # (k,) that next token
    num_tokens: int  # real (not padding) tokens
    num_examples: int

    @property
    def num_targets(self) -> int:
        return int(self.targets.numel())

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(
            self.input_ids.to(device),
            self.position_ids.to(device),
            self.target_index.to(device),
            self.targets.to(device),
            self.num_tokens,
            self.num_examples,
        )


def lay_out(
    sequences: Sequence[Sequence[int]], rows: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, dict[int, int]]:
    """Token ids of packed ``rows`` (lists of indices into ``sequences``, as ``pack_rows`` makes them), padded to
    the longest row: ``(input_ids, position_ids, start)`` where ``start[i]`` is sequence i's first flat index
    (row * width + offset). Positions restart at 0 at every sequence."""
    width = max(sum(len(sequences[i]) for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.empty((len(rows), width), dtype=torch.long)
    start: dict[int, int] = {}
    for r, row in enumerate(rows):
        offset = 0
        for index in row:
            n = len(sequences[index])
            input_ids[r, offset : offset + n] = torch.tensor(list(sequences[index]), dtype=torch.long)
            position_ids[r, offset : offset + n] = torch.arange(n)
            start[index] = r * width + offset
            offset += n
        # The padding is a segment of its own (positions restart at 0), so no real token attends to it and it
        # attends to no real token; it carries no loss.
        position_ids[r, offset:] = torch.arange(width - offset)
    return input_ids, position_ids, start


def collate(
    examples: Sequence[Example], indices: Sequence[int], *, row_capacity: int, pad_id: int
) -> PackedBatch:
    """Pack the examples ``indices`` into rows of at most ``row_capacity`` tokens."""
    lengths = [len(e) for e in examples]
    rows = pack_rows(lengths, indices, row_capacity)
    input_ids, position_ids, start = lay_out([e.input_ids for e in examples], rows, pad_id)
    target_index: list[int] = []
    targets: list[int] = []
    for row in rows:
        for index in row:
            example = examples[index]
            for t in range(1, len(example)):
                if example.assistant_mask[t]:
                    target_index.append(start[index] + t - 1)
                    targets.append(example.input_ids[t])
    return PackedBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        target_index=torch.tensor(target_index, dtype=torch.long),
        targets=torch.tensor(targets, dtype=torch.long),
        num_tokens=sum(lengths[i] for i in indices),
        num_examples=len(indices),
    )


def process_share(plan: Sequence[list[int]], step_in_epoch: int, grad_accum: int, rank: int, world_size: int) -> list[list[int]]:
    """The micro-batches of ``plan`` (an epoch's, all processes together) that process ``rank`` trains on in step
    ``step_in_epoch``: micro-batch m of process r is the step's (m * world_size + r)-th, so one process accumulating
    A micro-batches sees the same micro-batches as A processes without accumulation."""
    first = step_in_epoch * grad_accum * world_size
    return [plan[first + m * world_size + rank] for m in range(grad_accum)]
