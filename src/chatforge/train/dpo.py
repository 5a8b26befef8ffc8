"""DPO (Rafailov et al. 2023): learn from comparisons without a reward model or sampling.

``DPOTrainer(config, policy, tokenizer, comparisons).train()`` on ``chatforge.data.comparisons.Comparison``
records. Every strictly ordered pair of a ranking (``Comparison.pairs()``: K responses give up to C(K, 2)) is a
(chosen, rejected) example; the loss is ``losses.dpo_loss`` on the summed log-probabilities of the two responses
under the policy and the reference.

The reference is the initial policy. Its log-probabilities are computed once, before the first step (with LoRA:
the adapters disabled; without: the very weights about to be trained), so no second model is kept in memory.
Responses are scored with the same packed forward pass as PPO (``rollout.sequence_forward``): the response is the
assistant reply and its end-of-turn token, as the chat template renders it. Each step takes ``batch_pairs`` pairs
per process (DDP under torchrun); checkpoints hold model (merged with LoRA), adapter, optimizer, scheduler, RNG
and step, and resume exactly.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from chatforge import chat, models
from chatforge.train import common, losses, packing, rollout, starting_point
from chatforge.train import config as config_io
from chatforge.train.checkpoint import CheckpointedTrainer
from chatforge.train.command import StageCommand

log = logging.getLogger(__name__)


class DPOConfigError(ValueError):
    """A DPO configuration that cannot run."""


@dataclass
class DPOConfig(config_io.ConfigIO, config_io.RunOptions, config_io.PolicyLoRAOptions):
    """Everything that decides a DPO run. YAML keys and long CLI flags have the same names."""

    _error: ClassVar[type[ValueError]] = DPOConfigError
    _what: ClassVar[str] = "DPO"

    output_dir: str = field(metadata={"help": "run directory"})
    policy: str | None = field(default=None, metadata={"help": "SFT run directory or model to start from (command)"})
    comparisons: str | None = field(default=None, metadata={"help": "comparison records, JSONL (command)"})
    beta: float = field(default=0.1, metadata={"help": "DPO beta: strength of the implicit KL to the reference"})
    label_smoothing: float = field(default=0.0, metadata={"help": "cDPO: assumed share of flipped labels"})
    learning_rate: float = field(default=5e-6, metadata={"help": "AdamW learning rate (LoRA: ~1e-4)"})
    epochs: int = field(default=1, metadata={"help": "passes over the pairs (ignored with max_steps)"})
    max_steps: int | None = field(default=None, metadata={"help": "train exactly this many steps"})
    batch_pairs: int = field(default=8, metadata={"help": "pairs per step per process"})
    max_seq_len: int = field(default=1024, metadata={"help": "longer sequences lose the start of their context"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warmup steps"})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "gradient clipping (null: off)"})
    seed: int = field(default=0, metadata={"help": "seed of pair order and LoRA init"})

    def _own_problems(self, number: Callable[..., None], out: list[str]) -> None:
        number("beta", minimum=0.0, inclusive=False)
        number("label_smoothing", minimum=0.0)
        if isinstance(self.label_smoothing, (int, float)) and self.label_smoothing >= 0.5:
            out.append(f"label_smoothing must be below 0.5, got {self.label_smoothing!r}")
        number("learning_rate", minimum=0.0, inclusive=False)
        number("epochs", minimum=1, integer=True)
        number("batch_pairs", minimum=1, integer=True)
        number("max_steps", minimum=1, integer=True, optional=True)
        number("max_seq_len", minimum=4, integer=True)
        number("warmup_steps", minimum=0, integer=True)
        number("seed", minimum=0, integer=True)
        number("max_grad_norm", minimum=0.0, inclusive=False, optional=True)


@dataclass(frozen=True)
class PreferencePair:
    chosen: tuple[list[int], int]  # (token ids, index of the first response token)
    rejected: tuple[list[int], int]


def encode_reply(tokenizer: Any, context: Sequence[chat.Message], reply: str, max_seq_len: int) -> tuple[list[int], int]:
    """(ids of context + reply, start of the reply): the reply's tokens are its final assistant-masked run."""
    encoded = chat.encode_conversation(tokenizer, [*context, chat.Message("assistant", reply)])
    ids, mask = encoded.input_ids, encoded.assistant_mask
    end = max(i for i, m in enumerate(mask) if m) + 1
    start = end
    while start > 0 and mask[start - 1]:
        start -= 1
    ids = ids[:end]
    if len(ids) > max_seq_len:  # keep the reply, cut the context from the left
        cut = len(ids) - max_seq_len
        ids, start = ids[cut:], max(start - cut, 1)
    return ids, max(start, 1)


def preference_pairs(tokenizer: Any, comparisons: Sequence[Any], max_seq_len: int) -> list[PreferencePair]:
    """Every strictly ordered (better, worse) pair of every comparison, tokenized."""
    out = []
    for c in comparisons:
        for better, worse in c.pairs():
            out.append(
                PreferencePair(
                    encode_reply(tokenizer, c.context, c.responses[better].text, max_seq_len),
                    encode_reply(tokenizer, c.context, c.responses[worse].text, max_seq_len),
                )
            )
    return out


class _SequenceLogprobs(nn.Module):
    """Summed log-probability of each packed sequence's reply (under bf16 autocast when ``compute_dtype`` is
    bfloat16; the weights stay float32)."""

    def __init__(self, model: nn.Module, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.model = model
        self.compute_dtype = compute_dtype

    def forward(self, batch: rollout.Packed) -> torch.Tensor:
        with torch.autocast(batch.input_ids.device.type, dtype=torch.bfloat16, enabled=self.compute_dtype is not None):
            out = rollout.sequence_forward(self.model, batch, with_entropy=False, compute_dtype=self.compute_dtype)
        return torch.stack([out.logprobs[a:b].sum() for a, b in batch.spans])


@dataclass(frozen=True)
class DPOResult:
    step: int
    loss: float | None
    accuracy: float | None
    checkpoint_dir: Path | None
    final_dir: Path | None
    adapter_dir: Path | None

    def summary(self) -> str:
        """What ``chatforge dpo`` prints at the end."""
        return f"done: {self.step} steps, loss {self.loss:.4f}, accuracy {self.accuracy:.3f}\npolicy: {self.final_dir}"


class DPOTrainer(CheckpointedTrainer[DPOResult]):
    """DPO on ``policy`` (trained in place; with LoRA ``trainer.model`` is the peft model) from comparisons."""

    what = "DPO"
    config_error = DPOConfigError
    plan_note = "pairs the number of preference pairs"
    config: DPOConfig

    def __init__(
        self,
        config: DPOConfig,
        policy: Any,
        tokenizer: Any,
        comparisons: Sequence[Any],
        *,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(config, next(policy.parameters()).device, on_log)
        self.tokenizer = tokenizer
        self.pairs = preference_pairs(tokenizer, comparisons, config.max_seq_len)
        if len(self.pairs) < config.batch_pairs * self.dist.world_size:
            raise DPOConfigError(f"{len(self.pairs)} preference pairs: fewer than one step takes")
        self._pad_id = next((int(i) for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if isinstance(i, int)), 0)
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        if config.lora:
            policy = starting_point.with_lora(policy, config)
        self.model = policy.eval()
        self.bf16 = common.use_bf16(config.bf16, self.device)
        self._module = _SequenceLogprobs(self.model, torch.bfloat16 if self.bf16 else None)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = common.adamw(self.trainable, lr=config.learning_rate)
        self.scheduler = common.warmup_schedule(self.optimizer, config.warmup_steps)
        self.steps_per_epoch = len(self.pairs) // (config.batch_pairs * self.dist.world_size)
        self.total_steps = config.max_steps or self.steps_per_epoch * config.epochs
        self.reference = self._reference_logprobs()  # [pairs, 2], before any update

    def _pack(self, indices: Sequence[int]) -> rollout.Packed:
        sequences = [s for i in indices for s in (self.pairs[i].chosen, self.pairs[i].rejected)]
        return rollout.pack(sequences, self._pad_id, self.device)

    @torch.no_grad()
    def _reference_logprobs(self) -> torch.Tensor:
        context = self.model.disable_adapter() if self.config.lora else contextlib.nullcontext()
        out = []
        with context:
            for start in range(0, len(self.pairs), 16):
                out.append(self._module(self._pack(range(start, min(start + 16, len(self.pairs))))).view(-1, 2))
        return torch.cat(out)

    def step_pairs(self, step: int) -> list[int]:
        epoch, within = divmod(step, self.steps_per_epoch)
        order = packing.epoch_order(len(self.pairs), seed=self.config.seed, epoch=epoch)
        size = self.config.batch_pairs
        first = (within * self.dist.world_size + self.dist.rank) * size
        return order[first : first + size]

    def _run(self) -> DPOResult:
        module = self._distributed(self._module)
        loss_value = accuracy = None
        bar = self._progress_bar()
        run_started = time.monotonic()
        while self.step < self.total_steps:
            started = time.monotonic()
            indices = self.step_pairs(self.step)
            logps = module(self._pack(indices)).view(-1, 2)
            ref = self.reference[indices]
            loss, chosen, rejected = losses.dpo_loss(
                logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], self.config.beta, self.config.label_smoothing
            )
            loss.backward()
            grad_norm = common.optimizer_step(self.trainable, self.optimizer, self.scheduler, self.config.max_grad_norm)
            self.step += 1
            n = len(indices)
            total, loss_sum, correct, margin, rc, rr = self.dist.sum(
                [n, float(loss.detach()) * n, float((chosen > rejected).sum()), float((chosen - rejected).sum()),
                 float(chosen.sum()), float(rejected.sum())]
            )
            loss_value, accuracy = loss_sum / total, correct / total
            record = {"kind": "train", "step": self.step, "loss": loss_value, "accuracy": accuracy,
                      "margin": margin / total, "reward_chosen": rc / total, "reward_rejected": rr / total,
                      "grad_norm": grad_norm, "lr": float(self.scheduler.get_last_lr()[0]),
                      "step_time": time.monotonic() - started}
            self._log_step(bar, record, loss=f"{loss_value:.4f}", acc=f"{accuracy:.3f}")
            if self._due(self.config.save_every):
                self.save_checkpoint(self._elapsed(run_started))
        bar.close()
        final, adapter = self.publish_final()
        return DPOResult(self.step, loss_value, accuracy, self.checkpoint_dir(self.step), final, adapter)

    # ----------------------------------------------------------------------------------------------------------
    # What the run directory saves (see checkpoint.CheckpointedTrainer): the reference log-probs too
    # ----------------------------------------------------------------------------------------------------------

    def plan_signature(self) -> dict[str, Any]:
        return self._plan(("seed", "batch_pairs"), pairs=len(self.pairs))

    def _extra_state(self) -> dict[str, Any]:
        return {"reference": self.reference}

    def _restore_extra_state(self, state: dict[str, Any]) -> None:
        self.reference = state["reference"]  # the initial policy's, not the checkpoint's


# --------------------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------------------


def build(config: DPOConfig) -> DPOTrainer:
    """direct preference optimisation on comparison records

    DPO (Rafailov et al. 2023) on comparison records: no reward model, no sampling. Run under
    `torchrun --nproc_per_node=N -m chatforge.train dpo ...` for N processes.
    """
    if not config.policy or not config.comparisons:
        raise DPOConfigError("give --policy and --comparisons")
    from chatforge.data.comparisons import load_comparisons

    comparisons = load_comparisons(config.comparisons)  # (before the model: a bad file fails fast)
    policy, tokenizer = starting_point.load_policy(config.policy)
    return DPOTrainer(config, policy, tokenizer, comparisons)


COMMAND = StageCommand(
    "dpo", DPOConfig, build, (DPOConfigError, chat.ConversationError, models.ModelNotFoundError, FileExistsError,
                              ValueError),
    aliases={"output_dir": ["--out"], "learning_rate": ["--lr"]},
)
run_command = COMMAND.run
register_cli = COMMAND.register
main = COMMAND.main
