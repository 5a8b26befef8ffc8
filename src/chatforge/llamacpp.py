"""llama.cpp as chatforge's forward pass: serve (or sample from) a GGUF file with llama.cpp doing the decoding.

``LlamaCppEngine`` is a generation engine like ``TorchEngine`` and runs the same decode loop (``steps``,
``generate``, ``stream``) and the server's continuous batcher over a different forward pass: every prefill and
decode step is one ``llama_decode`` call on llama.cpp's model and KV cache, while sampling, stop tokens and stop
strings, incremental detokenization and streaming stay chatforge's own, so seeds, top-p/top-k and stops behave
the same on both backends.

Several clients: llama.cpp's own batching. Each request is one llama.cpp sequence (``seq_id``) in one context whose
KV cache all sequences share (``kv_unified``); a decode step puts the next token of every running request into one
``llama_batch``, so llama.cpp reads the weights once for the whole batch, as chatforge's own batcher does. A pool
of workers, each with its own context, would read the weights once per worker and split the two cores between
them; on a memory-bound CPU that is the slower choice (bench/serve.py measures the batch).

Needs llama-cpp-python (``pip install -e ".[llamacpp]"``); importing this module does not.
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chatforge import chat
from chatforge.generation import TorchEngine

INSTALL_HINT = 'pip install -e ".[llamacpp]"  (llama-cpp-python; builds llama.cpp from source, ~6+ minutes)'


class LlamaCppUnavailable(RuntimeError):
    """llama-cpp-python is not installed."""


def llama_cpp_module() -> Any:
    try:
        import llama_cpp
    except ImportError as err:
        raise LlamaCppUnavailable(f"the llama.cpp backend needs llama-cpp-python: {INSTALL_HINT} ({err})") from None
    return llama_cpp


_QUIET_LOG: Any = None  # the log callback must outlive every llama.cpp call, so it is kept here
_BACKEND_LOCK = threading.Lock()


def init_llama_cpp() -> Any:
    """The llama_cpp module, its backend started once per process and its log sent nowhere (it prints a table per
    model load and per quantized tensor on stderr; CHATFORGE_LLAMACPP_LOG=1 keeps it)."""
    lc = llama_cpp_module()
    _init_backend(lc)
    return lc


def _init_backend(lc: Any) -> None:
    global _QUIET_LOG
    with _BACKEND_LOCK:
        if _QUIET_LOG is None:
            lc.llama_backend_init()
            _QUIET_LOG = lc.llama_log_callback(lambda level, text, user_data: None)
            if not os.environ.get("CHATFORGE_LLAMACPP_LOG"):
                lc.llama_log_set(_QUIET_LOG, ctypes.c_void_p())


class LlamaCppModel:
    """A GGUF loaded into llama.cpp with one context for ``max_sequences`` concurrent sequences."""

    def __init__(self, path: str | os.PathLike[str], *, context_tokens: int = 16384, max_sequences: int = 32,
                 threads: int | None = None, batch_tokens: int = 2048) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} does not exist")
        lc = self.lc = init_llama_cpp()
        model_params = lc.llama_model_default_params()
        model = lc.llama_model_load_from_file(str(self.path).encode(), model_params)
        if not model:
            raise ValueError(f"llama.cpp could not load {self.path} (not a GGUF model it supports?)")
        self.model = model
        self.context_train = int(lc.llama_model_n_ctx_train(model))
        threads = threads or torch.get_num_threads()
        params = lc.llama_context_default_params()
        params.n_ctx = context_tokens
        params.n_batch = batch_tokens
        params.n_ubatch = min(batch_tokens, 512)
        params.n_seq_max = min(max_sequences, int(lc.llama_max_parallel_sequences()))
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = True  # one cache for every sequence: a request may use what others leave free
        # No flash attention (llama.cpp's default "auto" turns it on): its CPU kernel works in float16. On SmolLM2
        # q8_0, "What is the capital of France?", chatforge's float32 model puts "The" 0.08 above "L"; llama.cpp
        # agrees without flash attention (0.04 above) and with it answers "L'Étoile..." ("L" 0.48 above "The").
        params.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.no_perf = True
        ctx = lc.llama_init_from_model(model, params)
        if not ctx:
            lc.llama_model_free(model)
            raise RuntimeError(f"llama.cpp could not create a context of {context_tokens} tokens for {self.path}")
        self.ctx = ctx
        self.memory = lc.llama_get_memory(ctx)
        self.context_tokens = int(lc.llama_n_ctx(ctx))
        self.batch_tokens = batch_tokens
        self.n_vocab = int(lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model)))
        self._batch = lc.llama_batch_init(batch_tokens, 0, 1)
        self._free_seqs = list(range(int(params.n_seq_max)))[::-1]
        self.seq_lengths: dict[int, int] = {}  # tokens each live sequence holds in the cache
        self.lock = threading.RLock()  # one call into the context at a time (it is not thread-safe)
        self._finalizer = weakref.finalize(self, _free_llama, lc, model, ctx, self._batch)

    def metadata(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self.lc.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8") if n >= 0 else None

    def close(self) -> None:
        self._finalizer()

    # ---- sequences -------------------------------------------------------------------------------------------

    def take_sequence(self) -> int:
        if not self._free_seqs:
            raise RuntimeError(f"all {len(self.seq_lengths)} llama.cpp sequences are in use (raise max_sequences)")
        seq = self._free_seqs.pop()
        self.seq_lengths[seq] = 0
        return seq

    def copy_sequence(self, seq: int) -> int:
        with self.lock:
            copy = self.take_sequence()
            self.lc.llama_memory_seq_cp(self.memory, seq, copy, -1, -1)
            self.seq_lengths[copy] = self.seq_lengths[seq]
            return copy

    def release(self, seqs: Sequence[int]) -> None:
        with self.lock:
            for seq in seqs:
                if seq in self.seq_lengths:
                    self.lc.llama_memory_seq_rm(self.memory, seq, -1, -1)
                    del self.seq_lengths[seq]
                    self._free_seqs.append(seq)

    # ---- decoding --------------------------------------------------------------------------------------------

    def decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> list[np.ndarray]:
        """Run (token, position, seq_id, wants_logits) entries through the model, ``batch_tokens`` at a time;
        return the logits [vocab] of the entries that want them, in order."""
        needed = sum(1 for _, _, seq, _ in entries if seq in self.seq_lengths)
        in_use = sum(self.seq_lengths.values())
        if in_use + needed > self.context_tokens:
            raise RuntimeError(f"the llama.cpp KV cache is full: {in_use} tokens held, {needed} more needed, "
                               f"room for {self.context_tokens} (serve with a larger --llama-context)")
        out: list[np.ndarray] = []
        batch = self._batch
        for start in range(0, len(entries), self.batch_tokens):
            chunk = entries[start : start + self.batch_tokens]
            wanted: list[int] = []
            for i, (token, pos, seq, logits) in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = 1 if logits else 0
                if logits:
                    wanted.append(i)
            batch.n_tokens = len(chunk)
            code = self.lc.llama_decode(self.ctx, batch)
            if code != 0:
                raise RuntimeError(f"llama_decode failed with code {code} (1: no room in the KV cache)")
            for i in wanted:
                pointer = self.lc.llama_get_logits_ith(self.ctx, i)
                out.append(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy())
            for _, _, seq, _ in chunk:
                self.seq_lengths[seq] += 1
        return out


def _free_llama(lc: Any, model: Any, ctx: Any, batch: Any) -> None:
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(model)


class _LlamaCppForward:
    """The forward-pass interface of ``chatforge.generation`` (prefill, decode, select, extend) on llama.cpp:
    each row of the batch is a llama.cpp sequence. Rows dropped by ``select`` and every row of a forward pass that
    is dropped (a finished batch) give their sequences and cache cells back."""

    can_extend = True  # sequences are independent in llama.cpp's cache, sliding-window layers included

    def __init__(self, model: LlamaCppModel) -> None:
        self.model = model
        self.seqs: list[int] = []
        self._finalizer = weakref.finalize(self, model.release, self.seqs)

    def prefill(self, input_ids: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        entries: list[tuple[int, int, int, bool]] = []
        for row in range(input_ids.shape[0]):
            seq = self.model.take_sequence()
            self.seqs.append(seq)
            real = valid[row].bool()
            tokens, places = input_ids[row][real].tolist(), positions[row][real].tolist()
            entries += [(t, p, seq, i == len(tokens) - 1) for i, (t, p) in enumerate(zip(tokens, places, strict=True))]
        return self._run(entries)

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        entries = [(int(t), int(p), seq, True)
                   for t, p, seq in zip(tokens.tolist(), positions[:, -1].tolist(), self.seqs, strict=True)]
        return self._run(entries)

    def _run(self, entries: list[tuple[int, int, int, bool]]) -> torch.Tensor:
        with self.model.lock:
            logits = self.model.decode(entries)
        return torch.from_numpy(np.stack(logits))

    def wants_compaction(self, live: int, rows: int) -> bool:
        return live < rows  # dropping a sequence costs nothing, and it frees its cache cells

    def select(self, kept: torch.Tensor) -> None:
        """Keep these rows, in this order; a row named twice (several replies to one prompt) gets a copy of the
        sequence, which in llama.cpp's cache shares the cells already written."""
        rows = kept.tolist()
        seqs: list[int] = []
        taken: set[int] = set()
        for row in rows:
            seq = self.seqs[row]
            if seq in taken:
                seq = self.model.copy_sequence(seq)
            taken.add(self.seqs[row])
            seqs.append(seq)
        gone = [seq for i, seq in enumerate(self.seqs) if i not in set(rows)]
        self.seqs[:] = seqs
        self.model.release(gone)

    def trim(self) -> None:
        pass  # no padding columns: each sequence holds only its own tokens

    def extend(self, other: _LlamaCppForward) -> None:
        self.seqs.extend(other.seqs)
        other.seqs.clear()  # they are ours now: other's finalizer must not release them


class LlamaCppEngine(TorchEngine):
    """A generation engine whose forward passes run in llama.cpp on a GGUF file.

    It inherits ``TorchEngine``'s decode loop (``steps``/``generate``/``stream``/``chat``), which only asks its
    engine for ``forward_pass`` and the tokenizer's stops; the weights live in llama.cpp, not in torch.
    ``tokenizer`` is chatforge's (Hugging Face) tokenizer for the same vocabulary, from
    ``chatforge.models.load_tokenizer(gguf_path)``."""

    def __init__(self, path: str | os.PathLike[str], tokenizer: Any, *, context_tokens: int = 16384,
                 max_sequences: int = 32, threads: int | None = None) -> None:
        self.llama = LlamaCppModel(path, context_tokens=context_tokens, max_sequences=max_sequences,
                                   threads=threads)
        self.model = None  # no torch model: llama.cpp holds the weights
        self.lean = None
        self.tokenizer = tokenizer
        chat.ensure_chat_template(tokenizer)
        self.stop_token_ids = frozenset(chat.stop_token_ids(tokenizer))
        self.default_stops = tuple(chat.stop_strings(tokenizer))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad if pad is not None else 0)
        if self.llama.n_vocab < len(tokenizer):
            raise ValueError(f"{path} has {self.llama.n_vocab} tokens but the tokenizer has {len(tokenizer)}: "
                             "they do not belong together")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # the logits come back from llama.cpp as host memory

    @property
    def decoder_name(self) -> str:
        return f"llama.cpp ({self.llama.path.name})"

    @property
    def context_limit(self) -> int:
        """The longest prompt + reply one request may have: the model's trained context, within the cache."""
        return min(self.llama.context_train, self.llama.context_tokens)

    def forward_pass(self, total: int) -> _LlamaCppForward:  # type: ignore[override]
        return _LlamaCppForward(self.llama)

    def close(self) -> None:
        self.llama.close()


__all__ = ["INSTALL_HINT", "LlamaCppEngine", "LlamaCppModel", "LlamaCppUnavailable", "init_llama_cpp", "llama_cpp_module"]
