"""What the reward model reads: comparisons as token ids, each response ending at its end-of-turn marker, and
the pad token that keeps transformers' score head on that marker.

transformers' sequence-classification head reads the *rightmost token that is not the pad token*. Many
tokenizers (SmolLM2's among them) use the end-of-turn token as pad; a padded batch would then be scored at the
wrong position, and an unpadded one at the token *before* the end-of-turn. So the RM gets a pad token distinct
from the end-of-turn and eos tokens (``<|endoftext|>`` for SmolLM2, ``reward_pad_token_id``), sequences are
right-padded with it, and the saved config and tokenizer carry it, so every reader finds the same position.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chatforge import chat
from chatforge.data.comparisons import Comparison


def _end_tokens(tokenizer: Any) -> set[int]:
    """Ids a scored sequence can end with, which therefore must never be the pad id."""
    ids = set(chat.stop_token_ids(tokenizer))
    marker = tokenizer.encode(chat.end_of_turn(tokenizer), add_special_tokens=False)
    if marker:
        ids.add(int(marker[-1]))
    return ids


def reward_pad_token_id(tokenizer: Any) -> int:
    """A pad id that is not the end-of-turn or eos token: the tokenizer's own pad when it qualifies, else
    ``<|endoftext|>``, ``<pad>`` or the unknown token, else any other id (only "not the last token" matters,
    because transformers reads the rightmost non-pad position)."""
    avoid = _end_tokens(tokenizer)
    vocab = tokenizer.get_vocab()
    candidates = [
        tokenizer.pad_token_id,
        vocab.get("<|endoftext|>"),
        vocab.get("<pad>"),
        vocab.get("<|pad|>"),
        tokenizer.unk_token_id,
        tokenizer.bos_token_id,
    ]
    for candidate in candidates:
        if isinstance(candidate, int) and candidate not in avoid:
            return candidate
    return next(i for i in range(len(tokenizer)) if i not in avoid)


def prepare_tokenizer(tokenizer: Any) -> Any:
    """A copy of ``tokenizer`` that pads on the right with ``reward_pad_token_id`` (the original is left as is:
    the SFT model and its generation still pad with their own token)."""
    chat.ensure_chat_template(tokenizer)
    pad_id = reward_pad_token_id(tokenizer)
    if tokenizer.pad_token_id == pad_id and tokenizer.padding_side == "right":
        return tokenizer  # already prepared (a saved reward model's tokenizer, say)
    prepared = copy.deepcopy(tokenizer)
    prepared.pad_token = prepared.convert_ids_to_tokens(pad_id)
    prepared.padding_side = "right"
    return prepared


def encode_for_reward(
    tokenizer: Any,
    messages: chat.Conversation | Sequence[chat.Message | Mapping[str, Any]],
    max_seq_len: int | None = None,
) -> tuple[list[int], bool]:
    """Token ids of a conversation ending in the assistant reply to score, up to and including that reply's
    end-of-turn marker (never the template's trailing newline), and whether it was cut: a sequence longer than
    ``max_seq_len`` keeps its last ``max_seq_len`` tokens, so the reply and its end stay and the context loses
    its start."""
    msgs = (
        list(messages.messages) if isinstance(messages, chat.Conversation) else chat.parse_messages(messages)
    )
    chat.validate_messages(msgs, last="assistant")
    encoded = chat.encode_conversation(tokenizer, msgs)
    last = max(i for i, flag in enumerate(encoded.assistant_mask) if flag)
    ids = encoded.input_ids[: last + 1]
    truncated = max_seq_len is not None and len(ids) > max_seq_len
    if truncated:
        assert max_seq_len is not None
        ids = ids[-max_seq_len:]
    return ids, truncated


@dataclass(frozen=True)
class EncodedComparison:
    sequences: tuple[tuple[int, ...], ...]  # one per response: context + response + end-of-turn
    ranks: tuple[int, ...]

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


def encode_comparisons(
    tokenizer: Any, comparisons: Iterable[Comparison], max_seq_len: int
) -> tuple[list[EncodedComparison], int]:
    """Encoded comparisons and how many of their sequences were cut to ``max_seq_len``."""
    out = []
    cut = 0
    for comparison in comparisons:
        sequences = []
        for k in range(comparison.k):
            ids, truncated = encode_for_reward(tokenizer, comparison.conversation(k), max_seq_len)
            sequences.append(tuple(ids))
            cut += int(truncated)
        out.append(EncodedComparison(tuple(sequences), comparison.ranks))
    return out, cut


def fingerprint(encoded: Sequence[EncodedComparison]) -> str:
    digest = hashlib.sha256()
    for item in encoded:
        digest.update(bytes(item.ranks))
        for sequence in item.sequences:
            digest.update(len(sequence).to_bytes(4, "little"))
            digest.update(b"".join(i.to_bytes(4, "little") for i in sequence))
    return digest.hexdigest()[:16]


