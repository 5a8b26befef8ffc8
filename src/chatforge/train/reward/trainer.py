"""``RewardTrainer``: train a reward model on ranked comparisons (InstructGPT's K-wise loss), normalise it so that
reference replies score 0, publish it and evaluate it on held-out comparisons.

All K responses of a prompt go through the model in the same micro-batch, packed without padding, and the loss
(``losses.ranking_loss``) averages -log sigmoid(r_w - r_l) over the prompt's C(K, 2) ordered pairs, then over
prompts. The run directory is ``checkpoint.CheckpointedTrainer``'s, plus ``rm_eval.json`` and its plots.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from chatforge import chat
from chatforge.data.comparisons import Comparison
from chatforge.decoder import base_model
from chatforge.train import common, losses, packing, starting_point, token_loss
from chatforge.train.checkpoint import CheckpointedTrainer
from chatforge.train.reward.config import RewardConfig, RewardConfigError, RewardDataError
from chatforge.train.reward.encoding import (
    EncodedComparison,
    encode_comparisons,
    fingerprint,
    prepare_tokenizer,
)
from chatforge.train.reward.evaluation import EVAL_FILE, evaluate_reward_model, require_matplotlib
from chatforge.train.reward.model import RewardModel, base_config, check_reward_model, normalisation_keys

log = logging.getLogger(__name__)


class PackedScores(nn.Module):
    """Rewards of sequences packed into rows without padding: the model's trunk over the rows (each sequence its own
    causal block, from restarting position ids: ``token_loss.hidden_at``), then its score head at each sequence's
    last token. Padding every response of a micro-batch to its longest (a prompt's demonstration, ranked with the
    samples, often runs several times longer) made the trunk compute on up to 3x the real tokens. DDP wraps this
    module, so its forward is the one whose gradients are synchronised."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, last_index: torch.Tensor) -> torch.Tensor:
        model: Any = self.model
        base = base_model(model)
        trunk, head = getattr(base, base.base_model_prefix), base.score  # (head: PEFT's trainable copy with LoRA)
        hidden = token_loss.hidden_at(trunk, input_ids, position_ids, last_index)
        return head(hidden)[:, 0].float()


@dataclass
class ComparisonBatch:
    input_ids: torch.Tensor  # [rows, width]: every response of every prompt of the micro-batch, packed
    position_ids: torch.Tensor
    last_index: torch.Tensor  # [N]: flat index of each sequence's last token
    slots: torch.Tensor  # [N]: where each sequence's reward goes in the flattened [B, K] rewards
    ranks: torch.Tensor  # [B, K], 0 for empty slots
    prompts: int
    tokens: int

    def scores(self, module: nn.Module) -> torch.Tensor:
        """One float32 reward per sequence, by a ``PackedScores`` (possibly DDP-wrapped)."""
        return module(self.input_ids, self.position_ids, self.last_index)


def collate(
    encoded: Sequence[EncodedComparison], indices: Sequence[int], pad_id: int, device: torch.device
) -> ComparisonBatch:
    items = [encoded[i] for i in indices]
    width = max(len(item.ranks) for item in items)
    ranks = torch.zeros((len(items), width), dtype=torch.long)
    sequences: list[Sequence[int]] = []
    slots = []
    for b, item in enumerate(items):
        ranks[b, : len(item.ranks)] = torch.tensor(item.ranks)
        for k, sequence in enumerate(item.sequences):
            sequences.append(sequence)
            slots.append(b * width + k)
    lengths = [len(seq) for seq in sequences]
    rows = packing.pack_rows(lengths, range(len(sequences)), max(lengths))
    input_ids, position_ids, start = packing.lay_out(sequences, rows, pad_id)
    last_index = [start[i] + lengths[i] - 1 for i in range(len(sequences))]
    return ComparisonBatch(
        input_ids=input_ids.to(device),
        position_ids=position_ids.to(device),
        last_index=torch.tensor(last_index, dtype=torch.long, device=device),
        slots=torch.tensor(slots, dtype=torch.long, device=device),
        ranks=ranks.to(device),
        prompts=len(items),
        tokens=sum(item.tokens for item in items),
    )


def ranked_rewards(scores: torch.Tensor, batch: ComparisonBatch) -> torch.Tensor:
    flat = torch.zeros(batch.ranks.numel(), dtype=scores.dtype, device=scores.device)
    return flat.index_copy(0, batch.slots, scores).view_as(batch.ranks)


@dataclass(frozen=True)
class RewardResult:
    step: int
    train_loss: float | None  # last step
    train_accuracy: float | None
    eval_loss: float | None  # last evaluation
    eval_accuracy: float | None
    offset: float  # mean raw score of the references, subtracted by RewardModel
    checkpoint_dir: Path | None
    final_dir: Path | None  # the normalised reward model (Hugging Face sequence classification)
    adapter_dir: Path | None  # LoRA runs
    eval_report: dict[str, Any] | None  # what rm_eval.json holds

    def summary(self) -> str:
        """What ``chatforge rm`` prints at the end."""
        lines = [f"done: {self.step} steps, last loss {self.train_loss:.4f}" if self.train_loss is not None else "done"]
        if self.eval_accuracy is not None:
            lines.append(f"held-out pairwise accuracy {self.eval_accuracy:.3f} (loss {self.eval_loss:.4f})")
        lines.append(f"reward model: {self.final_dir} (offset {self.offset:.4f})")
        if self.eval_report is not None and self.final_dir is not None:
            lines.append(f"evaluation: {self.final_dir.parent / EVAL_FILE}")
        return "\n".join(lines)


# Config fields that decide which examples form each step: a resumed run with other values would not continue
# the same data order.
_PLAN_FIELDS = ("seed", "batch_prompts", "grad_accum", "max_seq_len", "lora")


class RewardTrainer(CheckpointedTrainer[RewardResult]):
    """Train a one-label sequence-classification ``model`` on ranked comparisons, in place (with LoRA, adapters
    are added; ``trainer.model`` is the model being trained). ``references`` (conversations ending in a reference
    reply) set the normalisation; default: the top-ranked responses of the training comparisons."""

    what = "reward-model"
    config_error = RewardConfigError
    plan_note = "data a hash of the tokenized comparisons"
    run_markers = ("metrics.jsonl", "final", "rm_eval.json")
    run_files = ("metrics.jsonl", "run.json", "rm_eval.json", "calibration.png", "reward_vs_length.png")
    config: RewardConfig

    def __init__(
        self,
        config: RewardConfig,
        model: Any,
        tokenizer: Any,
        train_comparisons: Iterable[Comparison],
        eval_comparisons: Iterable[Comparison] | None = None,
        references: Iterable[chat.Conversation] | None = None,
        *,
        reference_name: str | None = None,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        check_reward_model(model)
        super().__init__(config, next(model.parameters()).device, on_log)
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.pad_id = int(self.tokenizer.pad_token_id)
        # transformers finds the scored token through the config's pad id: it must be the one we pad with.
        model.config.pad_token_id = self.pad_id

        self.train_comparisons = list(train_comparisons)
        if not self.train_comparisons:
            raise RewardDataError("no training comparisons")
        self.eval_comparisons = list(eval_comparisons) if eval_comparisons is not None else []
        self.train_encoded, train_cut = encode_comparisons(
            self.tokenizer, self.train_comparisons, config.max_seq_len
        )
        self.eval_encoded, eval_cut = encode_comparisons(
            self.tokenizer, self.eval_comparisons, config.max_seq_len
        )
        self.data_stats = {
            "train_comparisons": len(self.train_comparisons),
            "train_pairs": sum(len(c.pairs()) for c in self.train_comparisons),
            "train_truncated_sequences": train_cut,
            "eval_comparisons": len(self.eval_comparisons),
            "eval_pairs": sum(len(c.pairs()) for c in self.eval_comparisons),
            "eval_truncated_sequences": eval_cut,
            "responses_per_prompt": dict(sorted(Counter(c.k for c in self.train_comparisons).items())),
        }
        if references is not None:
            self.references = list(references)
            self.reference_name = reference_name or "given reference replies"
        else:
            self.references = [c.conversation(k) for c in self.train_comparisons for k in c.best()]
            self.reference_name = "top-ranked training responses"
        if not self.references:
            raise RewardDataError("no reference replies to normalise the reward with")
        for conversation in self.references:
            if conversation.messages[-1].role != "assistant":
                raise RewardDataError(
                    f"reference {conversation.id!r} must end with the assistant reply to score"
                )
        if config.plots and self.eval_comparisons:
            require_matplotlib()  # now, not after an hour of training
        self._fingerprint = fingerprint(self.train_encoded)
        self._normalisation: dict[str, Any] = {}  # what publish_final_normalised adds to final/config.json

        random.seed(config.seed)
        torch.manual_seed(config.seed)  # LoRA initialisation draws from it
        if config.lora:
            model = starting_point.with_lora(model, config, task_type="SEQ_CLS")
        self.model = model
        self.trainable = starting_point.trainable_parameters(model, RewardConfigError)
        self.bf16 = common.use_bf16(config.bf16, self.device)
        self.optimizer = common.adamw_with_decay(self.trainable, config.learning_rate, config.weight_decay)
        if self.steps_per_epoch == 0:
            raise RewardDataError(
                f"{len(self.train_encoded)} training comparisons fill fewer micro-batches than one optimizer step "
                f"takes ({config.grad_accum} accumulation x {self.dist.world_size} processes); use smaller "
                "batch_prompts, less accumulation or more data"
            )
        self.total_steps = config.max_steps or self.steps_per_epoch * config.epochs
        self.scheduler = common.warmup_schedule(
            self.optimizer, config.warmup(self.total_steps), decay=config.lr_schedule, total_steps=self.total_steps
        )

    # ----------------------------------------------------------------------------------------------------------
    # Data plan
    # ----------------------------------------------------------------------------------------------------------

    @property
    def _per_step(self) -> int:
        return self.config.grad_accum * self.dist.world_size

    @property
    def steps_per_epoch(self) -> int:
        micro_batches = math.ceil(len(self.train_encoded) / self.config.batch_prompts)
        return micro_batches // self._per_step  # an incomplete last step is left out, as in drop_last

    def epoch_plan(self, epoch: int) -> list[list[int]]:
        """The micro-batches (lists of comparison indices) of ``epoch``, all processes together."""
        order = packing.epoch_order(len(self.train_encoded), seed=self.config.seed, epoch=epoch)
        size = self.config.batch_prompts
        return [order[i : i + size] for i in range(0, len(order), size)]

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # ----------------------------------------------------------------------------------------------------------
    # Training
    # ----------------------------------------------------------------------------------------------------------

    def _run(self) -> RewardResult:
        config = self.config
        self.model.train()
        module = self._distributed(PackedScores(self.model))
        self._describe_run()
        bar = self._progress_bar()
        started = time.monotonic()
        last: dict[str, Any] = {}
        evaluation: dict[str, float] = {}
        epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
        plan = self.epoch_plan(epoch)
        while self.step < self.total_steps:
            if in_epoch == self.steps_per_epoch:
                epoch, in_epoch = epoch + 1, 0
                plan = self.epoch_plan(epoch)
            mine = packing.process_share(plan, in_epoch, config.grad_accum, self.dist.rank, self.dist.world_size)
            step_started = time.monotonic()
            lr = float(self.scheduler.get_last_lr()[0])
            batches = [collate(self.train_encoded, indices, self.pad_id, self.device) for indices in mine]
            last = self._train_step(module, batches)
            step_time = time.monotonic() - step_started
            self.step += 1
            in_epoch += 1
            self._log_step(
                bar,
                {
                    "kind": "train",
                    "step": self.step,
                    "epoch": round(epoch + in_epoch / self.steps_per_epoch, 4),
                    **last,
                    "lr": lr,
                    "prompts_per_s": last["prompts"] / step_time if step_time > 0 else 0.0,
                    "elapsed": self._elapsed(started),
                },
                loss=f"{last['loss']:.4f}", acc=f"{last['accuracy']:.3f}",
            )
            if self.eval_encoded and self._due(config.eval_every):
                evaluation = self.evaluate()
                self.log({"kind": "eval", "step": self.step, **evaluation})
            if self._due(self.config.save_every):
                self.save_checkpoint(self._elapsed(started))
        bar.close()
        if self.eval_encoded and not evaluation:  # resumed from the final checkpoint: nothing was trained
            evaluation = self.evaluate()
        offset, spread = self.normalise()
        final_dir, adapter_dir = self.publish_final_normalised(offset, spread)
        report = None
        if self.eval_comparisons and self.dist.is_main:
            scorer = RewardModel(self.model, self.tokenizer, offset=offset, max_seq_len=config.max_seq_len)
            report = evaluate_reward_model(
                scorer,
                self.eval_comparisons,
                self.output_dir,
                batch_size=config.score_batch_size,
                plots=config.plots,
            )
            log.info(
                "held-out pairwise accuracy %.3f over %d pairs", report["accuracy"] or 0.0, report["pairs"]
            )
        self.dist.barrier()
        return RewardResult(
            step=self.step,
            train_loss=last.get("loss"),
            train_accuracy=last.get("accuracy"),
            eval_loss=evaluation.get("eval_loss"),
            eval_accuracy=evaluation.get("eval_accuracy"),
            offset=offset,
            checkpoint_dir=self.checkpoint_dir(self.step),
            final_dir=final_dir,
            adapter_dir=adapter_dir,
            eval_report=report,
        )

    def _train_step(self, module: nn.Module, batches: list[ComparisonBatch]) -> dict[str, Any]:
        """One optimizer step over this process's micro-batches; the returned numbers cover every process."""
        local_prompts = sum(b.prompts for b in batches)
        (total_prompts,) = self.dist.sum([local_prompts])
        # Every training comparison has a pair, so each micro-batch's loss is a mean over its prompts; weighting
        # it by its share of the step's prompts (times world size, which DDP's averaging divides back out) makes
        # the step's gradient that of the mean over all the step's prompts, however they were split.
        loss_sum = correct = pairs = tokens = 0.0
        reward_sum = reward_square_sum = responses = 0.0
        for i, batch in enumerate(batches):
            with common.gradient_sync(module, last=i == len(batches) - 1):
                with self._autocast():
                    scores = batch.scores(module)
                loss, stats = losses.ranking_loss(
                    ranked_rewards(scores, batch), batch.ranks, self.config.margin
                )
                (loss * (stats.prompts * self.dist.world_size / total_prompts)).backward()
            loss_sum += float(loss.detach()) * stats.prompts
            correct += stats.correct
            pairs += stats.pairs
            tokens += batch.tokens
            detached = scores.detach().double()
            reward_sum += float(detached.sum())
            reward_square_sum += float((detached**2).sum())
            responses += len(detached)
        grad_norm = common.optimizer_step(self.trainable, self.optimizer, self.scheduler, self.config.max_grad_norm)
        loss_sum, correct, pairs, tokens, reward_sum, reward_square_sum, responses = self.dist.sum(
            [loss_sum, correct, pairs, tokens, reward_sum, reward_square_sum, responses]
        )
        mean = reward_sum / responses
        return {
            "loss": loss_sum / total_prompts,
            "accuracy": correct / pairs if pairs else float("nan"),
            "pairs": int(pairs),
            "prompts": int(total_prompts),
            "grad_norm": grad_norm,
            "reward_mean": mean,
            "reward_std": math.sqrt(max(reward_square_sum / responses - mean * mean, 0.0)),
            "tokens": int(tokens),
        }

    def evaluate(self) -> dict[str, float]:
        """Loss and pairwise accuracy over the held-out comparisons (each process takes a share)."""
        if not self.eval_encoded:
            return {}
        was_training = self.model.training
        self.model.eval()
        loss_sum = prompts = correct = pairs = 0.0
        size = self.config.batch_prompts
        chunks = [
            list(range(i, min(i + size, len(self.eval_encoded))))
            for i in range(0, len(self.eval_encoded), size)
        ]
        scorer = PackedScores(self.model)
        with torch.no_grad(), self._autocast():
            for indices in chunks[self.dist.rank :: self.dist.world_size]:
                batch = collate(self.eval_encoded, indices, self.pad_id, self.device)
                scores = batch.scores(scorer)
                loss, stats = losses.ranking_loss(
                    ranked_rewards(scores, batch), batch.ranks, self.config.margin
                )
                loss_sum += float(loss) * stats.prompts
                prompts += stats.prompts
                correct += stats.correct
                pairs += stats.pairs
        self.model.train(was_training)
        loss_sum, prompts, correct, pairs = self.dist.sum([loss_sum, prompts, correct, pairs])
        return {
            "eval_loss": loss_sum / prompts if prompts else float("nan"),
            "eval_accuracy": correct / pairs if pairs else float("nan"),
            "eval_pairs": int(pairs),
        }

    def normalise(self) -> tuple[float, float]:
        """(mean, std) of the raw scores of the reference replies; the mean becomes the stored offset. Scored in
        float32 without autocast, as ``RewardModel.load`` scores by default, so the references of the saved
        model average 0 exactly as loaded."""
        scorer = RewardModel(self.model, self.tokenizer, offset=0.0, max_seq_len=self.config.max_seq_len)
        mine = self.references[self.dist.rank :: self.dist.world_size]
        raw = scorer.score(mine, batch_size=self.config.score_batch_size, normalize=False) if mine else []
        total, square, count = self.dist.sum([sum(raw), sum(r * r for r in raw), len(raw)])
        mean = total / count
        spread = math.sqrt(max(square / count - mean * mean, 0.0))
        if self.dist.is_main:
            log.info(
                "reward offset %.4f (std %.4f) from %d %s", mean, spread, int(count), self.reference_name
            )
        return mean, spread

    # ----------------------------------------------------------------------------------------------------------
    # What the run directory saves (see checkpoint.CheckpointedTrainer)
    # ----------------------------------------------------------------------------------------------------------

    def plan_signature(self) -> dict[str, Any]:
        return self._plan(_PLAN_FIELDS, data=self._fingerprint)

    def _checkpoint_summary(self, elapsed: float) -> dict[str, Any]:
        return {"step": self.step, "total_steps": self.total_steps, "elapsed": elapsed, "config": self.config.to_dict()}

    def publish_final_normalised(self, offset: float, spread: float) -> tuple[Path, Path | None]:
        """``final/``: the last checkpoint's model (hard-linked) with the normalisation added to its config."""
        self._normalisation = normalisation_keys(
            offset, spread, self.reference_name, len(self.references), self.config.max_seq_len
        )
        final, adapter = self.publish_final()
        for key, value in self._normalisation.items():  # the in-memory model now describes the same reward
            setattr(base_config(self.model), key, value)
        return final, adapter

    def _fill_final(self, tmp: Path, checkpoint: Path) -> None:
        config_path = tmp / "config.json"
        values = json.loads(config_path.read_text(encoding="utf-8"))
        values.update(self._normalisation)
        config_path.unlink()  # a hard link to the checkpoint's file: replace it, never write through it
        config_path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def _describe_run(self) -> None:
        info = self.write_run_info(
            total_steps=self.total_steps,
            pad_token_id=self.pad_id,
            data=self.data_stats,
            references={"name": self.reference_name, "count": len(self.references)},
        )
        if self.dist.is_main:
            log.info(
                "%d training comparisons (%d pairs), %d held out; %d steps of %d micro-batch(es) x %d "
                "process(es); bf16 autocast %s; %s trainable parameters",
                self.data_stats["train_comparisons"],
                self.data_stats["train_pairs"],
                self.data_stats["eval_comparisons"],
                self.total_steps,
                self.config.grad_accum,
                self.dist.world_size,
                "on" if self.bf16 else "off",
                f"{info['trainable_parameters']:,}",
            )


