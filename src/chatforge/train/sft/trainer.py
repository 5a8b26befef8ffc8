"""``SFTTrainer``: the loss on the assistant's tokens, over packed micro-batches, across gradient accumulation and
processes (see the package docstring for how a step runs)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from chatforge import chat
from chatforge.train import common, packing, starting_point, token_loss
from chatforge.train.checkpoint import CheckpointedTrainer
from chatforge.train.sft.config import SFTConfig, SFTConfigError, SFTDataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SFTResult:
    step: int  # optimizer steps done
    train_loss: float | None  # loss of the last step
    eval_loss: float | None  # last evaluation
    checkpoint_dir: Path | None  # newest checkpoint (with trainer state)
    final_dir: Path | None  # the chat-ready Hugging Face checkpoint (merged, with LoRA)
    adapter_dir: Path | None  # the LoRA adapter (LoRA runs only)

    def summary(self) -> str:
        """What ``chatforge sft`` prints at the end."""
        text = f"done: {self.step} steps, last loss {self.train_loss:.4f}" if self.train_loss is not None else "done"
        if self.eval_loss is not None:
            text += f", eval loss {self.eval_loss:.4f}"
        text += f"\nchat model: {self.final_dir}"
        return text + (f"\nLoRA adapter: {self.adapter_dir}" if self.adapter_dir else "")


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
        self.bf16 = common.use_bf16(config.bf16, self.device)
        self._loss_module = _PackedLoss(model, torch.bfloat16 if self.bf16 else None)

        self.optimizer = common.adamw_with_decay(self.trainable, config.learning_rate, config.weight_decay)
        self._epoch_steps: list[int] = []
        self.steps_in_epoch(0)  # fails now, not mid-run, when the data cannot fill one step
        self.total_steps = config.max_steps or sum(self.steps_in_epoch(e) for e in range(config.epochs))
        self.scheduler = common.warmup_schedule(
            self.optimizer, config.warmup(self.total_steps), decay=config.lr_schedule, total_steps=self.total_steps
        )
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
        module = self._distributed(self._loss_module)
        self._describe_run()
        bar = self._progress_bar()
        started = time.monotonic()
        last_loss: float | None = None
        eval_loss: float | None = None
        epoch, in_epoch = self.position(self.step)
        plan = self.epoch_plan(epoch)
        while self.step < self.total_steps:
            if in_epoch == self.steps_in_epoch(epoch):
                epoch, in_epoch = epoch + 1, 0
                plan = self.epoch_plan(epoch)
            mine = packing.process_share(plan, in_epoch, config.grad_accum, self.dist.rank, self.dist.world_size)
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
            self._log_step(
                bar,
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
                },
                loss=f"{loss:.4f}", tok_s=f"{tokens / max(step_time, 1e-9):.0f}",
            )
            if self.eval_examples and self._due(config.eval_every):
                eval_loss = self._evaluate_and_log()
            if self._due(self.config.save_every):
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
            with common.gradient_sync(module, last=i == len(batches) - 1):
                with self._autocast():
                    loss = module(batch)
                (loss * scale).backward()
            loss_sum += float(loss.detach())
        grad_norm = common.optimizer_step(self.trainable, self.optimizer, self.scheduler, self.config.max_grad_norm)
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
        info = self.write_run_info(
            total_steps=self.total_steps,
            train_data=dataclasses.asdict(self.train_stats),
            eval_data=dataclasses.asdict(self.eval_stats) if self.eval_stats else None,
        )
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
