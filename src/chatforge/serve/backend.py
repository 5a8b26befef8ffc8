"""The generation backend the routers use, and the bridge from its scheduler thread to the event loop.

A backend turns a conversation or a text into prompt token ids, names its tokens (for logprobs) and runs groups of
`GenRequest`s (from any thread; a group, the n choices of one prompt, is sampled together), calling each request's
``on_event(delta, finished)`` as text is produced. `TorchBackend` is chatforge's own: one `ContinuousBatcher` over an
in-process transformers model (``batching="serial"``: one request at a time, the baseline). Another backend
(llama.cpp, say) implements the same `GenerationBackend` and the routers do not change.

`Generation` wraps the requests of one HTTP request for its route: iterate ``events()`` (or ``deltas()`` for a
single reply); each choice's ``GenResult`` then holds the completion, the time to first token and the latency.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from fastapi import Request

from chatforge import chat
from chatforge.generation import Completion, SamplingParams
from chatforge.llamacpp import LlamaCppEngine
from chatforge.serve.batcher import ContinuousBatcher, GenRequest, context_limit
from chatforge.serve.json_mode import JSONConstraint, Vocabulary


class GenerationBackend(Protocol):
    """What the routers need from whatever generates the replies."""

    context_limit: int  # prompt + reply tokens the model can hold
    vocab_size: int  # token ids run from 0 to vocab_size - 1
    stop_token_ids: frozenset[int]  # tokens that end a reply (not part of its text)

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def submit(self, requests: list[GenRequest]) -> None:
        """Generate every request; the group (choices of one prompt) is sampled together."""

    def encode_chat(self, messages: list[chat.Message]) -> list[int]: ...

    def encode_text(self, text: str) -> list[int]: ...

    def decode(self, token_ids: list[int]) -> str: ...

    def token_piece(self, token_id: int) -> tuple[str, list[int] | None]:
        """A token's text and its UTF-8 bytes (None where they are unknown), as OpenAI's logprobs show them."""

    def json_constraint(self, schema: dict[str, Any] | None) -> Any:
        """A fresh `GenRequest.constraint` that keeps one reply valid JSON (of ``schema``; None: any object).
        Raises `chatforge.serve.json_mode.UnsupportedSchema` naming what it cannot enforce."""

    @property
    def running(self) -> int: ...

    @property
    def max_batch_seen(self) -> int | None: ...


class TorchBackend:
    """The in-process model behind continuous batching (``batching="continuous"``) or one request at a time
    (``"serial"``, the baseline)."""

    def __init__(self, model: Any, tokenizer: Any, *, batching: str = "continuous", max_batch: int = 32,
                 decoder: str = "auto") -> None:
        _check_batching(batching)
        scheduler = ContinuousBatcher(model, tokenizer, max_batch=max_batch, decoder=decoder,  # type: ignore[arg-type]
                                      serial=batching == "serial")
        self._setup(scheduler, tokenizer, context_limit(model), int(model.get_output_embeddings().weight.shape[0]))

    def _setup(self, scheduler: ContinuousBatcher, tokenizer: Any, context: int, vocab_size: int) -> None:
        """What every backend over a ContinuousBatcher holds, however its engine was built."""
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self.context_limit = context
        self.vocab_size = vocab_size
        self.stop_token_ids = scheduler.engine.stop_token_ids
        self._byte_of = {c: b for b, c in _byte_level_alphabet().items()}
        self._json_vocabulary: Vocabulary | None = None
        self._json_lock = threading.Lock()

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()

    def submit(self, requests: list[GenRequest]) -> None:
        self.scheduler.submit_group(requests)

    def encode_chat(self, messages: list[chat.Message]) -> list[int]:
        return chat.encode_prompt(self.tokenizer, messages)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def decode(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=True))

    def token_piece(self, token_id: int) -> tuple[str, list[int] | None]:
        text = self.tokenizer.decode([token_id], skip_special_tokens=False)
        if "\ufffd" not in text:
            return text, list(text.encode("utf-8"))
        # part of a multi-byte character: a byte-level BPE token (GPT-2 style, as SmolLM2's) spells its bytes
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(piece, str) and piece and all(c in self._byte_of for c in piece):
            return text, [self._byte_of[c] for c in piece]
        return text, None

    def json_constraint(self, schema: dict[str, Any] | None) -> JSONConstraint:
        with self._json_lock:  # the vocabulary's texts are read once (about a second for 49k tokens)
            if self._json_vocabulary is None:
                self._json_vocabulary = Vocabulary(self.tokenizer, self.vocab_size, self.stop_token_ids)
        return JSONConstraint(self._json_vocabulary, self._json_vocabulary.grammar(schema))

    @property
    def running(self) -> int:
        return self.scheduler.running

    @property
    def max_batch_seen(self) -> int | None:
        return self.scheduler.max_batch_seen


class LlamaCppBackend(TorchBackend):
    """A GGUF file decoded by llama.cpp (``chatforge.llamacpp.LlamaCppEngine``) behind the same continuous batcher:
    scheduling, sampling, stops and streaming are TorchBackend's; only the forward pass is llama.cpp's."""

    def __init__(self, engine: LlamaCppEngine, *, batching: str = "continuous", max_batch: int = 32) -> None:
        _check_batching(batching)
        self.engine = engine
        scheduler = ContinuousBatcher(None, engine.tokenizer, max_batch=max_batch, serial=batching == "serial",
                                      engine=engine)
        self._setup(scheduler, engine.tokenizer, engine.context_limit, engine.llama.n_vocab)


def _check_batching(batching: str) -> None:
    if batching not in ("continuous", "serial"):
        raise ValueError(f"batching must be 'continuous' or 'serial', got {batching!r}")


def _byte_level_alphabet() -> dict[int, str]:
    """Byte-level BPE's printable stand-in for each byte (the GPT-2 scheme): printable Latin-1 bytes stand for
    themselves, the other bytes for the characters from U+0100 on, in order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@dataclass
class GenResult:
    completion: Completion | None = None
    ttft: float | None = None
    latency: float = 0.0


@dataclass(frozen=True)
class ChoiceEvent:
    """Choice ``index`` produced ``delta``; ``tokens`` of it were generated by then; ``finished`` on its last event."""

    index: int
    delta: str
    tokens: int
    finished: Completion | None


@dataclass
class _Choice:
    request: GenRequest
    result: GenResult = field(default_factory=GenResult)


class Generation:
    """The replies of one HTTP request, bridged to the event loop: ``groups`` holds (prompt ids, the sampling
    parameters of each choice); choices are numbered in that order and each group is sampled together.
    ``constraint()`` makes each choice's `GenRequest.constraint` (JSON mode)."""

    def __init__(self, backend: GenerationBackend, groups: list[tuple[list[int], list[SamplingParams]]],
                 constraint: Callable[[], Any] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, int, Any]] = asyncio.Queue()
        self.start = time.perf_counter()
        self.choices: list[_Choice] = []
        submitted: list[list[GenRequest]] = []
        for prompt_ids, choice_params in groups:
            group = []
            for params in choice_params:
                i = len(self.choices)
                request = GenRequest(prompt_ids, params, partial(self._on_event, i), partial(self._on_error, i),
                                     constraint=constraint() if constraint is not None else None)
                self.choices.append(_Choice(request))
                group.append(request)
            submitted.append(group)
        for group in submitted:
            backend.submit(group)

    @classmethod
    def one(cls, backend: GenerationBackend, prompt_ids: list[int], params: SamplingParams) -> Generation:
        return cls(backend, [(prompt_ids, [params])])

    @property
    def result(self) -> GenResult:
        """The first (for a single reply, the only) choice's result."""
        return self.choices[0].result

    @property
    def results(self) -> list[GenResult]:
        return [c.result for c in self.choices]

    def _on_event(self, i: int, delta: str, finished: Completion | None) -> None:  # the scheduler's thread
        completion = self.choices[i].request.completion
        tokens = len(completion.token_ids) if completion is not None else 0
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("event", i, (delta, tokens, finished)))

    def _on_error(self, i: int, err: BaseException) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("error", i, err))

    def cancel(self) -> None:
        for c in self.choices:
            c.request.cancel()

    async def events(self) -> AsyncIterator[ChoiceEvent]:
        """Every choice's events as they come, until all have finished (a failure raises RuntimeError)."""
        running = len(self.choices)
        try:
            while running:
                kind, i, payload = await self.queue.get()
                if kind == "error":
                    raise RuntimeError(f"generation failed: {payload}")
                delta, tokens, finished = payload
                result = self.choices[i].result
                if result.ttft is None and (delta or finished is not None):
                    result.ttft = time.perf_counter() - self.start
                if finished is not None:
                    result.completion = finished
                    result.latency = time.perf_counter() - self.start
                    running -= 1
                yield ChoiceEvent(i, delta, tokens, finished)
        finally:
            if running:
                self.cancel()

    async def deltas(self) -> AsyncIterator[str]:
        """The text of a single reply as it is produced."""
        async for event in self.events():
            if event.delta:
                yield event.delta


T = TypeVar("T")


async def until_disconnect(request: Request, items: AsyncIterator[T], on_disconnect: Callable[[], None]) -> AsyncIterator[T]:
    """``items`` of a non-streaming request; when the client goes away, ``on_disconnect()`` and stop."""
    it = items.__aiter__()
    while True:
        task = asyncio.ensure_future(it.__anext__())
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                break
            if await request.is_disconnected():
                on_disconnect()
                task.cancel()
                return
        try:
            yield task.result()
        except StopAsyncIteration:
            return


def sse(data: Any) -> str:
    """One server-sent event carrying ``data`` as JSON."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
