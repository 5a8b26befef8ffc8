"""The run directory of a trainer: one implementation for SFT, the reward model, PPO and DPO.

A run directory holds:

* ``run.json``: what the run is (config, processes, data), written when training starts;
* ``metrics.jsonl``: one record per step, and per evaluation (``MetricsLog``);
* ``checkpoint-<step>/``: ``model/`` (a Hugging Face checkpoint with the chat template, merged when training
  LoRA), ``adapter/`` (LoRA), ``trainer_state.json`` (a summary to read) and ``trainer_state.pt`` (optimizer,
  scheduler, every process's RNG, the step and the data plan; written last, so its presence marks a complete
  checkpoint). Each is built aside and renamed into place (``chatforge.atomic``);
* ``final/``: the last checkpoint's model, hard-linked (and ``adapter/`` with LoRA).

The functions here find, check and restore checkpoints (``checkpoints``, ``prepare_run_dir``,
``read_trainer_state``, ``restore_weights``) and write the metrics (``MetricsLog``, plus TensorBoard when it is
installed).

``CheckpointedTrainer`` is the base class that does all of this. It is a base class rather than a helper object
because what it saves and restores is the trainer itself (model, optimizer, scheduler, step, RNG, metrics log) and
``train()`` is the same sequence for every trainer: guard the directory, open the log, resume, run, close. A
subclass sets the attributes listed on the class, implements ``_run`` (its loop) and ``plan_signature`` (what
decides its data order), and adds what is its own through hooks: ``_extra_state`` / ``_restore_extra_state``
(more entries of ``trainer_state.pt``), ``_checkpoint_summary`` (``trainer_state.json``) and ``_fill_checkpoint`` /
``_fill_final`` (more files). Its loop uses ``_distributed`` (DDP under torchrun), ``_progress_bar``, ``_log_step``
(the metrics record and the bar), ``_due`` (a save or evaluation step), ``save_checkpoint``, ``publish_final`` and
``write_run_info``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch

from chatforge import models
from chatforge.atomic import remove_leftovers, write_dir_atomically, write_text_atomically
from chatforge.quiet import transformers_quietly
from chatforge.train import common

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"  # its presence marks a complete checkpoint
STATE_VERSION = 1

ResultT = TypeVar("ResultT")


class RunConfig(Protocol):
    """The config fields the run directory reads (every trainer's config has them)."""

    output_dir: str
    seed: int
    lora: bool
    save_every: int | None
    save_limit: int | None
    resume: bool
    overwrite: bool
    threads: int | None
    tensorboard: bool
    progress: bool

    def to_dict(self) -> dict[str, Any]: ...


def link_tree(source: Path, target: Path) -> None:
    """Copy the directory ``source`` into ``target``, hard-linking the files where the file system allows."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)  # checkpoint files are never rewritten in place, so sharing them is safe
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, dirs_exist_ok=True, copy_function=link_or_copy)


# --------------------------------------------------------------------------------------------------------------
# Checkpoint directories
# --------------------------------------------------------------------------------------------------------------


_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the complete ``checkpoint-<step>`` directories (those holding ``STATE_FILE``), oldest
    first."""
    if not output_dir.is_dir():
        return []
    found = []
    for entry in output_dir.iterdir():
        match = _CHECKPOINT.match(entry.name)
        if match and (entry / STATE_FILE).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = checkpoints(output_dir)
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
    dist: common.Distributed,
    *,
    resume: bool,
    overwrite: bool,
    what: str,
    markers: Sequence[str] = ("metrics.jsonl", "final"),
    files: Sequence[str] = ("metrics.jsonl", "run.json"),
) -> None:
    """Make ``output_dir`` ready for a run. An earlier run there (any of ``markers``, or a checkpoint) is refused
    unless the run resumes it or ``overwrite`` says to delete it (its ``files``, final model, adapter, TensorBoard
    logs and checkpoints). Rank 0 decides; every process learns the answer, so none is left waiting."""
    refusal = None
    if dist.is_main:
        earlier = [name for name in markers if (output_dir / name).exists()]
        earlier += [p.name for _, p in checkpoints(output_dir)]
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
            for _, path in checkpoints(output_dir):
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
    plan: Mapping[str, Any],
    error: type[ValueError],
    hash_note: str,
) -> dict[str, Any]:
    """A checkpoint's trainer state, refused (with ``error``) if another chatforge version wrote it or if the run
    would not continue the same data order: ``plan`` holds what decides that order, ``hash_note`` says which of its
    entries is a hash of what."""
    state: dict[str, Any] = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    if state.get("version") != STATE_VERSION:
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


# --------------------------------------------------------------------------------------------------------------
# The trainer's side
# --------------------------------------------------------------------------------------------------------------


class CheckpointedTrainer(Generic[ResultT]):
    """A trainer whose run lives in ``config.output_dir``: ``train()`` guards the directory, resumes from its
    newest checkpoint when asked, runs the subclass's loop and closes the log and the process group."""

    # What the subclass says about itself.
    what: ClassVar[str]  # names the run in messages: "training", "reward-model", "PPO", "DPO"
    config_error: ClassVar[type[ValueError]]  # raised for a checkpoint this run cannot continue
    plan_note: ClassVar[str]  # which entry of the plan signature is a hash of what, for that message
    run_markers: ClassVar[tuple[str, ...]] = ("metrics.jsonl", "final")  # an earlier run left these
    run_files: ClassVar[tuple[str, ...]] = ("metrics.jsonl", "run.json")  # deleted when overwriting

    # What the subclass's __init__ sets besides what CheckpointedTrainer.__init__ does.
    model: Any  # the model being trained (the peft model with LoRA)
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    trainable: list[torch.nn.Parameter]  # what the optimizer updates
    bf16: bool  # whether the forward passes run under bfloat16 autocast
    total_steps: int

    def __init__(
        self, config: RunConfig, device: torch.device, on_log: Callable[[dict[str, Any]], None] | None
    ) -> None:
        self.config = config
        self.on_log = on_log
        self.output_dir = Path(config.output_dir)
        self.device = device
        self.dist = common.Distributed.setup(device)
        self.step = 0
        self._elapsed_before = 0.0  # seconds spent by the runs this one resumes
        self.metrics = MetricsLog(self.output_dir / "metrics.jsonl", active=False)  # opened by train()

    # ----------------------------------------------------------------------------------------------------------
    # What the subclass provides
    # ----------------------------------------------------------------------------------------------------------

    def _run(self) -> ResultT:
        """Train from ``self.step`` to the end, saving checkpoints; return the result."""
        raise NotImplementedError

    def plan_signature(self) -> dict[str, Any]:
        """What decides which examples form each step: a checkpoint written under another plan is refused."""
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        """Entries of ``trainer_state.pt`` beyond the shared ones (main process, at a checkpoint)."""
        return {}

    def _restore_extra_state(self, state: dict[str, Any]) -> None:
        """Take back what ``_extra_state`` saved."""

    def _checkpoint_summary(self, elapsed: float) -> dict[str, Any]:
        """``trainer_state.json``: the readable summary of a checkpoint."""
        return {"step": self.step, "elapsed": elapsed, "config": self.config.to_dict()}

    def _fill_checkpoint(self, tmp: Path) -> None:
        """Write more files into a checkpoint being built in ``tmp`` (beside ``model/``)."""

    def _fill_final(self, tmp: Path, checkpoint: Path) -> None:
        """Add to ``final/`` (being built in ``tmp`` from ``checkpoint``'s model)."""

    # ----------------------------------------------------------------------------------------------------------
    # The run
    # ----------------------------------------------------------------------------------------------------------

    def train(self, resume: bool | None = None) -> ResultT:
        """Train to the end, writing metrics and checkpoints; with ``resume`` (default: config.resume), continue
        from the newest checkpoint in the output directory."""
        resume = self.config.resume if resume is None else resume
        models.set_threads(self.config.threads)
        models.keep_freed_memory()
        try:
            self.prepare_output_dir(resume)
            self.metrics = MetricsLog(
                self.output_dir / "metrics.jsonl", active=self.dist.is_main, tensorboard=self.config.tensorboard
            )
            if resume:
                self.load_latest_checkpoint()
            return self._run()
        finally:
            self.metrics.close()
            self.model.eval()
            self.dist.close()

    def prepare_output_dir(self, resume: bool) -> None:
        """Refuse a directory holding an earlier run unless resuming it or overwriting it (see
        ``prepare_run_dir``)."""
        prepare_run_dir(
            self.output_dir, self.dist, resume=resume, overwrite=self.config.overwrite, what=self.what,
            markers=self.run_markers, files=self.run_files,
        )

    def _plan(self, fields: Sequence[str], **data: Any) -> dict[str, Any]:
        """A plan signature: these config fields, the number of processes and ``data`` (hashes, counts)."""
        return {**{name: getattr(self.config, name) for name in fields}, "world_size": self.dist.world_size, **data}

    def _distributed(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in DistributedDataParallel under torchrun (its gradients averaged over the processes), else
        ``module`` itself."""
        if not self.dist.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module)

    def _progress_bar(self) -> Any:
        """A tqdm bar over the steps (off when ``config.progress`` is false, and off the main process)."""
        from tqdm.auto import tqdm

        return tqdm(
            total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
            disable=not (self.config.progress and self.dist.is_main),
        )

    def log(self, record: dict[str, Any]) -> None:
        """One metrics record: to ``metrics.jsonl`` (main process) and to the ``on_log`` callback."""
        self.metrics.write(record)
        if self.on_log is not None:
            self.on_log(record)

    def write_run_info(self, **details: Any) -> dict[str, Any]:
        """``run.json`` (main process): the config, the processes, the precision, ``details`` and the number of
        trainable parameters. Returns what it holds."""
        info = {
            "config": self.config.to_dict(),
            "world_size": self.dist.world_size,
            "bf16": self.bf16,
            **details,
            "trainable_parameters": sum(p.numel() for p in self.trainable),
        }
        if self.dist.is_main:
            write_text_atomically(self.output_dir / "run.json", json.dumps(info, indent=2) + "\n")
        return info

    def _elapsed(self, started: float) -> float:
        """Seconds of training so far, the runs this one resumes included (``started``: this run's monotonic start)."""
        return self._elapsed_before + time.monotonic() - started

    def _due(self, every: int | None) -> bool:
        """Whether the step just done is one of every ``every`` (None: none), or the last: when to save a
        checkpoint (``save_every``) or evaluate (``eval_every``)."""
        return bool(every and self.step % every == 0) or self.step == self.total_steps

    def _log_step(self, bar: Any, record: dict[str, Any], **headline: str) -> None:
        """A step's metrics record (``log``), and its headline numbers on the progress bar."""
        self.log(record)
        bar.set_postfix(refresh=False, **headline)
        bar.update(1)

    # ----------------------------------------------------------------------------------------------------------
    # Checkpoints
    # ----------------------------------------------------------------------------------------------------------

    def checkpoint_dir(self, step: int) -> Path:
        return self.output_dir / f"checkpoint-{step}"

    def save_model(self, target: Path) -> None:
        """The model as a Hugging Face checkpoint with the tokenizer; with LoRA the adapters merged into a copy
        (merging in place and unmerging would not restore the base weights bit for bit)."""
        with transformers_quietly():  # transformers draws a progress bar per save, across ours
            if self.config.lora:
                merged = copy.deepcopy(self.model).merge_and_unload()
                models.save_checkpoint(merged, self.tokenizer, target)
                del merged
            else:
                models.save_checkpoint(self.model, self.tokenizer, target)

    def save_checkpoint(self, elapsed: float) -> None:
        """``checkpoint-<step>/`` (main process; every process contributes its RNG state), keeping the newest
        ``save_limit``."""
        rng_states = self.dist.gather(common.rng_state())  # every process's RNG, so each resumes its own
        if self.dist.is_main:
            state = {
                "version": STATE_VERSION,
                "step": self.step,
                "plan": self.plan_signature(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng_states,
                "elapsed": elapsed,
                **self._extra_state(),
            }
            summary = self._checkpoint_summary(elapsed)

            def fill(tmp: Path) -> None:
                self.save_model(tmp / "model")
                self._fill_checkpoint(tmp)
                if self.config.lora:
                    self.model.save_pretrained(tmp / "adapter")
                (tmp / "trainer_state.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
                torch.save(state, tmp / STATE_FILE)  # last: its presence marks the checkpoint complete

            write_dir_atomically(self.checkpoint_dir(self.step), fill)
            if self.config.save_limit is not None:
                for _, old in checkpoints(self.output_dir)[: -self.config.save_limit]:
                    shutil.rmtree(old, ignore_errors=True)
        self.dist.barrier()

    def load_latest_checkpoint(self) -> None:
        """Continue from the newest complete checkpoint (or from the start when there is none): weights, optimizer,
        scheduler, step, this process's RNG and the subclass's own state; later metrics records are dropped."""
        checkpoint = latest_checkpoint(self.output_dir)
        if checkpoint is None:
            if self.dist.is_main:
                log.info("no checkpoint in %s: starting from the beginning", self.output_dir)
            self.metrics.keep_until(0)
            return
        state = read_trainer_state(
            checkpoint, plan=self.plan_signature(), error=self.config_error, hash_note=self.plan_note,
        )
        restore_weights(self.model, checkpoint, lora=self.config.lora, error=self.config_error)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self._elapsed_before = float(state.get("elapsed", 0.0))  # (DPO did not save it at first)
        common.set_rng_state(state["rng"][self.dist.rank])
        self._restore_extra_state(state)
        self.metrics.keep_until(self.step)
        if self.dist.is_main:
            log.info("resumed from %s (step %d of %d)", checkpoint, self.step, self.total_steps)

    def publish_final(self) -> tuple[Path, Path | None]:
        """``final/`` (and ``adapter/`` with LoRA) from the last checkpoint, hard-linked rather than copied where
        possible; returns their paths (the adapter's None without LoRA)."""
        final, adapter = self.output_dir / "final", self.output_dir / "adapter"
        if self.dist.is_main:
            checkpoint = self.checkpoint_dir(self.step)

            def fill(tmp: Path) -> None:
                link_tree(checkpoint / "model", tmp)
                self._fill_final(tmp, checkpoint)

            write_dir_atomically(final, fill)
            if self.config.lora:
                write_dir_atomically(adapter, lambda tmp: link_tree(checkpoint / "adapter", tmp))
        self.dist.barrier()
        return final, adapter if self.config.lora else None
