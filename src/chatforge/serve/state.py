"""What every router shares: the server's configuration and one `AppState` (store, generation backend, rate
limiter), reached from a route with FastAPI's `Depends(get_state)` (spelled `StateDep`)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

from chatforge import chat
from chatforge.serve.backend import GenerationBackend
from chatforge.serve.errors import APIError
from chatforge.serve.moderation import Moderator
from chatforge.store import Store


@dataclass
class ServeConfig:
    model_name: str = "chatforge"
    max_body_bytes: int = 1_000_000
    max_prompt_tokens: int | None = None  # default: the model's context minus room for the reply
    max_new_tokens: int = 512  # the most a request may ask for
    default_max_tokens: int = 256
    rate_limit_per_minute: int = 120  # requests per minute per API key / session user; 0 = off
    max_batch: int = 32
    batching: str = "continuous"  # continuous | serial (the baseline)
    decoder: str = "auto"  # auto | lean | transformers (chatforge.generation.TorchEngine)
    ui_temperature: float = 0.7
    secure_cookies: bool = False
    moderation: Moderator = field(default_factory=Moderator)


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests a minute, bursts up to the same number."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> float | None:
        """None when allowed, else seconds until the next request would be."""
        if self.per_minute <= 0:
            return None
        now = time.monotonic()
        rate = self.per_minute / 60.0
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return (1 - tokens) / rate
            self._buckets[key] = (tokens - 1, now)
            return None


@dataclass
class AppState:
    config: ServeConfig
    store: Store
    backend: GenerationBackend
    limiter: RateLimiter
    started: float = field(default_factory=time.time)

    @property
    def context_limit(self) -> int:
        return self.backend.context_limit

    @property
    def max_prompt_tokens(self) -> int:
        return self.config.max_prompt_tokens or max(1, self.context_limit - self.config.max_new_tokens)

    def encode_chat(self, messages: list[chat.Message], param: str = "messages") -> list[int]:
        """The prompt's token ids, or a 400 naming what is wrong with the conversation or its length."""
        try:
            chat.validate_messages(messages, last="user")
        except chat.ConversationError as err:
            raise APIError(400, str(err), param=param, code="invalid_messages") from None
        ids = self.backend.encode_chat(messages)
        if len(ids) > self.max_prompt_tokens:
            raise APIError(400, f"the prompt is {len(ids)} tokens; the limit is {self.max_prompt_tokens}",
                           param=param, code="context_length_exceeded")
        return ids


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.serve
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def now() -> datetime:
    return datetime.now(UTC)
