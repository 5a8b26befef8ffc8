"""Continuous batching: one scheduler thread runs one decode loop for every request the server has.

``TorchEngine.steps()`` decodes a fixed set of prompts; a server needs requests to *join* a running batch. This
module keeps the batch's KV cache (left padded) between steps and, before each step, prefills the requests that
arrived meanwhile and splices their cache rows into the running one (padding the shorter side on the left, masked
out). Finished and cancelled rows leave at once, and columns that only padding still uses are trimmed, so the
cache stays as narrow as the longest running request. The forward pass is the engine's (``TorchEngine.forward_pass``:
the lean decoder and its ``KVCache`` where the model is supported, else the model's own forward with a
transformers ``DynamicCache``); either holds the running batch and does the ``extend``/``select``/``trim``.

Requests submitted together (``submit_group``: the n choices of one API request) are admitted together, and a
prompt they share is prefilled once: its cache row is copied to each of them. Each request has its own
``SamplingParams``: rows with plain equal temperature/top-p/top-k are sampled together; a seeded request has its own
generator, and logit bias, presence/frequency penalties and a JSON-mode constraint (the tokens allowed next,
``GenRequest.constraint``) are applied per row. Each sampled
token's logprob is recorded, with its top alternatives where asked. Sampling and detokenization reuse
``chatforge.generation`` (sample_tokens, IncrementalDetokenizer).

``serial=True`` is the one-at-a-time baseline: a group is admitted only when the batch is empty.

Models whose cache layers are not plain full-attention layers (sliding windows, e.g. Gemma 3) cannot have rows
spliced in safely; for them new requests join only when the batch is empty (still batched with each other).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
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
    adjust_logits,
    held_back,
    left_padded,
    sample_tokens,
    top_alternatives,
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
    counts: torch.Tensor | None = None  # [V] tokens sampled so far, for the presence/frequency penalties
    # what may come next (JSON mode: chatforge.serve.json_mode.JSONConstraint): mask() -> [V] bool, advance(token)
    constraint: Any = None

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class _Sampled:
    token: int
    logprob: float
    top: list[tuple[int, float]] | None


class ContinuousBatcher:
    """``submit(request)`` or ``submit_group(requests)`` from any thread; replies are produced by one background
    decode loop."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch: int = 32,
        decoder: DecoderChoice = "auto",
        decode_dtype: torch.dtype | str | None = None,
        serial: bool = False,
        engine: TorchEngine | None = None,
    ) -> None:
        # reuse its stop tokens, pad id, device and forward pass; ``engine`` brings another forward pass (llama.cpp)
        self.engine = engine or TorchEngine(model, tokenizer, cache="dynamic", decoder=decoder, decode_dtype=decode_dtype)
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.serial = serial
        self._queue: queue.Queue[list[GenRequest]] = queue.Queue()
        self._waiting: deque[list[GenRequest]] = deque()  # groups taken off the queue, not yet admitted
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
        self.submit_group([request])
        return request

    def submit_group(self, requests: list[GenRequest]) -> list[GenRequest]:
        """Requests admitted together (the n choices of one prompt): a prompt they share is prefilled once."""
        if not requests:
            raise ValueError("no requests")
        if any(not r.prompt_ids for r in requests):
            raise ValueError("prompt is empty")
        self._queue.put(list(requests))
        self._wake.set()
        return requests

    @property
    def running(self) -> int:
        return len(self._rows)

    # ---- the loop ----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stop.is_set():
                if not self._rows and not self._waiting and self._queue.empty():
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
        while not self._queue.empty():
            self._waiting.append(self._queue.get_nowait())
        for row in self._rows + [r for group in self._waiting for r in group]:
            row.on_error(RuntimeError("server shutting down"))

    def _reset(self) -> None:
        self._rows, self._forward, self._positions, self._logits = [], None, None, None

    def _take_new(self) -> list[list[GenRequest]]:
        while True:
            try:
                self._waiting.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if self._rows and (self.serial or self._can_extend is False):
            return []
        room = self.max_batch - len(self._rows)
        taken: list[list[GenRequest]] = []
        while self._waiting:
            group = []
            for req in self._waiting[0]:
                if req.cancelled.is_set():
                    self._finish(req, "cancelled")
                else:
                    group.append(req)
            if group and len(group) > room and (self._rows or taken):
                break  # it waits for room; a group larger than max_batch still runs alone
            self._waiting.popleft()
            if group:
                taken.append(group)
                room -= len(group)
                if self.serial:
                    break
        return taken

    def _admit(self) -> None:
        groups = self._take_new()
        if not groups:
            return
        device = self.engine.device
        new = [req for group in groups for req in group]
        for req in new:
            req.completion = Completion(list(map(int, req.prompt_ids)))
            req.detok = IncrementalDetokenizer(self.tokenizer)
            req.stops = tuple(req.params.stop) + self.engine.default_stops
            if req.params.seed is not None:
                req.generator = torch.Generator(device=device).manual_seed(req.params.seed)
        # one prefill row per distinct prompt of a group; its cache row is then copied to each request
        prompts: list[list[int]] = []
        source: list[int] = []
        for group in groups:
            seen: dict[tuple[int, ...], int] = {}
            for req in group:
                source.append(seen.setdefault(tuple(req.prompt_ids), len(prompts)))
                if source[-1] == len(prompts):
                    prompts.append(req.prompt_ids)
        ids, mask, positions = left_padded(prompts, self.engine.pad_token_id, device)
        forward = self.engine.forward_pass(ids.shape[1] + 64)
        logits = forward.prefill(ids, mask, positions)
        next_pos = positions[:, -1:] + 1
        if len(prompts) < len(new):
            rows = torch.tensor(source, device=device)
            forward.select(rows)
            logits, next_pos = logits[rows], next_pos[rows]
        if self._can_extend is None:
            self._can_extend = forward.can_extend
        if not self._rows:
            self._rows, self._forward, self._positions, self._logits = new, forward, next_pos, logits
        else:
            assert self._forward is not None and self._positions is not None and self._logits is not None
            self._forward.extend(forward)  # type: ignore[arg-type]  # both come from this engine
            self._positions = torch.cat([self._positions, next_pos])
            self._logits = torch.cat([self._logits, logits])
            self._rows = self._rows + new
        self.max_batch_seen = max(self.max_batch_seen, len(self._rows))

    def _sample(self) -> list[_Sampled]:
        """Each row's next token. Rows with plain, equal sampling parameters are drawn together; a row with its own
        generator, logit bias or penalties alone."""
        assert self._logits is not None
        sampled: list[_Sampled | None] = [None] * len(self._rows)
        plain: dict[tuple[float, float, int], list[int]] = {}
        for b, row in enumerate(self._rows):
            p = row.params
            if row.generator is not None or p.adjusts_logits or row.constraint is not None:
                logits = self._logits[b : b + 1]
                if p.adjusts_logits:
                    if p.penalized and row.counts is None:
                        row.counts = torch.zeros(logits.shape[-1], device=logits.device)
                    logits = adjust_logits(logits, p, row.counts[None] if row.counts is not None else None)
                if row.constraint is not None:
                    allowed = row.constraint.mask()[: logits.shape[-1]].to(logits.device)
                    logits = logits.masked_fill(~allowed, float("-inf"))
                s = self._draw(logits, [row], row.generator)[0]
                sampled[b] = s
                if row.counts is not None:
                    row.counts[s.token] += 1
                if row.constraint is not None:
                    row.constraint.advance(s.token)
            else:
                plain.setdefault((p.temperature, p.top_p, p.top_k), []).append(b)
        for idx in plain.values():
            for b, s in zip(idx, self._draw(self._logits[idx], [self._rows[b] for b in idx], None), strict=True):
                sampled[b] = s
        return [s for s in sampled if s is not None]

    @staticmethod
    def _draw(logits: torch.Tensor, rows: list[GenRequest], generator: torch.Generator | None) -> list[_Sampled]:
        params = rows[0].params
        tokens, logprobs = sample_tokens(logits, params, generator)
        want = max(r.params.top_logprobs for r in rows)
        top = top_alternatives(logits, params, want) if want else None
        return [_Sampled(t, lp, top[i][: rows[i].params.top_logprobs] if top and rows[i].params.top_logprobs else None)
                for i, (t, lp) in enumerate(zip(tokens.tolist(), logprobs.tolist(), strict=True))]

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
        sampled = self._sample()
        now = time.perf_counter()
        keep: list[int] = []
        for b, row in enumerate(self._rows):
            assert row.completion is not None and row.detok is not None
            if row.cancelled.is_set():
                self._finish(row, "cancelled")
                continue
            token = sampled[b].token
            row.completion.token_ids.append(token)
            row.completion.logprobs.append(sampled[b].logprob)
            if sampled[b].top is not None:
                row.completion.top_logprobs.append(sampled[b].top)  # type: ignore[arg-type]
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
        token_tensor = torch.tensor([sampled[b].token for b in keep], dtype=torch.long, device=device)
        assert self._positions is not None and self._forward is not None
        if len(keep) < len(self._rows):
            kept = torch.tensor(keep, device=device)
            self._positions = self._positions[kept]
            self._rows = [self._rows[b] for b in keep]
            self._forward.select(kept)
            self._forward.trim()  # columns that are padding for every remaining row are dead weight
        self._logits = self._forward.decode(token_tensor, self._positions)
        self._positions = self._positions + 1


def context_limit(model: Any) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 2048)


__all__ = ["ContinuousBatcher", "GenRequest", "context_limit"]
