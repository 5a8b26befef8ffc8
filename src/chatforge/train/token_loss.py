"""Cross-entropy of a causal LM at chosen positions, with the output head computed only there.

In SFT only assistant tokens carry a loss, and the output head (hidden -> vocabulary) is the costliest layer of a
small model: Gemma 3 270M has a 262k-token vocabulary, so its head is larger than all its transformer blocks. So
the trainer runs the decoder, gathers the hidden states whose next token is a target, and applies the head to
those rows only, in chunks so that the (rows x vocabulary) logits never exist all at once.

For a plain bias-free ``nn.Linear`` head (Llama, Gemma, SmolLM2, tied or not) a fused autograd function computes
each chunk's loss and its gradients in one pass (softmax minus one-hot, through Gemma's final logit soft-capping
when the config sets it), so the backward pass costs no second look at the logits. Any other head (say a LoRA
adapter on ``lm_head``) takes a generic path: checkpointed chunks through the module itself. The loss is always
computed in float32, whatever precision the matmuls ran in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from chatforge.decoder import base_model

# Logits elements per chunk (float32: 256 MiB). Gemma's 262k vocabulary gives chunks of 256 rows.
CHUNK_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class LMParts:
    """The pieces of a causal LM the loss needs: the decoder stack, the output head and its soft-capping."""

    decoder: nn.Module
    head: nn.Module
    softcap: float | None


def lm_parts(model: Any) -> LMParts:
    """Split a causal LM (possibly wrapped by peft) into decoder, head and logit soft-capping."""
    base = base_model(model)
    decoder = base.get_decoder()
    head = base.get_output_embeddings()
    if decoder is base or head is None:
        raise TypeError(f"{type(base).__name__} is not a causal LM with a separate decoder and output head")
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    softcap = getattr(config, "final_logit_softcapping", None)
    return LMParts(decoder, head, float(softcap) if softcap else None)


def hidden_at(
    decoder: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor, index: torch.Tensor
) -> torch.Tensor:
    """Final hidden states (k, hidden) at the flat positions ``index`` of a packed batch.

    No attention mask and no cache: that is how transformers recognises packed sequences from the position ids
    and gives each its own causal block (a 2D mask or a cache object would switch that detection off)."""
    out = decoder(input_ids=input_ids, position_ids=position_ids, attention_mask=None, use_cache=False)
    hidden = out.last_hidden_state
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)


def _capped(logits: torch.Tensor, softcap: float | None) -> torch.Tensor:
    return logits if softcap is None else torch.tanh(logits / softcap) * softcap


class _FusedHeadCrossEntropy(torch.autograd.Function):
    """sum_i CE(softcap(hidden_i @ weight.T), target_i), with the gradients worked out chunk by chunk in forward."""

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float | None,
        compute_dtype: torch.dtype, chunk: int,
    ) -> torch.Tensor:
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight else None
        )
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        w = weight.to(compute_dtype)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk].to(compute_dtype)
            t = targets[start : start + chunk]
            raw = (h @ w.T).float()
            if softcap is None:
                tanh, logits = None, raw
            else:
                tanh = torch.tanh(raw / softcap)
                logits = tanh * softcap
            logsumexp = torch.logsumexp(logits, dim=-1)
            rows = torch.arange(t.shape[0], device=t.device)
            total += (logsumexp - logits[rows, t]).sum()
            # d CE / d logits = softmax - onehot; computed in place over the logits to keep one chunk in memory.
            grad = logits.sub_(logsumexp[:, None]).exp_()
            grad[rows, t] -= 1.0
            if tanh is not None:  # d(c * tanh(z / c)) / dz = 1 - tanh^2
                grad.mul_(1.0 - tanh * tanh)
            grad_c = grad.to(compute_dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk] = (grad_c @ w).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += (grad_c.T @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_total.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_total).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None, None


class _FusedHeadLogprobs(torch.autograd.Function):
    """Per row, log p(target) under softmax(softcap(hidden @ weight.T) / temperature), and, when ``with_entropy``,
    the distribution's entropy (for monitoring: no gradient; else an empty tensor). The softmax is worked out once
    per chunk and, when ``keep`` (a gradient is wanted), kept for the backward pass, which is then
    (onehot - p) * grad. Against the unfused log_softmax + gather + a separate entropy (softmax, logsumexp,
    product), each a fresh 100 MB tensor at 512 response tokens x SmolLM2's 49k vocabulary, the head's
    forward + backward measured 0.82 against 0.89 s side by side (its three matmuls are most of either)."""

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float | None,
        temperature: float, compute_dtype: torch.dtype, chunk: int, with_entropy: bool, keep: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w = weight.to(compute_dtype)
        logprobs = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        entropy = torch.empty(hidden.shape[0] if with_entropy else 0, dtype=torch.float32, device=hidden.device)
        probs, tanhs = [], []
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start : start + chunk].to(compute_dtype), targets[start : start + chunk]
            z = (h @ w.T).float()
            tanh = None
            if softcap is not None:
                tanh = torch.tanh(z / softcap)
                z = torch.mul(tanh, softcap, out=z)
            if temperature != 1.0:
                z.div_(temperature)
            z.sub_(torch.logsumexp(z, dim=-1, keepdim=True))  # log-probabilities, in place
            rows = torch.arange(t.shape[0], device=t.device)
            logprobs[start : start + t.shape[0]] = z[rows, t]
            if not (keep or with_entropy):
                continue
            p = z.exp()
            if with_entropy:
                entropy[start : start + t.shape[0]] = -torch.linalg.vecdot(p, z)
            if keep:
                probs.append(p)
                tanhs.append(tanh)
        ctx.save_for_backward(hidden, weight, targets)
        ctx.probs, ctx.tanhs = probs, tanhs  # consumed (overwritten) by the one backward pass
        ctx.temperature, ctx.compute_dtype, ctx.chunk = temperature, compute_dtype, chunk
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx: Any, grad_logprobs: torch.Tensor, _grad_entropy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, targets = ctx.saved_tensors
        if ctx.probs is None:
            raise RuntimeError("_FusedHeadLogprobs supports a single backward pass (retain_graph is not supported)")
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dtype = ctx.compute_dtype
        w = weight.to(dtype)
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight else None
        for i, start in enumerate(range(0, hidden.shape[0], ctx.chunk)):
            p, tanh = ctx.probs[i], ctx.tanhs[i]
            g = grad_logprobs[start : start + p.shape[0]].float()
            t = targets[start : start + p.shape[0]]
            # d log p_t / d z = onehot_t - p, times the incoming gradient; in place over the kept softmax
            grad = p.mul_(-g[:, None])
            grad[torch.arange(t.shape[0], device=t.device), t] += g
            if ctx.temperature != 1.0:
                grad.div_(ctx.temperature)
            if tanh is not None:  # d(c * tanh(z / c)) / dz = 1 - tanh^2
                grad.mul_(1.0 - tanh * tanh)
            grad_c = grad.to(dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + p.shape[0]] = (grad_c @ w).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += (grad_c.T @ hidden[start : start + p.shape[0]].to(dtype)).float()
        ctx.probs = ctx.tanhs = None
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None, None, None


def head_logprobs(
    head: nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    *,
    softcap: float | None = None,
    temperature: float = 1.0,
    compute_dtype: torch.dtype | None = None,
    with_entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(log-probs of ``targets``, entropies or None without ``with_entropy``) in float32 of the output head's
    softmax at ``temperature``, fused; the entropy carries no gradient. None when the head is not a plain bias-free
    ``nn.Linear`` (the caller then takes the generic path through the module)."""
    weight = getattr(head, "weight", None)
    if type(head) is not nn.Linear or head.bias is not None or weight is None:
        return None
    chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
    # (inside a Function's forward grad mode is always off and needs_input_grad ignores no_grad: decide here
    # whether the softmax must be kept for a backward pass)
    keep = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    with torch.autocast(hidden.device.type, enabled=False):
        logprobs, entropy = _FusedHeadLogprobs.apply(
            hidden, weight, targets, softcap, float(temperature), compute_dtype or weight.dtype, chunk, with_entropy,
            keep,
        )
    return logprobs, entropy if with_entropy else None


def _chunk_loss(
    head: nn.Module, softcap: float | None, hidden: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    logits = _capped(head(hidden).float(), softcap)
    return F.cross_entropy(logits, targets, reduction="sum")


def head_cross_entropy(
    head: nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    *,
    softcap: float | None = None,
    compute_dtype: torch.dtype | None = None,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Summed float32 cross-entropy of ``softcap(head(hidden))`` against ``targets``.

    ``compute_dtype`` is the precision of the head matmul (bfloat16 under bf16 training; default: the head's own
    dtype). Rows are processed ``chunk_rows`` at a time (default: about 64M logits per chunk)."""
    if hidden.shape[0] == 0:
        return hidden.sum(dtype=torch.float32) * 0.0
    weight = getattr(head, "weight", None)
    vocab = weight.shape[0] if weight is not None else int(getattr(head, "out_features", 1 << 16))
    chunk = chunk_rows or max(1, CHUNK_ELEMENTS // vocab)
    device_type = hidden.device.type
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    if type(head) is nn.Linear and head.bias is None and weight is not None:
        dtype = compute_dtype or weight.dtype
        # The fused path picks its own precision; the ambient autocast must not re-cast its matmuls.
        with torch.autocast(device_type, enabled=False):
            if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
                fused: torch.Tensor = _FusedHeadCrossEntropy.apply(
                    hidden, weight, targets, softcap, dtype, chunk
                )
                return fused
            w = weight.to(dtype)
            for h, t in zip(hidden.split(chunk), targets.split(chunk), strict=True):
                total += F.cross_entropy(_capped((h.to(dtype) @ w.T).float(), softcap), t, reduction="sum")
            return total
    for h, t in zip(hidden.split(chunk), targets.split(chunk), strict=True):
        if torch.is_grad_enabled():
            # Recompute the chunk's logits in backward instead of keeping every chunk's logits alive.
            total = total + checkpoint(_chunk_loss, head, softcap, h, t, use_reentrant=False)
        else:
            total = total + _chunk_loss(head, softcap, h, t)
    return total


def packed_lm_loss(
    parts: LMParts,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    target_index: torch.Tensor,
    targets: torch.Tensor,
    *,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Summed float32 next-token cross-entropy over the targets of a packed batch (see ``packing.collate``)."""
    hidden = hidden_at(parts.decoder, input_ids, position_ids, target_index)
    return head_cross_entropy(parts.head, hidden, targets, softcap=parts.softcap, compute_dtype=compute_dtype)
