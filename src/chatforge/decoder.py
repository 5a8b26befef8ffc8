"""A lean forward pass for decoding Llama-family models (Llama, SmolLM2, Mistral, Qwen2): fused projections,
weights in a decode dtype of their own, and a KV cache written in place.

Why it exists: on a CPU, a decode step of a small model reads every weight once, and the weights do not fit in
the cache, so the step is bound by memory traffic and by the number of operations, not by arithmetic. The
transformers forward pass pays for both: float32 weights (twice the bytes of bfloat16), seven separate projection
matmuls per layer, a cache that grows by concatenation (every step copies the whole cache), and a flash-attention
kernel that is slow for a single query. Here a layer is two fused matmuls for attention (q|k|v, o) and two for the
MLP (gate|up, down), with the residual stream and the norms in float32 and the matmuls in ``decode_dtype``
(bfloat16 by default on CPUs with AVX512-BF16, where oneDNN's kernels read half the bytes; measured in
bench/generation.py). A bf16 residual stream (as in a model loaded in bf16) measured no faster and changed the
135M model's greedy answer to "What is the capital of France?" from "Paris" to a list of French words. The rotary
embedding is the model's own module, so every RoPE variant it supports is exact.

The packed weights are copies. They are refreshed automatically when the model's parameters may have changed:
the decoder compares a fingerprint before each use, made of every parameter's (storage, version counter) (an
in-place update such as ``load_state_dict`` or a plain optimizer bumps the counter), LoRA adapters' enabled state,
and a count of optimizer steps taken anywhere in the process (torch's fused AdamW writes the weights without
bumping their version counters, so a global optimizer step hook counts steps instead). A PEFT LoRA model decodes with its adapters merged into the copies (or without them, inside
``disable_adapter()``), so the policy being trained is what samples.

Models it does not cover (Gemma 3's sliding windows and extra norms, biased MLPs, ...) use the transformers
forward pass: ``unsupported_reason(model)`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

SUPPORTED_TYPES = ("llama", "mistral", "qwen2")

_optimizer_steps = 0  # optimizer steps taken in this process (any optimizer): part of every weight fingerprint


def _count_optimizer_step(optimizer: Any, args: Any, kwargs: Any) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)


def base_model(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def unsupported_reason(model: Any, *, head: bool = True) -> str | None:
    """Why the lean decoder cannot run ``model`` (None when it can). ``head=False``: only its trunk is wanted (a
    reward model, whose score head the caller applies to ``hidden_states``)."""
    inner = base_model(model)
    config = getattr(inner, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_TYPES:
        return f"model type {model_type!r} has no lean decoder (supported: {', '.join(SUPPORTED_TYPES)})"
    activation = getattr(config, "hidden_act", "silu")
    if activation != "silu":
        return f"activation {activation!r} (the lean decoder implements silu)"
    if getattr(config, "mlp_bias", False):
        return "biased MLP projections"
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", model_type == "mistral"):
        return "sliding-window attention"
    decoder = getattr(inner, "model", None)
    if decoder is None or not hasattr(decoder, "layers"):
        return "no decoder stack at model.layers"
    if head and not hasattr(inner, "lm_head"):
        return "not a causal LM with model.layers and lm_head"
    return None


def default_decode_dtype(model: Any) -> torch.dtype:
    """bfloat16 on a CPU with native bf16 dot products (AVX512-BF16), where it halves the bytes each decode step
    reads; otherwise the model's own dtype."""
    param = next(base_model(model).parameters())
    native_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    if param.device.type == "cpu" and native_bf16():
        return torch.bfloat16
    return param.dtype


# --------------------------------------------------------------------------------------------------------------
# The KV cache
# --------------------------------------------------------------------------------------------------------------


class KVCache:
    """Keys and values of every layer in preallocated buffers ``[B, kv_heads, capacity, head_dim]``.

    Columns ``begin:end`` are in use; all rows share columns (prompts are left padded), ``valid[b, c]`` says
    whether column ``c`` holds a real token of row ``b``. Appending writes in place; the buffers double when full.
    """

    def __init__(self, layers: int, batch: int, kv_heads: int, head_dim: int, capacity: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        shape = (batch, kv_heads, max(capacity, 1), head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.valid = torch.zeros((batch, shape[2]), dtype=torch.bool, device=device)
        self.begin = 0
        self.end = 0

    @property
    def batch(self) -> int:
        return self.valid.shape[0]

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    @property
    def width(self) -> int:
        return self.end - self.begin

    def reserve(self, columns: int) -> None:
        """Make room for ``columns`` more columns after ``end``: when full, the buffers double (at least) and the
        columns in use move to the front."""
        if self.end + columns <= self.capacity:
            return
        width = self.width
        capacity = max(width + columns, 2 * self.capacity)
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                new = torch.empty((old.shape[0], old.shape[1], capacity, old.shape[3]), dtype=old.dtype, device=old.device)
                new[:, :, :width] = old[:, :, self.begin : self.end]
                store[i] = new
        valid = torch.zeros((self.batch, capacity), dtype=torch.bool, device=self.valid.device)
        valid[:, :width] = self.valid[:, self.begin : self.end]
        self.valid, self.begin, self.end = valid, 0, width

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices into the batch), in that order; copies only the columns in use."""
        begin, end = self.begin, self.end
        for store in (self.keys, self.values):
            for i, buf in enumerate(store):
                new = torch.empty((len(rows), *buf.shape[1:]), dtype=buf.dtype, device=buf.device)
                new[:, :, begin:end] = buf[:, :, begin:end].index_select(0, rows)
                store[i] = new
        self.valid = self.valid.index_select(0, rows)

    def trim(self) -> None:
        """Drop leading columns that are padding in every row (after rows have left the batch)."""
        used = self.valid[:, self.begin : self.end].any(dim=0).nonzero()
        self.begin += int(used[0]) if len(used) else self.width

    def extend(self, other: KVCache) -> None:
        """Append ``other``'s rows to the batch, right-aligned with ours (both are left padded)."""
        width = max(self.width, other.width)
        capacity = max(self.capacity - self.begin, other.capacity - other.begin, width)
        batch = self.batch + other.batch
        k0 = self.keys[0]
        shape = (batch, k0.shape[1], capacity, k0.shape[3])
        valid = torch.zeros((batch, capacity), dtype=torch.bool, device=self.valid.device)
        for store_name in ("keys", "values"):
            mine, theirs = getattr(self, store_name), getattr(other, store_name)
            for i in range(len(mine)):
                new = torch.zeros(shape, dtype=mine[i].dtype, device=mine[i].device)
                new[: self.batch, :, width - self.width : width] = mine[i][:, :, self.begin : self.end]
                new[self.batch :, :, width - other.width : width] = theirs[i][:, :, other.begin : other.end]
                mine[i] = new
        valid[: self.batch, width - self.width : width] = self.valid[:, self.begin : self.end]
        valid[self.batch :, width - other.width : width] = other.valid[:, other.begin : other.end]
        self.valid, self.begin, self.end = valid, 0, width


# --------------------------------------------------------------------------------------------------------------
# The decoder
# --------------------------------------------------------------------------------------------------------------


class _Linear:
    """``x @ weight.T + bias`` with the weight prepacked for oneDNN on CPUs (torch's mkldnn linear, the kernel
    torch.compile's CPU backend uses for frozen weights): packing once spares each call re-laying out the weight,
    which measured about 2x faster at decode shapes (1-32 rows) in float32 and bfloat16 alike. Elsewhere (GPUs, a
    torch without mkldnn) it is ``F.linear``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, rows_hint: int = 16) -> None:
        self.weight, self.bias, self.packed = weight, bias, None
        if weight.device.type == "cpu" and _mkldnn_linear_ok(weight.dtype):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


_MKLDNN_OK: dict[torch.dtype, bool] = {}


def _mkldnn_linear_ok(dtype: torch.dtype) -> bool:
    """Whether this torch build has the prepacked mkldnn linear for ``dtype`` and it agrees with ``F.linear``."""
    if dtype not in _MKLDNN_OK:
        ok = False
        try:
            if torch.backends.mkldnn.is_available() and dtype in (torch.float32, torch.bfloat16):
                weight, x = torch.randn(8, 16).to(dtype), torch.randn(3, 16).to(dtype)
                packed = torch.ops.mkldnn._reorder_linear_weight(weight, 16)
                got = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
                ok = bool(torch.allclose(got.float(), F.linear(x, weight).float(), atol=1e-2, rtol=1e-2))
        except (RuntimeError, AttributeError):
            ok = False
        _MKLDNN_OK[dtype] = ok
    return _MKLDNN_OK[dtype]


@dataclass
class _Layer:
    input_norm: torch.Tensor
    qkv: _Linear
    o: _Linear
    post_norm: torch.Tensor
    gate_up: _Linear
    down: _Linear


def _effective(linear: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of a linear layer as the forward pass applies it: a PEFT LoRA layer with its active,
    enabled adapters added (unless already merged)."""
    base = getattr(linear, "base_layer", None)
    if base is None:
        return linear.weight, getattr(linear, "bias", None)
    weight = base.weight
    if not getattr(linear, "disable_adapters", False) and not getattr(linear, "merged", False):
        for name in linear.active_adapters:
            if name in getattr(linear, "lora_A", {}):
                weight = weight + linear.get_delta_weight(name)
    return weight, getattr(base, "bias", None)


class LeanDecoder:
    """Prefill and decode for one supported model; see the module docstring."""

    def __init__(self, model: Any, *, dtype: torch.dtype | None = None, head: bool = True) -> None:
        reason = unsupported_reason(model, head=head)
        if reason is not None:
            raise ValueError(f"the lean decoder cannot run this model: {reason}")
        self.model = model
        self.with_head = head  # False: the trunk only (hidden_states), no output head packed
        self.dtype = dtype if dtype is not None else default_decode_dtype(model)
        inner = base_model(model)
        config = inner.config
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.eps = float(config.rms_norm_eps)
        self.scale = self.head_dim**-0.5
        self._fingerprint: tuple[Any, ...] | None = None
        self._layers: list[_Layer] = []
        self._embed = torch.empty(0)
        self._norm = torch.empty(0)
        self._head: _Linear | None = None

    @property
    def device(self) -> torch.device:
        return next(base_model(self.model).parameters()).device

    # ---- weights ----------------------------------------------------------------------------------------------

    def _current_fingerprint(self) -> tuple[Any, ...]:
        parts: list[Any] = [_optimizer_steps]
        parts.extend((p.data_ptr(), p._version) for p in self.model.parameters())
        parts.extend(
            bool(getattr(m, "disable_adapters", False)) for m in self.model.modules() if hasattr(m, "lora_A")
        )
        return tuple(parts)

    def refresh(self) -> None:
        """Repack the weights if the model changed since the last pack (cheap when it did not)."""
        fingerprint = self._current_fingerprint()
        if fingerprint == self._fingerprint:
            return
        self._pack()
        self._fingerprint = fingerprint

    @torch.no_grad()
    def _pack(self) -> None:
        inner = base_model(self.model)
        dt = self.dtype

        def fused(*linears: Any) -> _Linear:
            """One matmul for several projections of the same input: their weights stacked by output row. Each
            part is converted straight into its rows of one buffer (PPO repacks every step: a float32
            concatenation first took most of the 0.5 s a repack cost for 135M)."""
            pairs = [_effective(lin) for lin in linears]
            rows = sum(w.shape[0] for w, _ in pairs)
            weight = torch.empty((rows, pairs[0][0].shape[1]), dtype=dt, device=pairs[0][0].device)
            bias = None
            if any(b is not None for _, b in pairs):
                bias = torch.zeros(rows, dtype=dt, device=weight.device)
            start = 0
            for w, b in pairs:
                part = slice(start, start + w.shape[0])
                weight[part].copy_(w.detach())
                if b is not None and bias is not None:
                    bias[part].copy_(b.detach())
                start = part.stop
            return _Linear(weight, bias)

        layers = []
        for layer in inner.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            layers.append(
                _Layer(
                    input_norm=layer.input_layernorm.weight.detach().float(),
                    qkv=fused(attn.q_proj, attn.k_proj, attn.v_proj),
                    o=fused(attn.o_proj),
                    post_norm=layer.post_attention_layernorm.weight.detach().float(),
                    gate_up=fused(mlp.gate_proj, mlp.up_proj),
                    down=fused(mlp.down_proj),
                )
            )
        self._layers = layers
        self._embed = _effective(inner.model.embed_tokens)[0].detach()
        self._norm = inner.model.norm.weight.detach().float()
        self._head = fused(inner.lm_head) if self.with_head else None

    # ---- forward ------------------------------------------------------------------------------------------------

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        return KVCache(len(base_model(self.model).model.layers), batch, self.kv_heads, self.head_dim, capacity,
                       self.dtype, self.device)

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # One fused kernel for transformers' weight * (x * rsqrt(mean(x^2) + eps)), in float32 as it does.
        return F.rms_norm(x, weight.shape, weight, self.eps)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, cache: KVCache,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        """Run ``input_ids`` [B, T] (at RoPE ``positions`` [B, T]) after what ``cache`` holds, append their keys and
        values, and return the next-token logits of the last column [B, vocab] in float32. ``valid`` [B, T] marks
        real tokens (False = left padding); by default all are real."""
        x = self._blocks(input_ids, positions, cache, valid)
        return self.logits(self._rms(x[:, -1], self._norm))

    @torch.inference_mode()
    def hidden_states(self, input_ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """Final (normed) hidden states [B, T, hidden] of left-padded sequences, in float32: a no-grad
        forward pass over whole sequences (PPO's reference log-probs) that keeps no cache."""
        cache = self.new_cache(input_ids.shape[0], input_ids.shape[1])
        return self._rms(self._blocks(input_ids, positions, cache, valid), self._norm)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output head on final hidden states, in float32."""
        if self._fingerprint is None:
            self.refresh()
        if self._head is None:
            raise ValueError("this LeanDecoder was built with head=False (the trunk only)")
        return self._head(hidden.to(self.dtype)).float()

    def _blocks(self, input_ids: torch.Tensor, positions: torch.Tensor, cache: KVCache,
                valid: torch.Tensor | None) -> torch.Tensor:
        """The residual stream after the last block (before the final norm); appends to ``cache``."""
        if self._fingerprint is None:
            self.refresh()
        batch, length = input_ids.shape
        if batch != cache.batch:
            raise ValueError(f"{batch} rows of input for a cache of {cache.batch} rows")
        dt = self.dtype
        cache.reserve(length)
        start, stop = cache.end, cache.end + length
        cache.valid[:, start:stop] = True if valid is None else valid
        cache.end = stop
        inner = base_model(self.model)
        x = F.embedding(input_ids, self._embed).float()
        cos, sin = inner.model.rotary_emb(x, positions)  # [B, T, D] float32, the model's own RoPE variant
        cos, sin = cos[:, None].to(dt), sin[:, None].to(dt)
        keys_valid = cache.valid[:, cache.begin : stop]
        if length == 1:
            mask = torch.zeros(keys_valid.shape, dtype=torch.float32, device=x.device)
            mask = mask.masked_fill_(~keys_valid, float("-inf"))[:, None, None, :]  # [B, 1, 1, S]
        else:
            # Causal within the new block, all earlier valid columns before it; every query may see itself, so a
            # padding row never has an empty softmax (its output is never used).
            width = stop - cache.begin
            cols = torch.arange(width, device=x.device)
            rows = torch.arange(start - cache.begin, width, device=x.device)
            causal = cols[None, :] <= rows[:, None]  # [T, S]
            mask4 = (causal[None] & keys_valid[:, None, :]) | (cols[None, None, :] == rows[None, :, None])
            mask = mask4[:, None]  # [B, 1, T, S] bool
        h, kv, d = self.heads, self.kv_heads, self.head_dim
        group = h // kv
        q_size, kv_size = h * d, kv * d
        for i, layer in enumerate(self._layers):
            y = self._rms(x, layer.input_norm).to(dt)
            qkv = layer.qkv(y)
            # RoPE on the queries and keys at once (they are adjacent in the fused output): fewer small ops.
            qk = qkv[..., : q_size + kv_size].view(batch, length, h + kv, d).transpose(1, 2)
            qk = qk * cos + _rotate_half(qk) * sin
            q, k = qk[:, :h], qk[:, h:]
            v = qkv[..., q_size + kv_size :].view(batch, length, kv, d).transpose(1, 2)
            cache.keys[i][:, :, start:stop] = k
            cache.values[i][:, :, start:stop] = v
            keys = cache.keys[i][:, :, cache.begin : stop]
            values = cache.values[i][:, :, cache.begin : stop]
            if length == 1:
                # One query per head, and the query heads of a group share a key head: [B, kv, group, D] against
                # [B, kv, S, D]. Two small matmuls beat torch's CPU attention kernels for a single query (measured:
                # the flash kernel took ~200 us a layer at batch 1, these ~40 us).
                scores = torch.matmul(q.reshape(batch, kv, group, d), keys.transpose(-1, -2)).float() * self.scale
                out = torch.matmul(torch.softmax(scores + mask, dim=-1).to(dt), values).reshape(batch, length, q_size)
            else:
                out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale,
                                                     enable_gqa=group > 1)
                out = out.transpose(1, 2).reshape(batch, length, q_size)
            x = x + layer.o(out).float()
            y = self._rms(x, layer.post_norm).to(dt)
            gate, up = layer.gate_up(y).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up).float()
        return x


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


__all__ = ["KVCache", "LeanDecoder", "base_model", "default_decode_dtype", "unsupported_reason"]
