"""SFT's data: conversations from an OpenAI-style JSONL file (also what the reward model's reference data and
PPO-ptx read) or a ``chatforge.data`` mixture, and the held-out evaluation share."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

from chatforge import chat
from chatforge.train.sft.config import SFTConfig, SFTDataError

log = logging.getLogger(__name__)


def read_conversations(path: str | os.PathLike[str]) -> list[chat.Conversation]:
    """Conversations from an OpenAI-style JSONL file: one ``{"messages": [...]}`` object (or bare list) a line."""
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise SFTDataError(f"cannot read {file}: {err}") from None
    conversations = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            conversations.append(_conversation(json.loads(line), f"{file.name}:{number}", file.name))
        except json.JSONDecodeError as err:
            raise SFTDataError(f"{file}:{number}: not valid JSON ({err.msg})") from None
        except chat.ConversationError as err:
            raise SFTDataError(f"{file}:{number}: {err}") from None
    if not conversations:
        raise SFTDataError(f"{file} holds no conversations")
    return conversations


def _conversation(record: Any, default_id: str, source: str) -> chat.Conversation:
    """One line's conversation: a ``{"messages": [...]}`` object (its ``id`` kept) or a bare message list."""
    if not isinstance(record, dict):
        return chat.Conversation.from_messages(record, id=default_id, source=source)
    if record.get("messages") is None:
        raise chat.ConversationError("the object has no 'messages' list")
    return chat.Conversation.from_messages(record["messages"], id=str(record.get("id") or default_id), source=source)


def _mixture_conversations(config: SFTConfig, tokenizer: Any) -> list[chat.Conversation]:
    # chatforge.data (sources and the mixture) is a separate part of chatforge; import it only when asked for.
    if importlib.util.find_spec("chatforge.data") is None:
        raise SFTDataError("--mix needs the chatforge.data package, which this installation does not have")
    from chatforge.data import DataError, Mixture

    assert config.mix is not None
    try:
        # No length cut in the mixture: SFT truncates over-long conversations itself, and reports how many.
        mixture = Mixture(
            config.mix, tokenizer=tokenizer, size=config.mix_size, max_tokens=None, seed=config.seed
        )
        result = mixture.build()
    except DataError as err:
        raise SFTDataError(f"--mix {config.mix}: {err}") from None
    log.info("%s", result.report.format())
    return list(result.conversations)


def load_data(
    config: SFTConfig, tokenizer: Any = None
) -> tuple[list[chat.Conversation], list[chat.Conversation] | None]:
    """The (train, eval) conversations a config names: ``data`` or ``mix`` (whose filters use ``tokenizer``), plus
    ``eval_data`` or a held-out ``eval_fraction``."""
    if config.data is not None:
        train = read_conversations(config.data)
    elif config.mix is not None:
        train = _mixture_conversations(config, tokenizer)
    else:
        raise SFTDataError("no training data: give --data FILE.jsonl or --mix SPEC")
    if config.eval_data is not None:
        return train, read_conversations(config.eval_data)
    if config.eval_fraction > 0:
        held = max(1, round(len(train) * config.eval_fraction))
        if held >= len(train):
            raise SFTDataError(
                f"eval_fraction {config.eval_fraction} leaves no training data ({len(train)} conversations)"
            )
        order = list(range(len(train)))
        random.Random(config.seed).shuffle(order)
        held_out = set(order[:held])
        return [c for i, c in enumerate(train) if i not in held_out], [train[i] for i in sorted(held_out)]
    return train, None
