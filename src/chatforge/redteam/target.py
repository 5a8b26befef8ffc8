"""The model under attack (or a model asked for replies): loading it by name or run directory, and replying.

`chatforge redteam --target` takes what the other commands take (a packaged name, a checkpoint directory, a GGUF
file) and also a run directory: `RUN/chat` (the final policy of `chatforge run`) or `RUN/final` (a trainer's run
directory). A target that does not load is refused with a TargetError naming it, before any attack is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatforge import chat
from chatforge.generation import SamplingParams, TorchEngine

Messages = list[dict[str, str]]


class TargetError(ValueError):
    """A target model that cannot be used; the message names it and says why."""


def resolve_target(name_or_run: str) -> str:
    """A run directory's chat checkpoint (RUN/chat, else RUN/final), or the name or path as given."""
    path = Path(name_or_run)
    for sub in ("chat", "final"):
        if (path / sub / "config.json").is_file():
            return str(path / sub)
    return name_or_run


@dataclass
class Target:
    """A loaded model that replies to conversations, in batches."""

    name: str
    engine: TorchEngine

    @classmethod
    def load(cls, name_or_run: str, *, dtype: str = "auto") -> Target:
        from chatforge import models

        resolved = resolve_target(name_or_run)
        try:
            model, tokenizer = models.load_model(resolved, dtype=models.inference_dtype(dtype))
        except (models.ModelNotFoundError, ValueError, OSError) as err:
            raise TargetError(f"target {name_or_run!r} does not load: {err}") from None
        return cls(name_or_run, TorchEngine(model, tokenizer))

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    def reply(self, conversations: Sequence[Messages], params: SamplingParams, *,
              prefixes: Sequence[str] | None = None, batch_size: int = 16) -> list[str]:
        """One reply per conversation (each ends with a user turn). A prefix, when given, is put in the model's
        mouth (the reply starts with it and the model continues); the returned text includes it."""
        prefixes = list(prefixes) if prefixes is not None else [""] * len(conversations)
        if len(prefixes) != len(conversations):
            raise ValueError("one prefix per conversation")
        prompts = []
        for messages, prefix in zip(conversations, prefixes, strict=True):
            ids = chat.encode_prompt(self.tokenizer, messages)
            if prefix:
                ids = ids + self.tokenizer.encode(prefix, add_special_tokens=False)
            prompts.append(ids)
        # Similar lengths batched together: padding is wasted work.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        texts: list[str] = [""] * len(prompts)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            completions = self.engine.generate([prompts[i] for i in batch], params)
            for i, completion in zip(batch, completions, strict=True):
                texts[i] = (prefixes[i] + completion.text).strip()
        return texts

    def play(self, turns_per_attack: Sequence[Sequence[str]], params: SamplingParams,
             *, batch_size: int = 16) -> list[Messages]:
        """Send each attack's user turns one at a time, the model replying after each; returns each whole
        conversation (ending with the reply to the last turn). Attacks of different lengths run together."""
        conversations: list[Messages] = [[] for _ in turns_per_attack]
        most = max((len(t) for t in turns_per_attack), default=0)
        for step in range(most):
            live = [i for i, turns in enumerate(turns_per_attack) if step < len(turns)]
            for i in live:
                conversations[i].append({"role": "user", "content": turns_per_attack[i][step]})
            replies = self.reply([conversations[i] for i in live], params, batch_size=batch_size)
            for i, text in zip(live, replies, strict=True):
                # An empty reply cannot stand in a conversation (chat validation refuses it); "..." keeps the turn.
                conversations[i].append({"role": "assistant", "content": text or "..."})
        return conversations
