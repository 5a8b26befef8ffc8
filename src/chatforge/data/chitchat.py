"""Chit-chat: 7,168 casual dialogues between two people, from the `chitchat-dataset` package (its dataset.json).

The file maps a dialogue id to `{"prompt", "ratings", "start", "messages"}`, where `messages` is a list of
groups: each group is one speaker's consecutive chat lines, `[{"text", "sender", "timestamp"}, ...]`, and
groups alternate between the two speakers. The first speaker becomes the user and the second the assistant; a
group's lines are joined with newlines into one turn. Dialogues where only one person ever spoke (about 3,150:
the other never answered) have no reply to learn from and are skipped.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chatforge.chat import Conversation, ConversationError
from chatforge.data.base import (
    DataError,
    SkipRecord,
    Source,
    conversation_error_reason,
    make_conversation,
    repair_turn_order,
    require_package_file,
)

PACKAGE = "chitchat_dataset"
DISTRIBUTION = "chitchat-dataset"
PACKAGED_FILE = "dataset.json"


def packaged_path() -> Path:
    return require_package_file(PACKAGE, DISTRIBUTION, PACKAGED_FILE)


def dialogue_messages(groups: Any, repairs: Counter[str]) -> list[dict[str, str]]:
    """One dialogue's message groups as alternating user/assistant messages; raises SkipRecord if unusable."""
    if not isinstance(groups, list) or not groups:
        raise SkipRecord("no messages")
    speakers: list[str] = []  # in order of first appearance: [user, assistant]
    messages: list[dict[str, str]] = []
    for group in groups:
        if not isinstance(group, list) or not all(isinstance(u, dict) for u in group):
            raise SkipRecord("malformed message group")
        lines = [str(u.get("text", "")).strip() for u in group]
        senders = {str(u.get("sender")) for u in group}
        if len(senders) != 1:
            raise SkipRecord("message group with several senders")
        sender = senders.pop()
        if sender not in speakers:
            speakers.append(sender)
        if len(speakers) > 2:
            raise SkipRecord("more than two speakers")
        text = "\n".join(line for line in lines if line)
        if not text:
            repairs["empty message group dropped"] += 1
            continue
        role = "user" if sender == speakers[0] else "assistant"
        messages.append({"role": role, "content": text})
    if len(speakers) < 2:
        raise SkipRecord("only one speaker (no reply)")
    return repair_turn_order(messages, repairs)


class ChitChat(Source):
    """The chit-chat dialogues as user/assistant conversations, ids are the dataset's dialogue ids."""

    name = "chitchat"

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        self.path = Path(path) if path is not None else None

    def _read(self) -> Iterator[Conversation]:
        path = self.path or packaged_path()
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected an object mapping dialogue ids to dialogues")
        for dialogue_id, dialogue in data.items():
            self.stats.read += 1
            repairs: Counter[str] = Counter()
            try:
                if not isinstance(dialogue, dict):
                    raise SkipRecord("dialogue is not an object")
                messages = dialogue_messages(dialogue.get("messages"), repairs)
                meta = {key: dialogue[key] for key in ("prompt", "ratings") if key in dialogue}
                conversation = make_conversation(messages, source=self.name, id=str(dialogue_id), meta=meta)
            except SkipRecord as skip:
                self.stats.skip(skip.reason)
                continue
            except ConversationError as err:
                self.stats.skip(conversation_error_reason(err))
                continue
            self.stats.repaired.update(repairs)
            yield conversation
