"""The generation backend the routers use, and the bridge from its scheduler thread to the event loop.

A backend turns a conversation into prompt token ids and runs `GenRequest`s (from any thread), calling each
request's ``on_event(delta, finished)`` as text is produced. `TorchBackend` is chatforge's own: one
`ContinuousBatcher` (or, as a baseline, `SerialServer`) over an in-process transformers model. Another backend
(llama.cpp, say) implements the same `GenerationBackend` and the routers do not change.

`Generation` wraps one request for a route: iterate ``deltas()`` for the text; ``result`` then holds the completion,
the time to first token and the latency.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Request

from chatforge import chat
from chatforge.generation import Completion, SamplingParams
from chatforge.serve.batcher import ContinuousBatcher, GenRequest, SerialServer, context_limit


class GenerationBackend(Protocol):
    """What the routers need from whatever generates the replies."""

    context_limit: int  # prompt + reply tokens the model can hold

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def submit(self, request: GenRequest) -> None: ...

    def encode_chat(self, messages: list[chat.Message]) -> list[int]: ...

    @property
    def running(self) -> int: ...

    @property
    def max_batch_seen(self) -> int | None: ...


class TorchBackend:
    """The in-process model behind continuous batching (``batching="continuous"``) or one request at a time
    (``"serial"``, the baseline)."""

    def __init__(self, model: Any, tokenizer: Any, *, batching: str = "continuous", max_batch: int = 32,
                 decoder: str = "auto") -> None:
        if batching == "continuous":
            self.scheduler: Any = ContinuousBatcher(model, tokenizer, max_batch=max_batch, decoder=decoder)  # type: ignore[arg-type]
        elif batching == "serial":
            self.scheduler = SerialServer(model, tokenizer, decoder=decoder)  # type: ignore[arg-type]
        else:
            raise ValueError(f"batching must be 'continuous' or 'serial', got {batching!r}")
        self.tokenizer = tokenizer
        self.context_limit = context_limit(model)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()

    def submit(self, request: GenRequest) -> None:
        self.scheduler.submit(request)

    def encode_chat(self, messages: list[chat.Message]) -> list[int]:
        return chat.encode_prompt(self.tokenizer, messages)

    @property
    def running(self) -> int:
        return int(getattr(self.scheduler, "running", 0))

    @property
    def max_batch_seen(self) -> int | None:
        return getattr(self.scheduler, "max_batch_seen", None)


@dataclass
class GenResult:
    completion: Completion | None = None
    ttft: float | None = None
    latency: float = 0.0


class Generation:
    """Bridges one GenRequest to the event loop: iterate for text deltas; ``result`` holds the completion."""

    def __init__(self, backend: GenerationBackend, prompt_ids: list[int], params: SamplingParams) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.result = GenResult()
        self.start = time.perf_counter()
        self.request = GenRequest(prompt_ids, params, self._on_event, self._on_error)
        backend.submit(self.request)

    def _on_event(self, delta: str, finished: Completion | None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("event", (delta, finished)))

    def _on_error(self, err: BaseException) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("error", err))

    def cancel(self) -> None:
        self.request.cancel()

    async def deltas(self) -> AsyncIterator[str]:
        try:
            while True:
                kind, payload = await self.queue.get()
                if kind == "error":
                    raise RuntimeError(f"generation failed: {payload}")
                delta, finished = payload
                if self.result.ttft is None and (delta or finished is not None):
                    self.result.ttft = time.perf_counter() - self.start
                if delta:
                    yield delta
                if finished is not None:
                    self.result.completion = finished
                    self.result.latency = time.perf_counter() - self.start
                    return
        finally:
            if self.result.completion is None:
                self.request.cancel()


async def until_disconnect(request: Request, gen: Generation) -> AsyncIterator[str]:
    """The deltas of a non-streaming request, cancelling generation when the client goes away."""
    it = gen.deltas().__aiter__()
    while True:
        task = asyncio.ensure_future(it.__anext__())
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                break
            if await request.is_disconnected():
                gen.cancel()
                task.cancel()
                return
        try:
            yield task.result()
        except StopAsyncIteration:
            return


def sse(data: Any) -> str:
    """One server-sent event carrying ``data`` as JSON."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
