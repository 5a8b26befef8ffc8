"""Show conversations the way SFT sees them: the chat template applied, the trained-on tokens marked.

Only the assistant tokens (each reply and its end-of-turn marker) carry loss in SFT. `preview` renders each
conversation from its token ids, cut where the assistant mask changes, and wraps every assistant run in
⟦ ⟧ (or colours it, for a terminal), so a glance shows whether the template and the mask are right: a
system prompt the template adds, a reply that is not marked, a marker that is marked twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from chatforge.chat import Conversation, encode_conversation

OPEN, CLOSE = "⟦", "⟧"
_GREEN, _RESET = "\x1b[32m", "\x1b[0m"


def masked_runs(tokenizer: Any, conversation: Conversation) -> list[tuple[str, bool]]:
    """The tokenized conversation as (text, is_assistant) runs of consecutive tokens with the same mask."""
    encoded = encode_conversation(tokenizer, conversation)
    runs = []
    pairs = zip(encoded.input_ids, encoded.assistant_mask, strict=True)
    for is_assistant, run in itertools.groupby(pairs, key=lambda pair: pair[1]):
        ids = [token for token, _ in run]
        text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        runs.append((text, bool(is_assistant)))
    return runs


def marked_text(tokenizer: Any, conversation: Conversation, *, colour: bool = False) -> str:
    pieces = []
    for text, is_assistant in masked_runs(tokenizer, conversation):
        if is_assistant:
            text = f"{_GREEN}{text}{_RESET}" if colour else f"{OPEN}{text}{CLOSE}"
        pieces.append(text)
    return "".join(pieces)


def preview(conversations: Sequence[Conversation], tokenizer: Any, n: int = 3, *, colour: bool = False) -> str:
    """The first `n` conversations rendered with their assistant tokens marked, each under a header line."""
    shown = list(conversations[:n])
    legend = "green" if colour else f"{OPEN}between brackets{CLOSE}"
    blocks = [f"{len(shown)} of {len(conversations)} conversations; assistant tokens (trained on) are {legend}"]
    for i, conversation in enumerate(shown, 1):
        encoded = encode_conversation(tokenizer, conversation)
        category = conversation.meta.get("category")
        details = [
            f"source {conversation.source}",
            f"id {conversation.id}",
            *([f"category {category}"] if category else []),
            f"{len(encoded)} tokens, {sum(encoded.assistant_mask)} assistant",
        ]
        blocks.append(f"── {i}/{len(shown)} · {' · '.join(details)} ──\n{marked_text(tokenizer, conversation, colour=colour)}")
    return "\n\n".join(blocks)
