"""Continuous batching: one scheduler thread runs one decode loop for every request the server has.

``TorchEngine.steps()`` decodes a fixed set of prompts; a server needs requests to *join* a running batch. This
module keeps the batch's KV cache (left padded) between steps and, before each step, prefills the requests that
arrived meanwhile and splices their cache rows into the running one (padding the shorter side on the left, masked
out). Finished and cancelled rows leave at once, and columns that only padding still uses are trimmed, so the
cache stays as narrow as the longest running request. The forward pass is the engine's (``TorchEngine.forward_pass``:
the lean decoder and its ``KVCache`` where the model is supported, else the model's own forward with a
transformers ``DynamicCache``); either holds the running batch and does the ``extend``/``select``/``trim``.
Each request has its own
``SamplingParams`` (rows with equal temperature/top-p/top-k are sampled together; a seeded request has its own
generator). Sampling and detokenization reuse ``chatforge.generation`` (sample_tokens, IncrementalDetokenizer).

Models whose cache layers are not plain full-attention layers (sliding windows, e.g. Gemma 3) cannot have rows
spliced in safely; for them new requests join only when the batch is empty (still batched with each other).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from chatforge.generation import (
    Completion,
    DecoderChoice,
    ForwardPass,
    IncrementalDetokenizer,
    SamplingParams,
    TorchEngine,
    held_back,
    left_padded,
    sample_tokens,
)

EventFn = Callable[[str, Completion | None], None]


@dataclass(eq=False)
class GenRequest:
    """One reply to produce. ``on_event(delta, finished)`` is called from the scheduler thread; ``finished`` is the
    Completion on the last call (finish_reason "stop", "length" or "cancelled"). ``on_error`` gets an exception."""

    prompt_ids: list[int]
    params: SamplingParams
    on_event: EventFn
    on_error: Callable[[BaseException], None] = lambda err: None
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    # decode state (owned by the scheduler)
    completion: Completion | None = None
    detok: IncrementalDetokenizer | None = None
    emitted: int = 0
    generator: torch.Generator | None = None
    stops: tuple[str, ...] = ()

    def cancel(self) -> None:
        self.cancelled.set()


class ContinuousBatcher:
    """``submit(request)`` from any thread; replies are produced by one background decode loop."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch: int = 32,
        decoder: DecoderChoice = "auto",
        decode_dtype: torch.dtype | str | None = None,
    ) -> None:
        # reuse its stop tokens, pad id, device and forward pass
        self.engine = TorchEngine(model, tokenizer, cache="dynamic", decoder=decoder, decode_dtype=decode_dtype)
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self._queue: queue.Queue[GenRequest] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # whether rows prefilled apart can join the running batch; learnt at the first prefill
        self._can_extend: bool | None = None
        # running batch
        self._rows: list[GenRequest] = []
        self._forward: ForwardPass | None = None  # its KV cache and padding
        self._positions: torch.Tensor | None = None  # [B, 1] position of the next token
        self._logits: torch.Tensor | None = None  # [B, V] next-token logits
        self.steps_run = 0
        self.max_batch_seen = 0

    # ---- public ------------------------------------------------------------------------------------------------

    def start(self) -> ContinuousBatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="chatforge-batcher", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, request: GenRequest) -> GenRequest:
        if not request.prompt_ids:
            raise ValueError("prompt is empty")
        self._queue.put(request)
        self._wake.set()
        return request

    @property
    def running(self) -> int:
        return len(self._rows)

    # ---- the loop ----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stop.is_set():
                if not self._rows and self._queue.empty():
                    self._wake.wait(timeout=0.2)
                    self._wake.clear()
                    continue
                try:
                    self._admit()
                    if self._rows:
                        self._step()
                except Exception as err:  # a model failure fails the running requests, not the server
                    for row in self._rows:
                        row.on_error(err)
                    self._reset()
        for row in self._rows:
            row.on_error(RuntimeError("server shutting down"))
        while not self._queue.empty():
            self._queue.get_nowait().on_error(RuntimeError("server shutting down"))

    def _reset(self) -> None:
        self._rows, self._forward, self._positions, self._logits = [], None, None, None

    def _take_new(self) -> list[GenRequest]:
        room = self.max_batch - len(self._rows)
        if room <= 0 or (self._rows and self._can_extend is False):
            return []
        new: list[GenRequest] = []
        while len(new) < room:
            try:
                req = self._queue.get_nowait()
            except queue.Empty:
                break
            if req.cancelled.is_set():
                self._finish(req, "cancelled")
                continue
            new.append(req)
        return new

    def _admit(self) -> None:
        new = self._take_new()
        if not new:
            return
        device = self.engine.device
        for req in new:
            req.completion = Completion(list(map(int, req.prompt_ids)))
            req.detok = IncrementalDetokenizer(self.tokenizer)
            req.stops = tuple(req.params.stop) + self.engine.default_stops
            if req.params.seed is not None:
                req.generator = torch.Generator(device=device).manual_seed(req.params.seed)
        ids, mask, positions = left_padded([r.prompt_ids for r in new], self.engine.pad_token_id, device)
        forward = self.engine.forward_pass(ids.shape[1] + 64)
        logits = forward.prefill(ids, mask, positions)
        if self._can_extend is None:
            self._can_extend = forward.can_extend
        next_pos = positions[:, -1:] + 1
        if not self._rows:
            self._rows, self._forward, self._positions, self._logits = new, forward, next_pos, logits
        else:
            assert self._forward is not None and self._positions is not None and self._logits is not None
            self._forward.extend(forward)  # type: ignore[arg-type]  # both come from this engine
            self._positions = torch.cat([self._positions, next_pos])
            self._logits = torch.cat([self._logits, logits])
            self._rows = self._rows + new
        self.max_batch_seen = max(self.max_batch_seen, len(self._rows))

    def _sample(self) -> list[int]:
        assert self._logits is not None
        tokens: list[int] = [0] * len(self._rows)
        groups: dict[tuple[float, float, int], list[int]] = {}
        for b, row in enumerate(self._rows):
            if row.generator is not None:
                t, _ = sample_tokens(self._logits[b : b + 1], row.params, row.generator)
                tokens[b] = int(t[0])
            else:
                p = row.params
                groups.setdefault((p.temperature, p.top_p, p.top_k), []).append(b)
        for idx in groups.values():
            t, _ = sample_tokens(self._logits[idx], self._rows[idx[0]].params)
            for b, tok in zip(idx, t.tolist(), strict=True):
                tokens[b] = tok
        return tokens

    def _finish(self, row: GenRequest, reason: str) -> None:
        if row.completion is None:
            row.completion = Completion(list(row.prompt_ids))
        if row.detok is not None:
            if reason == "length":
                row.detok.flush()
            row.completion.text = row.detok.text
        row.completion.finish_reason = reason  # type: ignore[assignment]
        delta = row.completion.text[row.emitted :] if reason != "cancelled" else ""
        row.emitted = len(row.completion.text)
        with contextlib.suppress(Exception):
            row.on_event(delta, row.completion)

    def _step(self) -> None:
        tokens = self._sample()
        now = time.perf_counter()
        keep: list[int] = []
        for b, row in enumerate(self._rows):
            assert row.completion is not None and row.detok is not None
            if row.cancelled.is_set():
                self._finish(row, "cancelled")
                continue
            token = tokens[b]
            row.completion.token_ids.append(token)
            if row.first_token_at is None:
                row.first_token_at = now
            finish: str | None = None
            if token in self.engine.stop_token_ids:
                finish = "stop"
            else:
                row.detok.push(token)
                if row.stops:
                    text = row.detok.text
                    hits = [i for i in (text.find(s, max(0, row.emitted - len(s))) for s in row.stops) if i >= 0]
                    if hits:
                        row.detok.text = text[: min(hits)]
                        finish = "stop"
                if finish is None and len(row.completion.token_ids) >= row.params.max_new_tokens:
                    finish = "length"
            if finish is not None:
                self._finish(row, finish)
                continue
            safe = len(row.detok.text) - held_back(row.detok.text, row.stops)
            if safe > row.emitted:
                delta = row.detok.text[row.emitted : safe]
                row.emitted = safe
                try:
                    row.on_event(delta, None)
                except Exception:
                    row.cancel()
            keep.append(b)
        self.steps_run += 1
        if not keep:
            self._reset()
            return
        device = self.engine.device
        token_tensor = torch.tensor([tokens[b] for b in keep], dtype=torch.long, device=device)
        assert self._positions is not None and self._forward is not None
        if len(keep) < len(self._rows):
            kept = torch.tensor(keep, device=device)
            self._positions = self._positions[kept]
            self._rows = [self._rows[b] for b in keep]
            self._forward.select(kept)
            self._forward.trim()  # columns that are padding for every remaining row are dead weight
        self._logits = self._forward.decode(token_tensor, self._positions)
        self._positions = self._positions + 1


class SerialServer:
    """The baseline: one request at a time with plain ``TorchEngine.generate`` (its deltas still stream)."""

    def __init__(self, model: Any, tokenizer: Any, *, decoder: DecoderChoice = "auto") -> None:
        self.engine = TorchEngine(model, tokenizer, decoder=decoder)
        self.tokenizer = tokenizer
        self._queue: queue.Queue[GenRequest | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> SerialServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="chatforge-serial", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, request: GenRequest) -> GenRequest:
        self._queue.put(request)
        return request

    @property
    def running(self) -> int:
        return 0

    def _run(self) -> None:
        while (req := self._queue.get()) is not None:
            if req.cancelled.is_set():
                req.on_event("", Completion(list(req.prompt_ids), finish_reason="cancelled"))  # type: ignore[arg-type]
                continue

            def on_step(events: list[Any], req: GenRequest = req) -> None:
                for e in events:
                    if req.first_token_at is None:
                        req.first_token_at = time.perf_counter()
                    if e.finished is None and e.delta:
                        req.on_event(e.delta, None)
                    elif e.finished is not None:
                        req.on_event(e.delta, e.finished)

            try:
                self.engine.generate([req.prompt_ids], req.params, on_step=on_step)
            except Exception as err:
                req.on_error(err)


def context_limit(model: Any) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 2048)


__all__ = ["ContinuousBatcher", "GenRequest", "SerialServer", "context_limit"]
