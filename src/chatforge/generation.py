"""The generation engine: batched sampling with a KV cache, per-token logprobs and streaming.

One engine serves every caller: the terminal chat, the server, the evaluators and the RL trainers (which need the
log-probability of each sampled token). The decode loop is ours rather than ``model.generate()`` because it does
less per step (no logits-processor stack, no per-step stopping-criteria objects, no full-vocabulary logits at
prefill) and because it lets finished rows leave the batch early, which ``generate()`` cannot do.

Backends: ``TorchEngine`` runs any transformers causal LM in-process. ``VLLMEngine`` adapts vLLM's offline
``LLM`` to the same interface where vLLM is installed (GPU machines); ``create_engine`` picks between them.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from chatforge import chat, models
from chatforge.decoder import KVCache, LeanDecoder, unsupported_reason

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature=0`` is greedy decoding; ``top_k=0`` and ``top_p=1`` switch those filters off.

    ``stop`` holds extra stop strings; the tokenizer's end-of-turn and eos tokens always stop a reply.

    ``logit_bias`` ((id, bias), ...) and the penalties: OpenAI's (`adjust_logits`); ``top_logprobs``: see Completion.
    """

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be a non-negative integer, got {self.top_k!r}")
        if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop must be a sequence of non-empty strings")
        if not (math.isfinite(self.presence_penalty) and math.isfinite(self.frequency_penalty)):
            raise ValueError(f"presence_penalty and frequency_penalty must be finite, got {self.presence_penalty!r}, "
                             f"{self.frequency_penalty!r}")
        if any(not isinstance(t, int) or t < 0 or not math.isfinite(b) for t, b in self.logit_bias) or \
                not isinstance(self.top_logprobs, int) or self.top_logprobs < 0:
            raise ValueError("logit_bias must hold (token id >= 0, finite bias) pairs and top_logprobs be >= 0, got "
                             f"{self.logit_bias!r:.80}, {self.top_logprobs!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalized(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0

    @property
    def adjusts_logits(self) -> bool:  # logit bias or penalties: `adjust_logits` has work to do
        return self.penalized or bool(self.logit_bias)


@dataclass
class Completion:
    """One generated reply. ``token_ids`` include a stop token or the tokens of a matched stop string (they are
    what the model produced, which RL needs); ``text`` never includes them. ``logprobs[i]`` is the log-probability
    of ``token_ids[i]`` under the model's distribution at the sampling temperature (temperature 1 for greedy),
    before top-k/top-p filtering, i.e. exactly ``log_softmax(logits / T)`` of a forward pass (logits after logit bias
    and penalties where asked). ``top_logprobs[i]``: the most likely (token id, logprob) pairs of that step."""

    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish_reason: FinishReason | None = None
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)


class Engine(Protocol):
    """What every backend offers."""

    tokenizer: Any

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]: ...

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[str]: ...


# --------------------------------------------------------------------------------------------------------------
# Text: incremental detokenization and stop strings
# --------------------------------------------------------------------------------------------------------------


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas without splitting a multi-byte character.

    Byte-level BPE and byte-fallback tokenizers spread one character over several tokens; decoding the tokens so
    far then ends in U+FFFD. We hold such a tail back until the character completes. Each step decodes only a short
    window (from the token before the last emitted one), so the cost per token stays constant, and decoding the
    window and its prefix from the same start keeps tokenizer-specific leading-space rules consistent.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""
        self._prefix = 0  # window start
        self._read = 0  # tokens already turned into text

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        window = self.tokenizer.decode(self.ids[self._prefix :], skip_special_tokens=True)
        if window.endswith("\ufffd"):
            return ""  # an incomplete character: wait for the rest of its bytes
        done = self.tokenizer.decode(self.ids[self._prefix : self._read], skip_special_tokens=True)
        delta = window[len(done) :]
        self._prefix, self._read = self._read, len(self.ids)
        self.text += delta
        return delta

    def flush(self) -> str:
        """Emit whatever is held back (a genuinely broken character at the very end)."""
        if self._read == len(self.ids):
            return ""
        window = self.tokenizer.decode(self.ids[self._prefix :], skip_special_tokens=True)
        done = self.tokenizer.decode(self.ids[self._prefix : self._read], skip_special_tokens=True)
        delta = window[len(done) :]
        self._prefix = self._read = len(self.ids)
        self.text += delta
        return delta


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop string (so must not be streamed yet)."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


# --------------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------------


def sample_tokens(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row of ``logits`` [B, V]; return (tokens [B], their logprobs [B] at the temperature)."""
    logits = logits.float()
    if params.greedy:
        tokens = logits.argmax(dim=-1)
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None])[:, 0]
        return tokens, logprobs
    scaled = _at_temperature(logits, params.temperature)
    logprobs_all = torch.log_softmax(scaled, dim=-1)
    filtered = scaled
    if params.top_k and params.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, params.top_k, dim=-1).values[:, -1:]
        filtered = filtered.masked_fill(filtered < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(filtered, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens ranked above it already hold top_p of the mass; the first always stays.
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= params.top_p
        drop_sorted[:, 0] = False  # even when top_p is below float32's resolution (5e-324: the API fuzzer)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        filtered = filtered.masked_fill(drop, float("-inf"))
    tokens = draw(torch.softmax(filtered, dim=-1), generator)
    return tokens, logprobs_all.gather(-1, tokens[:, None])[:, 0]


def _at_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature`` shifted so each row's largest is 0 (the same distribution), the temperature held at
    float32's smallest normal: 1e-100 (the API fuzzer's) became 0 and NaN; now the draw is greedy, as in the limit."""
    return (logits - logits.amax(dim=-1, keepdim=True)) / max(temperature, torch.finfo(logits.dtype).tiny)


def top_alternatives(logits: torch.Tensor, params: SamplingParams, k: int) -> list[list[tuple[int, float]]]:
    """Each row's ``k`` likeliest (token id, logprob), first first, as `sample_tokens` reports logprobs."""
    logits = logits.float() if params.greedy else _at_temperature(logits.float(), params.temperature)
    values, ids = torch.log_softmax(logits, dim=-1).topk(min(k, logits.shape[-1]), dim=-1)
    return [list(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]


def adjust_logits(logits: torch.Tensor, params: SamplingParams, counts: torch.Tensor | None = None) -> torch.Tensor:
    """New float32 ``logits`` [B, V] as OpenAI's API documents: ``mu[j] - c[j] * frequency_penalty - (c[j] > 0) *
    presence_penalty + logit_bias[j]``, ``c[j]`` (``counts`` [B, V]) how often j was sampled in the row's reply."""
    out = logits.float().clone()
    if params.logit_bias:
        ids = torch.tensor([t for t, _ in params.logit_bias], device=out.device)
        if int(ids.max()) >= out.shape[-1]:
            raise ValueError(f"logit_bias names token {int(ids.max())}; the vocabulary has {out.shape[-1]} tokens")
        out[:, ids] += torch.tensor([b for _, b in params.logit_bias], device=out.device)
    if counts is not None and params.penalized:
        out -= counts * params.frequency_penalty + (counts > 0).float() * params.presence_penalty
    return out


def draw(probs: torch.Tensor, generator: torch.Generator | None = None, block: int = 256) -> torch.Tensor:
    """One index per row of ``probs`` [B, V] (rows summing to 1), drawn by inverting the cumulative distribution.

    ``torch.multinomial`` on a CPU draws a random number per vocabulary entry: 9.5 ms a step for 8 rows of
    SmolLM2's 49k vocabulary, more than a decode step's matrix work at that batch. Inversion needs one uniform per
    row. A float32 running sum over 49k entries would misplace the rare tokens' intervals, so the search is in two
    levels, both in float64: which ``block`` of entries holds the draw, then where inside it (0.27 ms for the same
    8 rows; bench/sampling.py). A token of probability 0 (cut by top-k/top-p) is never chosen: each level lands strictly inside an
    interval of positive width."""
    rows, vocab = probs.shape
    blocks = probs.new_zeros(rows, -(-vocab // block) * block)
    blocks[:, :vocab] = probs
    blocks = blocks.view(rows, -1, block)
    cdf = blocks.sum(dim=-1, dtype=torch.float64).cumsum(dim=-1)  # [B, blocks]
    u = torch.rand((rows, 1), dtype=torch.float64, generator=generator, device=probs.device)
    target = torch.minimum(u * cdf[:, -1:], torch.nextafter(cdf[:, -1:], torch.zeros_like(cdf[:, -1:])))
    which = torch.searchsorted(cdf, target, right=True)  # first block whose end passes the target
    start = torch.where(which > 0, cdf.gather(1, (which - 1).clamp(min=0)), torch.zeros_like(target))
    inside = blocks[torch.arange(rows, device=probs.device), which[:, 0]].double().cumsum(dim=-1)  # [B, block]
    # the block's own running sum can end a rounding error short of the block-level one: stay inside it
    offset = torch.minimum(target - start, torch.nextafter(inside[:, -1:], torch.zeros_like(target)))
    return which[:, 0] * block + torch.searchsorted(inside, offset, right=True)[:, 0]


# --------------------------------------------------------------------------------------------------------------
# The in-process engine
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Row:
    completion: Completion
    detok: IncrementalDetokenizer
    emitted: int = 0  # characters of detok.text already handed out as deltas


@dataclass(frozen=True)
class StepEvent:
    """What one decode step did to one request: the text it adds and, at the end, the finished completion."""

    index: int
    delta: str
    finished: Completion | None = None


def left_padded(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, valid, positions)`` [B, T] of token sequences padded on the left: every sequence's last token
    in the last column, so one forward pass of new tokens serves the whole batch; ``valid`` is 1 on real tokens and
    position ids restart at 0 after each row's padding."""
    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    valid = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        input_ids[i, width - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
        valid[i, width - len(seq) :] = 1
    positions = (valid.cumsum(-1) - 1).clamp(min=0)
    return input_ids.to(device), valid.to(device), positions.to(device)


def cache_argument(model: Any) -> str:
    """The name under which this transformers model's forward takes its KV cache: ``cache`` from transformers
    5.2x on (``past_key_values`` still works there with a deprecation warning and goes away in 5.40), else
    ``past_key_values``."""
    import inspect

    forward = getattr(model, "forward", None)
    try:
        parameters = inspect.signature(forward).parameters if forward is not None else {}
    except (TypeError, ValueError):
        parameters = {}
    return "cache" if "cache" in parameters else "past_key_values"


class _TransformersForward:
    """Decode steps through the model's own forward pass and a transformers cache: any architecture.

    Like ``_LeanForward`` it holds the running batch (left padded) and can drop rows (``select``), drop columns
    that only padding uses (``trim``) and take in rows prefilled apart (``extend``) where ``can_extend``: a dynamic
    cache of plain full-attention layers (a sliding-window layer, as in Gemma 3, cannot be spliced safely)."""

    def __init__(self, model: Any, cache_kind: str, total: int, cache_arg: str) -> None:
        from transformers import DynamicCache, StaticCache

        self.model = model
        self.static = cache_kind == "static"
        # dynamic: KV tensors grown by concatenation; finished rows are cut out cheaply. static: allocated once at
        # prompt width + max_new_tokens and written in place, but every step then attends over, and builds a mask
        # for, all slots, and dropping a finished row copies the whole cache.
        self.cache: Any = (
            StaticCache(config=model.config, max_cache_len=total) if self.static else DynamicCache(config=model.config)
        )
        self.total = total
        self.attention = torch.empty(0)  # [B, columns] 1 = real token (static: all total slots, `width` in use)
        self.width = 0
        self.cache_arg = cache_arg

    @property
    def can_extend(self) -> bool:
        from transformers.cache_utils import DynamicLayer

        return not self.static and all(type(layer) is DynamicLayer for layer in getattr(self.cache, "layers", [None]))

    def _run(self, input_ids: torch.Tensor, positions: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids,
            attention_mask=self.attention,
            position_ids=positions,
            use_cache=True,
            **{self.cache_arg: self.cache},
            **kwargs,
        )
        return out.logits[:, -1, :]

    def prefill(self, input_ids: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        batch, self.width = input_ids.shape
        if self.static:
            # A static cache attends over all its slots (empty ones masked out), so it takes the full-width mask.
            self.attention = torch.zeros((batch, self.total), dtype=torch.long, device=input_ids.device)
            self.attention[:, : self.width] = valid
        else:
            self.attention = valid.long()
        # only the last position's logits: a large-vocabulary head is costly at prefill
        return self._run(input_ids, positions, logits_to_keep=1)

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if self.static:
            self.attention[:, self.width] = 1
        else:
            self.attention = torch.cat([self.attention, self.attention.new_ones((len(tokens), 1))], dim=1)
        self.width += 1
        return self._run(tokens[:, None], positions)

    def wants_compaction(self, live: int, rows: int) -> bool:
        return live < rows  # the model's forward has no notion of idle rows: drop them at once

    def select(self, kept: torch.Tensor) -> None:
        if self.static:
            self.cache.reorder_cache(kept)  # index_select along the batch: keeps only the running rows
        else:
            self.cache.batch_select_indices(kept)
        self.attention = self.attention[kept]

    def trim(self) -> None:
        if not self.can_extend:
            return
        used = self.attention.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        if first > 0:
            self.attention = self.attention[:, first:]
            self.width -= first
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, first:, :]
                layer.values = layer.values[:, :, first:, :]

    def extend(self, other: _TransformersForward) -> None:
        """Append ``other``'s rows, right-aligned with ours (the shorter side padded on the left, masked out)."""
        if not (self.can_extend and other.can_extend):
            raise ValueError("this cache cannot take rows in (static, or not plain full-attention layers)")
        width = max(self.width, other.width)

        def pad(t: torch.Tensor, dim: int, by: int) -> torch.Tensor:
            if by == 0:
                return t
            shape = list(t.shape)
            shape[dim] = by
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            for name in ("keys", "values"):
                joined = [pad(getattr(mine, name), -2, width - self.width), pad(getattr(theirs, name), -2, width - other.width)]
                setattr(mine, name, torch.cat(joined))
        self.attention = torch.cat([pad(self.attention, 1, width - self.width), pad(other.attention, 1, width - other.width)])
        self.width = width


class _LeanForward:
    """Decode steps through ``chatforge.decoder.LeanDecoder`` (fused, prepacked, in-place KV cache)."""

    can_extend = True

    def __init__(self, decoder: LeanDecoder, total: int) -> None:
        self.decoder = decoder
        self.total = total
        self.cache: KVCache | None = None

    def prefill(self, input_ids: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.cache = self.decoder.new_cache(input_ids.shape[0], self.total)
        return self.decoder.forward(input_ids, positions, self.cache, valid.bool())

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        assert self.cache is not None
        return self.decoder.forward(tokens[:, None], positions, self.cache)

    def wants_compaction(self, live: int, rows: int) -> bool:
        # A decode step reads every weight whatever the batch, so an idle row costs little, while dropping rows
        # copies the cache: compact only when half the rows are idle.
        return live <= rows // 2

    def select(self, kept: torch.Tensor) -> None:
        assert self.cache is not None
        self.cache.select(kept)

    def trim(self) -> None:
        assert self.cache is not None
        self.cache.trim()

    def extend(self, other: _LeanForward) -> None:
        assert self.cache is not None and other.cache is not None
        self.cache.extend(other.cache)


ForwardPass = _TransformersForward | _LeanForward


DecoderChoice = Literal["auto", "lean", "transformers"]


class TorchEngine:
    """Batched generation for any transformers causal LM, in-process (CPU or GPU).

    ``decoder``: "lean" runs ``chatforge.decoder.LeanDecoder`` (Llama-family models; fused and prepacked
    projections, weights in ``decode_dtype``; None or "auto": bfloat16 on CPUs with AVX512-BF16, else the model's);
    "transformers" runs the model's own forward pass (any architecture, exactly the model's dtype); "auto" (the
    default) is lean where the model is supported. The lean decoder re-reads the weights whenever they change, so
    an engine built once keeps sampling from a model that is being trained.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        stop_token_ids: Sequence[int] | None = None,
        cache: Literal["static", "dynamic"] = "dynamic",
        decoder: DecoderChoice = "auto",
        decode_dtype: torch.dtype | str | None = None,
    ) -> None:
        if cache not in ("static", "dynamic"):
            raise ValueError(f"cache must be 'static' or 'dynamic', got {cache!r}")
        if decoder not in ("auto", "lean", "transformers"):
            raise ValueError(f"decoder must be 'auto', 'lean' or 'transformers', got {decoder!r}")
        self.model = model
        # The transformers path's cache; bench/generation.py measured static no faster than dynamic at batch 16
        # and slower when rows finish early (every finished row copies the whole preallocated cache).
        self.cache_kind = cache
        self.lean: LeanDecoder | None = None
        if decoder != "transformers":
            reason = unsupported_reason(model)
            if reason is None:
                try:
                    dtype = None if decode_dtype in (None, "auto") else models.parse_dtype(decode_dtype)
                except ValueError as err:
                    raise ValueError(f"decode_dtype: {err}") from None
                self.lean = LeanDecoder(model, dtype=dtype)
            elif decoder == "lean":
                raise ValueError(f"decoder='lean' cannot run this model: {reason}; use decoder='transformers'")
        self.cache_arg = cache_argument(model)  # the keyword the model's own forward takes its KV cache by
        self.tokenizer = tokenizer
        chat.ensure_chat_template(tokenizer)
        self.stop_token_ids = frozenset(stop_token_ids if stop_token_ids is not None else chat.stop_token_ids(tokenizer))
        # Multi-token end-of-turn text (a base model with a text-only template) is caught as a stop string.
        self.default_stops = tuple(chat.stop_strings(tokenizer))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad if pad is not None else 0)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def decoder_name(self) -> str:
        """What decodes: "lean (bfloat16)", "transformers (float32)", ..."""
        if self.lean is not None:
            return f"lean ({str(self.lean.dtype).removeprefix('torch.')})"
        return f"transformers ({str(next(self.model.parameters()).dtype).removeprefix('torch.')})"

    def encode_chat(self, conversation: chat.Conversation | Sequence[Any]) -> list[int]:
        return chat.encode_prompt(self.tokenizer, conversation)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        *,
        on_step: Callable[[list[StepEvent]], None] | None = None,
    ) -> list[Completion]:
        """Complete every prompt (token ids); ``on_step`` sees each step's events (for servers and progress)."""
        results: list[Completion | None] = [None] * len(prompts)
        for events in self.steps(prompts, params):
            if on_step is not None:
                on_step(events)
            for event in events:
                if event.finished is not None:
                    results[event.index] = event.finished
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[str]:
        """Text deltas of one reply as they are produced; joined, they equal the completion's text."""
        for events in self.steps([prompt], params):
            for event in events:
                if event.delta:
                    yield event.delta

    def chat(self, conversations: Sequence[chat.Conversation | Sequence[Any]], params: SamplingParams) -> list[Completion]:
        return self.generate([self.encode_chat(c) for c in conversations], params)

    def forward_pass(self, total: int) -> ForwardPass:
        """A fresh decode state on this engine's forward pass, for prompts plus new tokens of ``total`` columns
        (a capacity hint; the lean cache grows past it)."""
        if self.lean is not None:
            self.lean.refresh()  # the model may have been trained since the last call
            return _LeanForward(self.lean, total)
        return _TransformersForward(self.model, self.cache_kind, total, self.cache_arg)

    @torch.inference_mode()
    def steps(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> Iterator[list[StepEvent]]:
        """The decode loop, one yield per step. Finished rows stop being sampled at once and leave the batch (and
        its KV cache) when the forward pass says it pays."""
        if len(prompts) == 0:
            return
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"prompt {i} is empty")
        stops = tuple(params.stop) + self.default_stops
        rows = [_Row(Completion(list(map(int, p))), IncrementalDetokenizer(self.tokenizer)) for p in prompts]
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)

        input_ids, valid, positions = left_padded(prompts, self.pad_token_id, self.device)
        width = input_ids.shape[1]

        forward = self.forward_pass(width + params.max_new_tokens)
        logits = forward.prefill(input_ids, valid, positions)
        next_positions = positions[:, -1:] + 1
        batch_rows: list[int | None] = list(range(len(prompts)))  # request index of each batch row (None: idle)
        counts: torch.Tensor | None = None  # [requests, V] the penalties' c[j]: how often each token was sampled

        for step in range(params.max_new_tokens):
            live = [b for b, index in enumerate(batch_rows) if index is not None]
            requests = [index for index in batch_rows if index is not None]
            step_logits = logits[live] if len(live) < len(batch_rows) else logits
            if params.penalized and counts is None:
                counts = torch.zeros((len(prompts), step_logits.shape[-1]), device=step_logits.device)
            if params.adjusts_logits:
                step_logits = adjust_logits(step_logits, params, counts[requests] if counts is not None else None)
            sampled, sampled_lp = sample_tokens(step_logits, params, generator)
            if counts is not None:
                counts[requests, sampled] += 1
            top = top_alternatives(step_logits, params, params.top_logprobs) if params.top_logprobs else None
            token_list, logprob_list = sampled.tolist(), sampled_lp.tolist()
            tokens = [self.pad_token_id] * len(batch_rows)
            events: list[StepEvent] = []
            for j, b in enumerate(live):
                index = batch_rows[b]
                assert index is not None
                row = rows[index]
                token = tokens[b] = token_list[j]
                row.completion.token_ids.append(token)
                row.completion.logprobs.append(logprob_list[j])
                if top is not None:
                    row.completion.top_logprobs.append(top[j])
                finish: FinishReason | None = None
                if token in self.stop_token_ids:
                    finish = "stop"
                else:
                    row.detok.push(token)
                    if stops:
                        text = row.detok.text
                        hits = [i for i in (text.find(s, max(0, row.emitted - len(s))) for s in stops) if i >= 0]
                        if hits:
                            row.detok.text = text[: min(hits)]
                            finish = "stop"
                    if finish is None and step + 1 == params.max_new_tokens:
                        finish = "length"
                if finish is not None:
                    if finish == "length":
                        row.detok.flush()  # a character cut off by the token limit still shows as U+FFFD
                    row.completion.text = row.detok.text
                    row.completion.finish_reason = finish
                    events.append(StepEvent(index, row.detok.text[row.emitted :], row.completion))
                    row.emitted = len(row.detok.text)
                    batch_rows[b] = None
                else:
                    safe = len(row.detok.text) - held_back(row.detok.text, stops)
                    if safe > row.emitted:
                        events.append(StepEvent(index, row.detok.text[row.emitted : safe]))
                        row.emitted = safe
            yield events
            keep = [b for b, index in enumerate(batch_rows) if index is not None]
            if not keep:
                return
            token_tensor = torch.tensor(tokens, dtype=torch.long, device=self.device)
            if forward.wants_compaction(len(keep), len(batch_rows)):
                kept = torch.tensor(keep, device=self.device)
                forward.select(kept)
                next_positions, token_tensor = next_positions[kept], token_tensor[kept]
                batch_rows = [batch_rows[b] for b in keep]
            logits = forward.decode(token_tensor, next_positions)
            next_positions = next_positions + 1


# --------------------------------------------------------------------------------------------------------------
# vLLM, where installed
# --------------------------------------------------------------------------------------------------------------


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


class VLLMEngine:
    """The same interface on vLLM's offline engine (GPU machines with ``pip install vllm``). Rollouts for RL are
    the dominant cost at scale; vLLM's paged attention and continuous batching make them several times faster.
    Not exercised on the CPU machines chatforge is tested on (vLLM has no build there)."""

    def __init__(self, model_path: str, tokenizer: Any, **llm_kwargs: Any) -> None:
        if not vllm_available():
            raise RuntimeError("the vLLM backend needs vLLM: pip install vllm (GPU machines only)")
        import vllm

        self.tokenizer = tokenizer
        self.llm = vllm.LLM(model=model_path, **llm_kwargs)
        self._vllm = vllm

    def _params(self, params: SamplingParams) -> Any:
        return self._vllm.SamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) + chat.stop_strings(self.tokenizer),
            stop_token_ids=chat.stop_token_ids(self.tokenizer),
            seed=params.seed,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            logit_bias=dict(params.logit_bias) or None,
            logprobs=params.top_logprobs,  # 0: the sampled token's own logprob
        )

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        inputs = [{"prompt_token_ids": list(p)} for p in prompts]
        outputs = self.llm.generate(inputs, self._params(params), use_tqdm=False)
        results = []
        for prompt, output in zip(prompts, outputs, strict=True):
            choice = output.outputs[0]
            steps = list(zip(choice.logprobs or [], choice.token_ids, strict=False))
            logprobs = [step[token].logprob for step, token in steps]
            top = [sorted(((t, x.logprob) for t, x in step.items()), key=lambda x: -x[1])[: params.top_logprobs]
                   for step, _ in steps if params.top_logprobs]
            results.append(
                Completion(
                    list(prompt),
                    list(choice.token_ids),
                    logprobs,
                    choice.text,
                    "length" if choice.finish_reason == "length" else "stop",
                    top,
                )
            )
        return results

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[str]:
        yield self.generate([prompt], params)[0].text


def create_engine(model: Any, tokenizer: Any, *, backend: str = "torch", model_path: str | None = None) -> Engine:
    """``backend``: "torch" (in-process), "vllm" (needs ``model_path`` and vLLM), or "auto" (vLLM when installed
    and a path is given, else torch)."""
    if backend not in ("torch", "vllm", "auto"):
        raise ValueError(f"unknown generation backend {backend!r}; expected torch, vllm or auto")
    if backend == "vllm" or (backend == "auto" and vllm_available() and model_path is not None):
        if model_path is None:
            raise ValueError("the vLLM backend loads the model itself: pass model_path (a checkpoint directory)")
        return VLLMEngine(model_path, tokenizer)
    return TorchEngine(model, tokenizer)
