"""What every chatforge trainer needs besides its loss and its run directory: processes, precision, randomness.

* ``Distributed``: the process group under ``torchrun`` (gloo on CPU), or a one-process stand-in, with the three
  collectives the trainers use;
* ``bf16_supported``: whether bfloat16 autocast is fast here (measured: a CPU without native bf16 emulates it, and
  some torch builds are slower in bf16 even with it);
* ``adamw``: the optimizer every trainer uses, torch's fused AdamW where it can run; ``warmup_schedule`` for its
  learning rate; ``optimizer_step`` (clip, step, clear) and ``gradient_sync`` (DDP's all-reduce once a step);
* ``rng_state`` / ``set_rng_state``: every RNG a training step draws from, for exact resumption.

The run directory (checkpoints, metrics, the final model) is ``checkpoint``'s.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import random
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

# --------------------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distributed:
    """Rank and world size of this process; ``owns_group`` when it was this object that started the group."""

    rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @classmethod
    def setup(cls, device: torch.device) -> Distributed:
        """Join the process group torchrun describes in the environment (WORLD_SIZE, RANK, MASTER_ADDR, ...)."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), owns_group=False)
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        dist.init_process_group(backend="gloo" if device.type == "cpu" else "nccl")
        return cls(dist.get_rank(), dist.get_world_size(), owns_group=True)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over all processes (float64, so token counts stay exact)."""
        tensor = torch.tensor(list(values), dtype=torch.float64)
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return [float(v) for v in tensor.tolist()]

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------------------
# Precision
# --------------------------------------------------------------------------------------------------------------


def _cpu_flags() -> set[str]:
    system = platform.system()
    if system == "Linux":
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
        flags: set[str] = set()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("flags", "features"):  # x86 says flags, ARM says Features
                flags.update(value.split())
        return flags
    if system == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return set()
        return {"bf16"} if out == "1" else set()
    return set()


@functools.cache
def _cpu_bf16_supported() -> bool:
    # AVX512-BF16 and AMX (x86) or the BF16 extension (ARM) can make bf16 matmuls fast; without them PyTorch
    # emulates bf16 and autocast makes training slower. Even with the flag, whether torch's CPU kernels use it
    # depends on the build: torch 2.13's CPU wheel on an AVX512-BF16 Xeon trained 2.5x *slower* under bf16
    # autocast than in float32. So measure: bf16 only where a training-sized matmul is clearly faster in it.
    if not _cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"}:
        return False
    try:
        return _matmul_seconds(torch.bfloat16) * 1.25 < _matmul_seconds(torch.float32)
    except RuntimeError:
        return False


def _matmul_seconds(dtype: torch.dtype, repeats: int = 3) -> float:
    """Best time of a (512 x 1024) @ (1024 x 1024) matmul: the shape of a training step's projections."""
    import time

    a = torch.randn(512, 1024).to(dtype)
    b = torch.randn(1024, 1024).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


def adamw(params: Any, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW, fused (one kernel over all parameters) where every parameter is a float tensor on a CPU or CUDA
    device: on the CPU torch's default per-tensor loop measured 0.69 s a step for a 135M model, the fused kernel
    0.07 s. Elsewhere (MPS, an older torch) torch's default implementation."""
    groups = list(params)
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(tensors) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in tensors)
    if fused:
        try:
            return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError):
            pass
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def adamw_with_decay(trainable: Sequence[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """``adamw`` with weight decay on the matrices only, not on biases and norm scales."""
    return adamw(
        [
            {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=lr,
    )


def warmup_schedule(
    optimizer: torch.optim.Optimizer, warmup: int, *, decay: str = "constant", total_steps: int | None = None
) -> Any:
    """A linear warmup over ``warmup`` steps, then the learning rate constant or, with ``decay="cosine"``, down a
    cosine to 0 at ``total_steps``."""
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    if decay == "cosine":
        assert total_steps is not None
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def optimizer_step(
    trainable: Sequence[torch.nn.Parameter], optimizer: torch.optim.Optimizer, scheduler: Any, max_grad_norm: float | None
) -> float:
    """Clip the gradient norm to ``max_grad_norm`` (None: no clipping), step the optimizer and the schedule, clear
    the gradients. Returns the gradient norm before clipping."""
    limit = max_grad_norm if max_grad_norm is not None else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, limit))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def gradient_sync(module: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
    """Around one micro-batch's backward: under DistributedDataParallel the gradients are all-reduced only at the
    ``last`` micro-batch of a step (``no_sync`` for the others); elsewhere nothing."""
    no_sync = getattr(module, "no_sync", None)
    return contextlib.nullcontext() if last or no_sync is None else no_sync()


def use_bf16(setting: bool | str, device: torch.device) -> bool:
    """A config's ``bf16`` (True, False or "auto") as a decision: "auto" means where it runs natively."""
    return bf16_supported(device) if setting == "auto" else bool(setting)


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 autocast runs natively (fast) on ``device``."""
    if device.type == "cpu":
        return _cpu_bf16_supported()
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    return False


# --------------------------------------------------------------------------------------------------------------
# Randomness
# --------------------------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The state of every RNG training draws from (Python's, torch's CPU generator, CUDA's when present)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
