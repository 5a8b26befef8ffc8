"""Supervised fine-tuning (SFT): teach a base model to answer like the assistant in a set of conversations.

``SFTConfig`` says how; ``SFTTrainer(config, model, tokenizer, train_conversations, eval_conversations).train()``
does it. The loss is the next-token cross-entropy on the assistant's tokens only (``chat.encode_conversation``
marks them), averaged over all such tokens of an optimizer step, across gradient accumulation and processes.

How a step runs:

* conversations are tokenized once, truncated to ``max_seq_len`` and packed several to a row without padding
  between them; position ids restart at each conversation, which makes transformers give each one its own causal
  attention block (``packing.py``);
* the decoder runs under bf16 autocast when the CPU has native bf16; the output head runs only on the positions
  that carry a loss, chunked, with a float32 loss (``token_loss.py``);
* under ``torchrun`` the model is wrapped in DistributedDataParallel (gloo on CPU); each process takes its share
  of the micro-batches of a step, and only rank 0 writes files.

A run directory holds ``metrics.jsonl`` (one record per step, and per evaluation), ``checkpoint-<step>/``
(``model/``: a Hugging Face checkpoint with the chat template, merged when training LoRA; ``adapter/``: the LoRA
adapter; ``trainer_state.pt``: optimizer, scheduler, RNG states and data position), and at the end ``final/``
(and ``adapter/`` with LoRA). A run resumed from a checkpoint continues the very same loss curve.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import json
import logging
import math
import os
import random
import sys
import time
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import ConfigDict
from torch import nn

from chatforge import chat, models
from chatforge.train import common, packing, starting_point, token_loss
from chatforge.train.checkpoint import CheckpointedTrainer
from chatforge.train.config import ConfigIO, add_config_arguments
from chatforge.train.config import config_from_args as config_from_args_of

log = logging.getLogger(__name__)

DEFAULT_BATCH_TOKENS = 4096


class SFTConfigError(ValueError):
    """An SFT configuration that cannot run; the message lists every problem found."""


class SFTDataError(ValueError):
    """Training data that cannot be used: unreadable, malformed (the message names file and line) or too little."""


@dataclass
class SFTConfig(ConfigIO):
    """Everything that decides an SFT run. Keys of a YAML config and long CLI flags have the same names."""

    # Reject unknown keys when built from a dict or YAML (see `ConfigIO.from_dict`).
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")
    _error: ClassVar[type[ValueError]] = SFTConfigError
    _what: ClassVar[str] = "SFT"

    output_dir: str = field(metadata={"help": "run directory: metrics, checkpoints, final model"})
    # Read by the command (`run_command`, `load_data`); SFTTrainer itself takes a loaded model and conversations.
    base_model: str | None = field(
        default=None, metadata={"help": "model to fine-tune: any name `models.load_model` accepts"}
    )
    data: str | None = field(default=None, metadata={"help": "training conversations, OpenAI messages JSONL"})
    mix: str | None = field(
        default=None,
        metadata={"help": "a data mixture spec such as 'sharegpt=0.6,...', instead of data"},
    )
    mix_size: int | None = field(
        default=None,
        metadata={
            "help": "conversations to draw from the mix (default: all the sources can fill in proportion)"
        },
    )
    eval_data: str | None = field(
        default=None, metadata={"help": "evaluation conversations, OpenAI messages JSONL"}
    )
    eval_fraction: float = field(
        default=0.0, metadata={"help": "without eval_data, hold out this fraction of the data for evaluation"}
    )

    learning_rate: float = field(
        default=2e-5, metadata={"help": "peak learning rate of AdamW (LoRA usually wants 1e-4 to 3e-4)"}
    )
    epochs: int = field(default=1, metadata={"help": "passes over the data (ignored when max_steps is set)"})
    max_steps: int | None = field(
        default=None, metadata={"help": "train exactly this many optimizer steps, cycling the data as needed"}
    )
    batch_tokens: int | None = field(
        default=None,
        metadata={
            "help": f"micro-batch size per process in tokens (default {DEFAULT_BATCH_TOKENS} unless batch_sequences is set)"
        },
    )
    batch_sequences: int | None = field(
        default=None, metadata={"help": "micro-batch size per process in conversations, instead of tokens"}
    )
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step (per process)"})
    max_seq_len: int = field(
        default=1024, metadata={"help": "longest sequence in tokens; longer conversations are truncated"}
    )
    warmup_ratio: float = field(
        default=0.03, metadata={"help": "linear warmup over this fraction of the steps"}
    )
    warmup_steps: int | None = field(
        default=None, metadata={"help": "linear warmup over this many steps (overrides warmup_ratio)"}
    )
    lr_schedule: Literal["cosine", "constant"] = field(
        default="cosine", metadata={"help": "learning-rate decay after warmup"}
    )
    weight_decay: float = field(
        default=0.0, metadata={"help": "AdamW weight decay (not applied to biases and norms)"}
    )
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "clip the gradient norm to this (null: no clipping)"}
    )
    seed: int = field(default=0, metadata={"help": "seed for data order, LoRA initialisation and dropout"})
    bf16: bool | Literal["auto"] = field(
        default="auto",
        metadata={"help": "bfloat16 autocast: auto uses it where the hardware has native bf16"},
    )

    lora: bool = field(default=False, metadata={"help": "train LoRA adapters instead of all weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: list[str] | str = field(
        default="all-linear", metadata={"help": "modules to adapt: 'all-linear' or a list of names"}
    )

    eval_every: int | None = field(
        default=None,
        metadata={"help": "evaluate every N steps (and at the end) when there is evaluation data"},
    )
    save_every: int | None = field(
        default=None, metadata={"help": "write a checkpoint every N steps (one is always written at the end)"}
    )
    save_limit: int | None = field(
        default=2, metadata={"help": "keep only the newest N checkpoints (null: keep all)"}
    )
    resume: bool = field(
        default=False, metadata={"help": "continue from the newest checkpoint in output_dir"}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "delete an earlier run in output_dir and start over"}
    )
    threads: int | None = field(
        default=None, metadata={"help": "torch threads (default: CHATFORGE_THREADS, else torch's choice)"}
    )
    tensorboard: bool = field(
        default=True, metadata={"help": "also log to output_dir/tensorboard when tensorboard is installed"}
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        if self.batch_tokens is None and self.batch_sequences is None:
            self.batch_tokens = DEFAULT_BATCH_TOKENS
        problems = self.problems()
        if problems:
            raise SFTConfigError("invalid SFT config:\n" + "\n".join(f"  - {p}" for p in problems))

    def problems(self) -> list[str]:
        """Every reason this config cannot run (empty when it can)."""
        out: list[str] = []

        def number(
            name: str,
            *,
            minimum: float,
            inclusive: bool = True,
            integer: bool = False,
            optional: bool = False,
        ) -> None:
            value: Any = getattr(self, name)
            if value is None and optional:
                return
            kinds = (int,) if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds):
                out.append(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
            elif not math.isfinite(v := float(value)) or v < minimum or (v == minimum and not inclusive):
                out.append(f"{name} must be {'>=' if inclusive else '>'} {minimum}, got {value!r}")

        if not isinstance(self.output_dir, str) or not self.output_dir.strip():
            out.append("output_dir must be a non-empty path")
        if self.base_model is not None and (
            not isinstance(self.base_model, str) or not self.base_model.strip()
        ):
            out.append("base_model must be a model name or path")
        if self.data is not None and self.mix is not None:
            out.append("give either data or mix, not both")
        number("mix_size", minimum=1, integer=True, optional=True)
        number("eval_fraction", minimum=0.0)
        if isinstance(self.eval_fraction, (int, float)) and self.eval_fraction >= 1:
            out.append(f"eval_fraction must be below 1, got {self.eval_fraction!r}")
        number("learning_rate", minimum=0.0, inclusive=False)
        number("epochs", minimum=1, integer=True)
        number("max_steps", minimum=1, integer=True, optional=True)
        if self.batch_tokens is not None and self.batch_sequences is not None:
            out.append("give either batch_tokens or batch_sequences, not both")
        number("batch_tokens", minimum=1, integer=True, optional=True)
        number("batch_sequences", minimum=1, integer=True, optional=True)
        number("grad_accum", minimum=1, integer=True)
        number("max_seq_len", minimum=2, integer=True)
        if (
            isinstance(self.batch_tokens, int)
            and isinstance(self.max_seq_len, int)
            and self.batch_tokens < self.max_seq_len
        ):
            out.append(
                f"batch_tokens ({self.batch_tokens}) must be at least max_seq_len ({self.max_seq_len}) so that the "
                "longest sequence fits in a micro-batch"
            )
        number("warmup_ratio", minimum=0.0)
        if isinstance(self.warmup_ratio, (int, float)) and self.warmup_ratio >= 1:
            out.append(f"warmup_ratio must be below 1, got {self.warmup_ratio!r}")
        number("warmup_steps", minimum=0, integer=True, optional=True)
        if self.lr_schedule not in ("cosine", "constant"):
            out.append(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        number("weight_decay", minimum=0.0)
        number("max_grad_norm", minimum=0.0, inclusive=False, optional=True)
        number("seed", minimum=0, integer=True)
        if self.bf16 not in (True, False, "auto"):
            out.append(f"bf16 must be true, false or 'auto', got {self.bf16!r}")
        number("lora_r", minimum=1, integer=True)
        number("lora_alpha", minimum=1, integer=True)
        number("lora_dropout", minimum=0.0)
        if isinstance(self.lora_dropout, (int, float)) and self.lora_dropout >= 1:
            out.append(f"lora_dropout must be below 1, got {self.lora_dropout!r}")
        targets = self.lora_target_modules
        if not (
            (isinstance(targets, str) and targets.strip())
            or (isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets))
        ):
            out.append(
                f"lora_target_modules must be 'all-linear' or a non-empty list of module names, got {targets!r}"
            )
        number("eval_every", minimum=1, integer=True, optional=True)
        number("save_every", minimum=1, integer=True, optional=True)
        number("save_limit", minimum=1, integer=True, optional=True)
        number("threads", minimum=1, integer=True, optional=True)
        if self.resume and self.overwrite:
            out.append("resume and overwrite contradict each other: give one")
        return out


@dataclass(frozen=True)
class SFTResult:
    step: int  # optimizer steps done
    train_loss: float | None  # loss of the last step
    eval_loss: float | None  # last evaluation
    checkpoint_dir: Path | None  # newest checkpoint (with trainer state)
    final_dir: Path | None  # the chat-ready Hugging Face checkpoint (merged, with LoRA)
    adapter_dir: Path | None  # the LoRA adapter (LoRA runs only)


class _PackedLoss(nn.Module):
    """The model plus its loss as one module, so DistributedDataParallel sees the whole forward pass."""

    def __init__(self, model: nn.Module, compute_dtype: torch.dtype | None) -> None:
        super().__init__()
        self.model = model
        self.parts = token_loss.lm_parts(model)
        self.compute_dtype = compute_dtype

    def forward(self, batch: packing.PackedBatch) -> torch.Tensor:
        return token_loss.packed_lm_loss(
            self.parts,
            batch.input_ids,
            batch.position_ids,
            batch.target_index,
            batch.targets,
            compute_dtype=self.compute_dtype,
        )


# Config fields that decide which examples form each step: a run resumed with different values would not continue
# the same data order.
_PLAN_FIELDS = ("seed", "batch_tokens", "batch_sequences", "grad_accum", "max_seq_len", "lora")


class SFTTrainer(CheckpointedTrainer[SFTResult]):
    """Fine-tune ``model`` on conversations. The model is trained in place (with LoRA, adapters are added to it);
    ``trainer.model`` is the model being trained (the peft model with LoRA)."""

    what = "training"
    config_error = SFTConfigError
    plan_note = "data a hash of the tokenized training set"
    config: SFTConfig

    def __init__(
        self,
        config: SFTConfig,
        model: Any,
        tokenizer: Any,
        train_conversations: Iterable[chat.Conversation],
        eval_conversations: Iterable[chat.Conversation] | None = None,
        *,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(config, next(model.parameters()).device, on_log)
        self.tokenizer = tokenizer
        assert config.batch_tokens is not None or config.batch_sequences is not None  # set by __post_init__

        self.train_examples, self.train_stats = packing.encode_examples(
            tokenizer, train_conversations, config.max_seq_len
        )
        if not self.train_examples:
            raise SFTDataError(f"no usable training conversations: {self.train_stats.describe()}")
        self.eval_examples: list[packing.Example] = []
        self.eval_stats: packing.EncodingStats | None = None
        if eval_conversations is not None:
            self.eval_examples, self.eval_stats = packing.encode_examples(
                tokenizer, eval_conversations, config.max_seq_len, what="evaluation"
            )
        self._lengths = [len(e) for e in self.train_examples]
        self._fingerprint = packing.fingerprint(self.train_examples)
        self._pad_id = next(
            (int(i) for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if isinstance(i, int)), 0
        )

        random.seed(config.seed)
        torch.manual_seed(config.seed)  # LoRA initialisation draws from it
        if config.lora:
            model = starting_point.with_lora(model, config)
        self.model = model
        self.trainable = starting_point.trainable_parameters(model, SFTConfigError)
        self.bf16 = common.bf16_supported(self.device) if config.bf16 == "auto" else bool(config.bf16)
        self._loss_module = _PackedLoss(model, torch.bfloat16 if self.bf16 else None)

        decay = [p for p in self.trainable if p.ndim >= 2]
        no_decay = [p for p in self.trainable if p.ndim < 2]  # biases and norm scales
        self.optimizer = common.adamw(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.learning_rate,
        )
        self._epoch_steps: list[int] = []
        self.steps_in_epoch(0)  # fails now, not mid-run, when the data cannot fill one step
        self.total_steps = config.max_steps or sum(self.steps_in_epoch(e) for e in range(config.epochs))
        warmup = (
            config.warmup_steps
            if config.warmup_steps is not None
            else math.ceil(config.warmup_ratio * self.total_steps)
        )
        from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

        if config.lr_schedule == "cosine":
            self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, warmup, self.total_steps)
        else:
            self.scheduler = get_constant_schedule_with_warmup(self.optimizer, warmup)
        self._tokens_seen = 0  # by the end of the last step, the runs this one resumes included

    # ----------------------------------------------------------------------------------------------------------
    # Data plan
    # ----------------------------------------------------------------------------------------------------------

    @property
    def _per_step(self) -> int:
        return self.config.grad_accum * self.dist.world_size

    def epoch_plan(self, epoch: int) -> list[list[int]]:
        """The micro-batches (lists of example indices) of ``epoch``, all processes together."""
        order = packing.epoch_order(len(self.train_examples), seed=self.config.seed, epoch=epoch)
        return packing.plan_micro_batches(
            self._lengths,
            order,
            batch_tokens=self.config.batch_tokens,
            batch_sequences=self.config.batch_sequences,
        )

    def steps_in_epoch(self, epoch: int) -> int:
        while len(self._epoch_steps) <= epoch:
            plan = self.epoch_plan(len(self._epoch_steps))
            steps = len(plan) // self._per_step  # an incomplete last step is left out, as in drop_last
            if steps == 0:
                raise SFTDataError(
                    f"the training data fills {len(plan)} micro-batches per epoch, fewer than one optimizer step "
                    f"takes ({self.config.grad_accum} accumulation x {self.dist.world_size} processes); use smaller "
                    "micro-batches, less accumulation or more data"
                )
            self._epoch_steps.append(steps)
        return self._epoch_steps[epoch]

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, step within that epoch) of global step ``step``."""
        epoch = 0
        while step >= self.steps_in_epoch(epoch):
            step -= self.steps_in_epoch(epoch)
            epoch += 1
        return epoch, step

    def _collate(self, examples: Sequence[packing.Example], indices: Sequence[int]) -> packing.PackedBatch:
        batch = packing.collate(examples, indices, row_capacity=self.config.max_seq_len, pad_id=self._pad_id)
        return batch.to(self.device)

    # ----------------------------------------------------------------------------------------------------------
    # Training
    # ----------------------------------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _run(self) -> SFTResult:
        config = self.config
        self.model.train()
        module: nn.Module = self._loss_module
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            module = DistributedDataParallel(self._loss_module)
        self._describe_run()

        from tqdm.auto import tqdm

        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            disable=not (config.progress and self.dist.is_main),
        )
        started = time.monotonic()
        last_loss: float | None = None
        eval_loss: float | None = None
        epoch, in_epoch = self.position(self.step)
        plan = self.epoch_plan(epoch)
        while self.step < self.total_steps:
            if in_epoch == self.steps_in_epoch(epoch):
                epoch, in_epoch = epoch + 1, 0
                plan = self.epoch_plan(epoch)
            # Micro-batch m of process r in this step; one process with accumulation A sees the same set of
            # micro-batches as A processes without it.
            first = in_epoch * self._per_step
            mine = [plan[first + m * self.dist.world_size + self.dist.rank] for m in range(config.grad_accum)]
            step_started = time.monotonic()
            lr = float(self.scheduler.get_last_lr()[0])
            loss, grad_norm, tokens, loss_tokens = self._train_step(
                module, [self._collate(self.train_examples, i) for i in mine]
            )
            step_time = time.monotonic() - step_started
            self.step += 1
            in_epoch += 1
            self._tokens_seen += tokens
            last_loss = loss
            self.log(
                {
                    "kind": "train",
                    "step": self.step,
                    "epoch": round(epoch + in_epoch / self.steps_in_epoch(epoch), 4),
                    "loss": loss,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "tokens": tokens,
                    "loss_tokens": loss_tokens,
                    "tokens_per_s": tokens / step_time if step_time > 0 else 0.0,
                    "elapsed": self._elapsed(started),
                }
            )
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens / max(step_time, 1e-9):.0f}", refresh=False)
            bar.update(1)
            done = self.step == self.total_steps
            if self.eval_examples and ((config.eval_every and self.step % config.eval_every == 0) or done):
                eval_loss = self._evaluate_and_log()
            if self._save_due():
                self.save_checkpoint(self._elapsed(started))
        bar.close()
        final_dir, adapter_dir = self.publish_final()
        return SFTResult(
            step=self.step,
            train_loss=last_loss,
            eval_loss=eval_loss,
            checkpoint_dir=self.checkpoint_dir(self.step),
            final_dir=final_dir,
            adapter_dir=adapter_dir,
        )

    def _train_step(
        self, module: nn.Module, batches: list[packing.PackedBatch]
    ) -> tuple[float, float, int, int]:
        """One optimizer step over this process's micro-batches; returns (loss, grad norm, tokens, loss tokens),
        all over every process."""
        local_targets = sum(b.num_targets for b in batches)
        local_tokens = sum(b.num_tokens for b in batches)
        total_targets, total_tokens = self.dist.sum([local_targets, local_tokens])
        # Each process's gradient is of (its loss sum) * world / (all targets); DDP averages over processes, so
        # the step's gradient is that of the mean loss over every target token of the step, however it was split.
        scale = self.dist.world_size / total_targets
        loss_sum = 0.0
        for i, batch in enumerate(batches):
            sync = i == len(batches) - 1
            no_sync = getattr(module, "no_sync", None)
            with contextlib.nullcontext() if sync or no_sync is None else no_sync():
                with self._autocast():
                    loss = module(batch)
                (loss * scale).backward()
            loss_sum += float(loss.detach())
        limit = self.config.max_grad_norm if self.config.max_grad_norm is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, limit))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        (total_loss,) = self.dist.sum([loss_sum])
        return total_loss / total_targets, grad_norm, int(total_tokens), int(total_targets)

    def evaluate(self) -> float | None:
        """Mean loss per assistant token over the evaluation set (each process takes a share); None without one."""
        if not self.eval_examples:
            return None
        lengths = [len(e) for e in self.eval_examples]
        plan = packing.plan_micro_batches(
            lengths,
            range(len(lengths)),
            batch_tokens=self.config.batch_tokens,
            batch_sequences=self.config.batch_sequences,
        )
        was_training = self.model.training
        self.model.eval()
        loss_sum = 0.0
        targets = 0
        with torch.no_grad(), self._autocast():
            for indices in plan[self.dist.rank :: self.dist.world_size]:
                batch = self._collate(self.eval_examples, indices)
                loss_sum += float(self._loss_module(batch))
                targets += batch.num_targets
        self.model.train(was_training)
        total_loss, total_targets = self.dist.sum([loss_sum, targets])
        return total_loss / total_targets

    def _evaluate_and_log(self) -> float | None:
        loss = self.evaluate()
        if loss is not None:
            self.log({"kind": "eval", "step": self.step, "eval_loss": loss})
        return loss

    # ----------------------------------------------------------------------------------------------------------
    # What the run directory saves (see checkpoint.CheckpointedTrainer)
    # ----------------------------------------------------------------------------------------------------------

    def plan_signature(self) -> dict[str, Any]:
        return self._plan(_PLAN_FIELDS, data=self._fingerprint)

    def _extra_state(self) -> dict[str, Any]:
        epoch, in_epoch = self.position(self.step)
        return {"epoch": epoch, "epoch_step": in_epoch, "tokens_seen": self._tokens_seen}

    def _restore_extra_state(self, state: dict[str, Any]) -> None:
        self._tokens_seen = int(state["tokens_seen"])

    def _checkpoint_summary(self, elapsed: float) -> dict[str, Any]:
        epoch, in_epoch = self.position(self.step)
        return {
            "step": self.step,
            "epoch": epoch,
            "epoch_step": in_epoch,
            "total_steps": self.total_steps,
            "elapsed": elapsed,
            "tokens_seen": self._tokens_seen,
            "config": self.config.to_dict(),
        }

    def _describe_run(self) -> None:
        info = {
            "config": self.config.to_dict(),
            "world_size": self.dist.world_size,
            "bf16": self.bf16,
            "total_steps": self.total_steps,
            "train_data": dataclasses.asdict(self.train_stats),
            "eval_data": dataclasses.asdict(self.eval_stats) if self.eval_stats else None,
            "trainable_parameters": sum(p.numel() for p in self.trainable),
        }
        self.write_run_info(info)
        if self.dist.is_main:
            log.info("training data: %s", self.train_stats.describe())
            if self.eval_stats is not None:
                log.info("evaluation data: %s", self.eval_stats.describe())
            log.info(
                "%d steps of %d micro-batch(es) x %d process(es); bf16 autocast %s; %s trainable parameters",
                self.total_steps,
                self.config.grad_accum,
                self.dist.world_size,
                "on" if self.bf16 else "off",
                f"{info['trainable_parameters']:,}",
            )


# --------------------------------------------------------------------------------------------------------------
# Data files and the command line
# --------------------------------------------------------------------------------------------------------------


def read_conversations(path: str | os.PathLike[str]) -> list[chat.Conversation]:
    """Conversations from an OpenAI-style JSONL file: one ``{"messages": [...]}`` object (or bare list) a line."""
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise SFTDataError(f"cannot read {file}: {err}") from None
    conversations = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise SFTDataError(f"{file}:{number}: not valid JSON ({err.msg})") from None
        raw = record.get("messages") if isinstance(record, dict) else record
        if raw is None:
            raise SFTDataError(f"{file}:{number}: the object has no 'messages' list")
        ident = record.get("id") if isinstance(record, dict) else None
        try:
            conversations.append(
                chat.Conversation.from_messages(
                    raw, id=str(ident or f"{file.name}:{number}"), source=file.name
                )
            )
        except chat.ConversationError as err:
            raise SFTDataError(f"{file}:{number}: {err}") from None
    if not conversations:
        raise SFTDataError(f"{file} holds no conversations")
    return conversations


def _mixture_conversations(config: SFTConfig, tokenizer: Any) -> list[chat.Conversation]:
    # chatforge.data (sources and the mixture) is a separate part of chatforge; import it only when asked for.
    if importlib.util.find_spec("chatforge.data") is None:
        raise SFTDataError("--mix needs the chatforge.data package, which this installation does not have")
    from chatforge.data import DataError, Mixture

    assert config.mix is not None
    try:
        # No length cut in the mixture: SFT truncates over-long conversations itself, and reports how many.
        mixture = Mixture(
            config.mix, tokenizer=tokenizer, size=config.mix_size, max_tokens=None, seed=config.seed
        )
        result = mixture.build()
    except DataError as err:
        raise SFTDataError(f"--mix {config.mix}: {err}") from None
    log.info("%s", result.report.format())
    return list(result.conversations)


def load_data(
    config: SFTConfig, tokenizer: Any = None
) -> tuple[list[chat.Conversation], list[chat.Conversation] | None]:
    """The (train, eval) conversations a config names: ``data`` or ``mix`` (whose filters use ``tokenizer``), plus
    ``eval_data`` or a held-out ``eval_fraction``."""
    if config.data is not None:
        train = read_conversations(config.data)
    elif config.mix is not None:
        train = _mixture_conversations(config, tokenizer)
    else:
        raise SFTDataError("no training data: give --data FILE.jsonl or --mix SPEC")
    if config.eval_data is not None:
        return train, read_conversations(config.eval_data)
    if config.eval_fraction > 0:
        held = max(1, round(len(train) * config.eval_fraction))
        if held >= len(train):
            raise SFTDataError(
                f"eval_fraction {config.eval_fraction} leaves no training data ({len(train)} conversations)"
            )
        order = list(range(len(train)))
        random.Random(config.seed).shuffle(order)
        held_out = set(order[:held])
        return [c for i, c in enumerate(train) if i not in held_out], [train[i] for i in sorted(held_out)]
    return train, None


_ALIASES = {"base_model": ["--base"], "output_dir": ["--out"], "learning_rate": ["--lr"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``sft`` command's flags: --config YAML, and one flag per SFTConfig field (flags beat the YAML)."""
    add_config_arguments(parser, SFTConfig, _ALIASES)


def config_from_args(args: argparse.Namespace) -> SFTConfig:
    """The config a command line describes: the --config YAML (if any) with the given flags on top."""
    return typing.cast(SFTConfig, config_from_args_of(SFTConfig, args))


def run_command(args: argparse.Namespace) -> int:
    """``chatforge sft``: load the model and data, train, print where the result is."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = config_from_args(args)
        if config.base_model is None:
            raise SFTConfigError("no model to fine-tune: give --base NAME (or base_model in the YAML)")
        models.set_threads(config.threads)
        train, evaluation = load_data(config, models.load_tokenizer(config.base_model))
        model, tokenizer = models.load_model(config.base_model)
        trainer = SFTTrainer(config, model, tokenizer, train, evaluation)
        result = trainer.train()
    except (
        SFTConfigError,
        SFTDataError,
        chat.ConversationError,
        models.ModelNotFoundError,
        FileExistsError,
    ) as err:
        print(f"chatforge sft: error: {err}", file=sys.stderr)
        return 2
    if trainer.dist.is_main:
        summary = (
            f"done: {result.step} steps, last loss {result.train_loss:.4f}"
            if result.train_loss is not None
            else "done"
        )
        if result.eval_loss is not None:
            summary += f", eval loss {result.eval_loss:.4f}"
        print(
            f"{summary}\nchat model: {result.final_dir}"
            + (f"\nLoRA adapter: {result.adapter_dir}" if result.adapter_dir else "")
        )
    return 0


def register_cli(subparsers: Any) -> None:
    """Add the ``sft`` command to a ``chatforge`` argparse sub-parser set (its handler is ``args.func(args)``)."""
    parser = subparsers.add_parser(
        "sft",
        help="supervised fine-tuning on chat conversations",
        description="Fine-tune a model on conversations (loss on the assistant's tokens only). "
        "Run it under `torchrun --nproc_per_node=N` to train on N processes.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run_command)


def main(argv: Sequence[str] | None = None) -> int:
    """``chatforge sft`` on its own, same flags (for torchrun: ``-m chatforge.train sft``, see ``__main__.py``)."""
    parser = argparse.ArgumentParser(
        prog="chatforge sft", description="Supervised fine-tuning on chat conversations."
    )
    add_arguments(parser)
    return run_command(parser.parse_args(argv))
