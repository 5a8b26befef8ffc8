"""The reward model's data files: comparisons (``chatforge.data.comparisons``), held out by prompt, and the
reference conversations that set the normalisation."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence

from chatforge import chat
from chatforge.data.comparisons import Comparison, load_comparisons
from chatforge.train.reward.config import RewardConfig, RewardDataError
from chatforge.train.sft.data import read_conversations

log = logging.getLogger(__name__)


def split_by_context(
    comparisons: Sequence[Comparison], fraction: float, seed: int
) -> tuple[list[Comparison], list[Comparison]]:
    """(train, held out): about ``fraction`` of the distinct contexts, with all their comparisons, are held out,
    so that no held-out prompt was seen in training (several raters may rank the same prompt)."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(comparisons):
        key = json.dumps([m.to_dict() for m in c.context], ensure_ascii=False)
        groups.setdefault(key, []).append(i)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    wanted = max(1, round(len(comparisons) * fraction))
    held: set[int] = set()
    for key in keys:
        if len(held) >= wanted:
            break
        held.update(groups[key])
    if len(held) >= len(comparisons):
        raise RewardDataError(
            f"eval_fraction {fraction} leaves no training data ({len(comparisons)} comparisons over {len(keys)} "
            "prompts)"
        )
    return [c for i, c in enumerate(comparisons) if i not in held], [
        c for i, c in enumerate(comparisons) if i in held
    ]


def read_comparisons(path: str, strict: bool) -> list[Comparison]:
    errors: list[str] = []
    loaded = load_comparisons(path, strict=strict, errors=errors)
    for message in errors[:20]:
        log.warning("skipped %s", message)
    if len(errors) > 20:
        log.warning("... and %d more malformed lines skipped", len(errors) - 20)
    if not loaded:
        raise RewardDataError(f"{path} holds no usable comparisons")
    return loaded


def load_data(
    config: RewardConfig,
) -> tuple[list[Comparison], list[Comparison], list[chat.Conversation] | None]:
    """(train, held-out, references) as a config names them: ``comparisons``; ``eval_comparisons`` or a
    held-out ``eval_fraction`` of the prompts; ``reference_data`` (None: the trainer's default)."""
    if config.comparisons is None:
        raise RewardDataError("no training comparisons: give --comparisons FILE.jsonl")
    strict = not config.skip_bad_records
    train = read_comparisons(config.comparisons, strict)
    if config.eval_comparisons is not None:
        held_out = read_comparisons(config.eval_comparisons, strict)
    elif config.eval_fraction > 0:
        train, held_out = split_by_context(train, config.eval_fraction, config.seed)
    else:
        held_out = []
    references = None
    if config.reference_data is not None:
        references = read_conversations(config.reference_data)
        for conversation in references:
            if conversation.messages[-1].role != "assistant":
                raise RewardDataError(
                    f"{conversation.id}: a reference conversation must end with the assistant reply to score"
                )
    return train, held_out, references


