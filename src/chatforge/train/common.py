"""What every chatforge trainer needs besides its loss: processes, precision, randomness, files, metrics.

* ``Distributed``: the process group under ``torchrun`` (gloo on CPU), or a one-process stand-in, with the three
  collectives the trainers use;
* ``bf16_supported``: whether bfloat16 autocast is fast here (measured: a CPU without native bf16 emulates it, and
  some torch builds are slower in bf16 even with it);
* ``adamw``: the optimizer every trainer uses, torch's fused AdamW where it can run;
* ``rng_state`` / ``set_rng_state``: every RNG a training step draws from, for exact resumption;
* ``write_dir_atomically`` (from ``chatforge.atomic``): build a directory aside and rename it into place, so a
  killed run never leaves a half-written checkpoint where a resume would look;
* ``MetricsLog``: one JSON object per line in ``metrics.jsonl`` (plus TensorBoard when it is installed);
* ``checkpoints`` / ``latest_checkpoint``: the ``checkpoint-<step>`` directories of a run.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from chatforge.atomic import remove_leftovers, write_text_atomically
from chatforge.atomic import (
    write_dir_atomically as write_dir_atomically,  # trainers call common.write_dir_atomically
)

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


_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output_dir: Path, *, marker: str) -> list[tuple[int, Path]]:
    """(step, path) of the complete ``checkpoint-<step>`` directories (those holding ``marker``), oldest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for entry in output_dir.iterdir():
        match = _CHECKPOINT.match(entry.name)
        if match and (entry / marker).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(output_dir: Path, *, marker: str) -> Path | None:
    found = checkpoints(output_dir, marker=marker)
    return found[-1][1] if found else None


# --------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------


def _tensorboard_writer(log_dir: Path) -> Any | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(log_dir))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file; a torn last line (a killed writer) is ignored."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLog:
    """Append-only ``metrics.jsonl``; each record has a ``step``. Inactive (writes nothing) off the main process."""

    def __init__(self, path: Path, *, active: bool = True, tensorboard: bool = True) -> None:
        self.path = path
        self.active = active
        self._tensorboard = (
            _tensorboard_writer(path.parent / "tensorboard") if active and tensorboard else None
        )
        self._handle: Any = None

    def keep_until(self, step: int) -> None:
        """Drop records after ``step``: a resumed run redoes those steps and logs them again."""
        if not self.active or not self.path.exists():
            return
        kept = [r for r in read_jsonl(self.path) if int(r.get("step", 0)) <= step]
        write_text_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def clear(self) -> None:
        if self.active and self.path.exists():
            self.path.unlink()

    def write(self, record: Mapping[str, Any]) -> None:
        if not self.active:
            return
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the whole run)
        self._handle.write(json.dumps(dict(record)) + "\n")
        self._handle.flush()
        if self._tensorboard is not None:
            prefix = str(record.get("kind", "train"))
            for key, value in record.items():
                if key not in ("step", "kind") and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tensorboard.add_scalar(f"{prefix}/{key}", value, int(record["step"]))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


# --------------------------------------------------------------------------------------------------------------
# Run directories, and resuming from a checkpoint
# --------------------------------------------------------------------------------------------------------------


def prepare_run_dir(
    output_dir: Path,
    dist: Distributed,
    *,
    resume: bool,
    overwrite: bool,
    what: str,
    state_file: str,
    markers: Sequence[str] = ("metrics.jsonl", "final"),
    files: Sequence[str] = ("metrics.jsonl", "run.json"),
) -> None:
    """Make ``output_dir`` ready for a run. An earlier run there (any of ``markers``, or a checkpoint) is refused
    unless the run resumes it or ``overwrite`` says to delete it (its ``files``, final model, adapter, TensorBoard
    logs and checkpoints). Rank 0 decides; every process learns the answer, so none is left waiting."""
    refusal = None
    if dist.is_main:
        earlier = [name for name in markers if (output_dir / name).exists()]
        earlier += [p.name for _, p in checkpoints(output_dir, marker=state_file)]
        if earlier and not resume and not overwrite:
            refusal = (
                f"{output_dir} already holds a {what} run ({', '.join(sorted(earlier)[:3])}); "
                "resume it (resume=True, --resume) or start over (overwrite=True, --overwrite)"
            )
        elif earlier and not resume:
            for name in files:
                (output_dir / name).unlink(missing_ok=True)
            for name in ("final", "adapter", "tensorboard"):
                shutil.rmtree(output_dir / name, ignore_errors=True)
            for _, path in checkpoints(output_dir, marker=state_file):
                shutil.rmtree(path)
        if refusal is None:
            output_dir.mkdir(parents=True, exist_ok=True)
            remove_leftovers(output_dir)
    refusal = dist.broadcast(refusal)
    if refusal is not None:
        raise FileExistsError(refusal)


def load_weights(model: torch.nn.Module, directory: Path) -> None:
    """Load a checkpoint's safetensors into ``model`` in place (the optimizer keeps pointing at the same tensors)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        state.update(load_file(path))
    known = model.state_dict()
    # Tied weights (lm_head = embed_tokens) are saved once; named_parameters() lists each tensor once too.
    missing = [name for name, _ in model.named_parameters() if name not in state]
    unexpected = [name for name in state if name not in known]
    if missing or unexpected:
        raise ValueError(
            f"{directory} does not match the model being trained (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.load_state_dict(state, strict=False)


def read_trainer_state(
    checkpoint: Path,
    *,
    state_file: str,
    version: int,
    plan: Mapping[str, Any],
    error: type[ValueError],
    hash_note: str,
) -> dict[str, Any]:
    """A checkpoint's trainer state, refused (with ``error``) if another chatforge version wrote it or if the run
    would not continue the same data order: ``plan`` holds what decides that order, ``hash_note`` says which of its
    entries is a hash of what."""
    state: dict[str, Any] = torch.load(checkpoint / state_file, map_location="cpu", weights_only=True)
    if state.get("version") != version:
        raise error(f"{checkpoint} was written by an incompatible chatforge version")
    changed = [f"{key}: {state['plan'].get(key)!r} -> {value!r}" for key, value in plan.items() if state["plan"].get(key) != value]
    if changed:
        raise error(
            f"cannot resume from {checkpoint}: the run would not continue the same data order because these "
            f"changed: {'; '.join(changed)} (world_size is the number of processes, {hash_note}); restore them, "
            "or start over with overwrite"
        )
    return state


def restore_weights(model: torch.nn.Module, checkpoint: Path, *, lora: bool, error: type[ValueError]) -> None:
    """Put a checkpoint's trained weights back into ``model`` in place: its LoRA adapter, or the full model."""
    if not lora:
        load_weights(model, checkpoint / "model")
        return
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(checkpoint / "adapter" / "adapter_model.safetensors"))
    unexpected = list(getattr(result, "unexpected_keys", []))
    if unexpected:
        raise error(f"{checkpoint}/adapter does not match this model: {unexpected[:3]}")
