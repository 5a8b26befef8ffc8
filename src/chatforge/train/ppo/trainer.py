"""``PPOTrainer``: rollouts, rewards with the KL penalty, GAE and the clipped PPO update (see the package docstring
for one step), with the value head on the policy's trunk."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from chatforge import chat
from chatforge.decoder import LeanDecoder, base_model, unsupported_reason
from chatforge.generation import SamplingParams, TorchEngine, left_padded
from chatforge.train import common, losses, packing, rollout, starting_point, token_loss
from chatforge.train.checkpoint import CheckpointedTrainer, read_jsonl
from chatforge.train.ppo.config import PPOConfig, PPOConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PPOResult:
    step: int
    reward: float | None  # mean RM score of the last step's rollouts
    kl: float | None  # mean KL (sum of k1 over the response) of the last step
    checkpoint_dir: Path | None
    final_dir: Path | None
    adapter_dir: Path | None

    def summary(self) -> str:
        """What ``chatforge ppo`` prints at the end."""
        return f"done: {self.step} steps, reward {self.reward:.4f}, KL {self.kl:.4f}\npolicy: {self.final_dir}"


class _PolicyValue(nn.Module):
    """Policy + value head as one module (what DDP wraps): per response token, log-prob, entropy and value; and
    the PPO-ptx loss of an SFT batch in the same forward."""

    def __init__(
        self,
        model: nn.Module,
        value_head: nn.Linear,
        temperature: float,
        compute_dtype: torch.dtype | None,
        entropy_grad: bool = True,
    ):
        super().__init__()
        self.model = model
        self.value_head = value_head
        self.temperature = temperature
        self.compute_dtype = compute_dtype
        self.entropy_grad = entropy_grad  # False when the loss has no entropy bonus: entropy is then only monitored

    def forward(
        self, batch: rollout.Packed, ptx: packing.PackedBatch | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        out = rollout.sequence_forward(
            self.model, batch, temperature=self.temperature, compute_dtype=self.compute_dtype,
            entropy_grad=self.entropy_grad,
        )
        values = self.value_head(out.hidden.float())[:, 0]
        ptx_loss = None
        if ptx is not None:
            parts = token_loss.lm_parts(self.model)
            ptx_loss = token_loss.packed_lm_loss(
                parts, ptx.input_ids, ptx.position_ids, ptx.target_index, ptx.targets, compute_dtype=self.compute_dtype
            ) / max(ptx.num_targets, 1)
        assert out.entropy is not None
        return out.logprobs, out.entropy, values, ptx_loss


@dataclass
class _Batch:
    """A step's rollouts as padded [B, T] tensors (T = longest response) plus what the update needs."""

    rollouts: list[rollout.Rollout]
    mask: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    # single-pass steps (one epoch, one minibatch): the training forward's outputs (log-probs, entropy, values,
    # PPO-ptx loss), still attached to the autograd graph, so the update does not run the forward again
    graph: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None


def _hidden_size(model: Any) -> int:
    base = base_model(model)
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    return int(config.hidden_size)


class PPOTrainer(CheckpointedTrainer[PPOResult]):
    """PPO on ``policy`` (trained in place; with LoRA ``trainer.model`` is the peft model) against ``reward``."""

    what = "PPO"
    config_error = PPOConfigError
    plan_note = "prompts a hash of the prompts"
    run_files = ("metrics.jsonl", "run.json", "reward_kl.png")
    config: PPOConfig

    def __init__(
        self,
        config: PPOConfig,
        policy: Any,
        tokenizer: Any,
        reward: Any,
        prompts: Sequence[Any],
        ptx_conversations: Sequence[chat.Conversation] | None = None,
        *,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(config, next(policy.parameters()).device, on_log)
        self.tokenizer = tokenizer
        self.total_steps = config.steps
        self.score = rollout.scorer(reward, config.reward_batch_size)
        self.contexts = [rollout.as_context(p) for p in prompts]
        if not self.contexts:
            raise PPOConfigError("no prompts")
        self.ptx_examples: list[packing.Example] = []
        if config.ptx_coef > 0:
            if not ptx_conversations:
                raise PPOConfigError("ptx_coef > 0 needs SFT conversations (ptx_conversations, --ptx-data)")
            self.ptx_examples, _ = packing.encode_examples(tokenizer, ptx_conversations, config.max_seq_len, what="ptx")
        self._pad_id = next((int(i) for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if isinstance(i, int)), 0)

        random.seed(config.seed)
        torch.manual_seed(config.seed)
        if config.lora:
            policy = starting_point.with_lora(policy, config)
            self.reference = None  # the same weights with the adapters disabled
        else:
            self.reference = copy.deepcopy(policy).eval().requires_grad_(False)
        self.model = policy.eval()
        self.value_head = nn.Linear(_hidden_size(policy), 1).to(self.device)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.trainable = [p for p in policy.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.bf16 = common.use_bf16(config.bf16, self.device)
        # Full fine-tuning without autocast on a CPU: the frozen reference runs through the lean decoder, packed once
        # (its no-grad prefill measured 1.7x faster than the model's own forward at 8 x 94 tokens; float32 logits
        # agree to ~1e-5). Under autocast the reference keeps the policy's numerics: the model's forward.
        self._reference_decoder: LeanDecoder | None = None
        if self.reference is not None and not self.bf16 and self.device.type == "cpu" and unsupported_reason(self.reference) is None:
            self._reference_decoder = LeanDecoder(self.reference, dtype=next(self.reference.parameters()).dtype)
        self._module = _PolicyValue(
            self.model, self.value_head, config.temperature, torch.bfloat16 if self.bf16 else None,
            entropy_grad=config.entropy_coef != 0,
        )
        self.optimizer = common.adamw(self.trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = common.warmup_schedule(self.optimizer, config.warmup_steps)
        self.engine = TorchEngine(self.model, tokenizer, decode_dtype=config.decode_dtype)
        self.kl_coef = float(config.kl_coef)
        self._updates_done = 0  # optimizer steps so far (they pick the PPO-ptx batches)

    # ----------------------------------------------------------------------------------------------------------
    # Data
    # ----------------------------------------------------------------------------------------------------------

    def step_contexts(self, step: int) -> list[tuple[chat.Message, ...]]:
        """This process's prompts of ``step``: the seeded, per-epoch shuffled prompt list, cycled."""
        n, per_step = len(self.contexts), self.config.batch_size * self.dist.world_size
        out = []
        for i in range(self.config.batch_size):
            g = step * per_step + self.dist.rank * self.config.batch_size + i
            out.append(self.contexts[packing.epoch_order(n, seed=self.config.seed, epoch=g // n)[g % n]])
        return out

    def _ptx_batch(self, update: int) -> packing.PackedBatch | None:
        if not self.ptx_examples:
            return None
        n, size = len(self.ptx_examples), self.config.ptx_batch_sequences
        first = (update * self.dist.world_size + self.dist.rank) * size
        indices = [packing.epoch_order(n, seed=self.config.seed, epoch=g // n)[g % n] for g in range(first, first + size)]
        lengths = [len(e) for e in self.ptx_examples]
        batch = packing.collate(
            self.ptx_examples, indices, row_capacity=max(lengths[i] for i in indices), pad_id=self._pad_id
        )
        return batch.to(self.device)

    # ----------------------------------------------------------------------------------------------------------
    # Rollouts
    # ----------------------------------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _reference_context(self) -> contextlib.AbstractContextManager[Any]:
        return self.model.disable_adapter() if self.reference is None else contextlib.nullcontext()

    @torch.no_grad()
    def reference_logprobs(self, rollouts: Sequence[rollout.Rollout]) -> torch.Tensor:
        """Log-probs of the response tokens of ``rollouts`` (flat, rollout after rollout) under the reference
        (initial) policy, ``forward_batch_size`` sequences a forward pass."""
        size = self.config.forward_batch_size
        chunks = [rollouts[i : i + size] for i in range(0, len(rollouts), size)]
        if self._reference_decoder is not None:
            return torch.cat([self._lean_reference_logprobs(self._reference_decoder, chunk) for chunk in chunks])
        out = []
        with self._reference_context(), self._autocast():
            model = self.model if self.reference is None else self.reference
            for chunk in chunks:
                out.append(rollout.sequence_forward(
                    model, self._pack(chunk), temperature=self.config.temperature, with_entropy=False,
                    compute_dtype=self._module.compute_dtype,
                ).logprobs.float())
        return torch.cat(out)

    def _lean_reference_logprobs(self, decoder: LeanDecoder, chunk: Sequence[rollout.Rollout]) -> torch.Tensor:
        sequences = [r.prompt_ids + r.response_ids for r in chunk]
        ids, valid, positions = left_padded(sequences, self._pad_id)
        width = ids.shape[1]
        rows: list[int] = []
        cols: list[int] = []
        for i, (seq, r) in enumerate(zip(sequences, chunk, strict=True)):
            first = width - len(seq) + len(r.prompt_ids)  # column of the first response token
            rows += [i] * len(r.response_ids)
            cols += range(first - 1, first - 1 + len(r.response_ids))  # each predicted by the column before it
        hidden = decoder.hidden_states(ids, positions, valid.bool())
        logits = decoder.logits(hidden[rows, cols])
        if self.config.temperature != 1.0:
            logits = logits / self.config.temperature
        targets = torch.tensor([t for r in chunk for t in r.response_ids], dtype=torch.long)
        return torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None])[:, 0]

    def _pack(self, rollouts: Sequence[rollout.Rollout]) -> rollout.Packed:
        return rollout.pack([(r.prompt_ids + r.response_ids, len(r.prompt_ids)) for r in rollouts], self._pad_id, self.device)

    @property
    def single_pass(self) -> bool:
        """One epoch over one minibatch of the whole rollout batch: the old log-probs and values are exactly those
        of the training forward (same weights, eval mode), so that forward runs once, with gradients, and serves
        both (TRL's GRPO does the same with a single iteration)."""
        return self.config.ppo_epochs == 1 and self.config.mini_batch_size >= self.config.batch_size

    def make_rollouts(self, step: int, module: nn.Module | None = None) -> tuple[_Batch, dict[str, float]]:
        """Sample, score and evaluate this process's rollouts of ``step``; the advantages are whitened over every
        process's tokens. ``module`` (the policy + value head, DDP-wrapped when distributed) runs the single-pass
        training forward."""
        config = self.config
        params = SamplingParams(
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            seed=(config.seed * 1_000_003 + step) * 1009 + self.dist.rank,
        )
        started = time.monotonic()
        rollouts = rollout.generate(self.engine, self.step_contexts(step), params, max_prompt_tokens=config.max_prompt_tokens)
        generation_time = time.monotonic() - started
        scores = rollout.score_rollouts(self.score, rollouts, empty_reward=config.empty_reward)
        rm_scores = list(scores)
        if config.truncation_reward is not None:
            scores = [config.truncation_reward if r.truncated else s for r, s in zip(rollouts, scores, strict=True)]

        # (packed sequences, policy outputs) per forward: one forward with gradients in a single-pass step (the
        # update reuses it), else no-grad forwards of forward_batch_size sequences
        forwards: list[tuple[rollout.Packed, tuple[Any, ...]]] = []
        graph = None
        if self.single_pass:
            packed = self._pack(rollouts)
            with self._autocast():
                graph = (module or self._module)(packed, self._ptx_batch(self._updates_done))
            forwards.append((packed, graph))
        else:
            with torch.no_grad():
                for start in range(0, len(rollouts), config.forward_batch_size):
                    packed = self._pack(rollouts[start : start + config.forward_batch_size])
                    with self._autocast():
                        forwards.append((packed, self._module(packed)))
        old_lp, values, entropy = [], [], []
        for packed, (lp, ent, val, _) in forwards:
            for a, b in packed.spans:
                old_lp.append(lp[a:b].detach().float())
                entropy.append(ent[a:b].detach().float())
                values.append(val[a:b].detach().float())
        lengths = [len(r.response_ids) for r in rollouts]
        ref_lp = list(self.reference_logprobs(rollouts).split(lengths))
        pad = lambda xs: rollout.padded(torch.cat([x[None] if x.ndim == 0 else x for x in xs]), _cumulative(lengths))  # noqa: E731
        mask = rollout.response_mask(lengths)
        old_logprobs, ref_logprobs, old_values, entropies = pad(old_lp), pad(ref_lp), pad(values), pad(entropy)
        kl = losses.kl_estimate(old_logprobs, ref_logprobs, "k1") * mask
        rewards = -self.kl_coef * kl
        last = torch.tensor(lengths) - 1
        rewards[torch.arange(len(rollouts)), last] += torch.tensor(scores)
        advantages, returns = losses.gae(rewards, old_values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            n, s, ss = self.dist.sum([float(mask.sum()), float((advantages * mask).sum()), float((advantages**2 * mask).sum())])
            mean = s / n
            var = max(ss / n - mean * mean, 0.0) * (n / (n - 1) if n > 1 else 1.0)
            advantages = (advantages - mean) / (var + 1e-8) ** 0.5 * mask
        kl_seq = kl.sum(dim=1)
        k3 = (losses.kl_estimate(old_logprobs, ref_logprobs, "k3") * mask).sum(dim=1)
        batch = _Batch(rollouts, mask, old_logprobs, ref_logprobs, old_values, advantages, returns, graph)
        total = [s + float(r) for s, r in zip(scores, (-self.kl_coef * kl_seq).tolist(), strict=True)]
        sums = self.dist.sum([
            len(rollouts), sum(rm_scores), sum(scores), sum(total), float(kl_seq.sum()), float(k3.sum()),
            float((entropies * mask).sum()), float(mask.sum()), sum(r.truncated for r in rollouts),
            generation_time, float(losses.masked_sum(returns, mask)), float(losses.masked_sum(returns**2, mask)),
            float(losses.masked_sum((returns - old_values) ** 2, mask)), float(losses.masked_sum(returns - old_values, mask)),
        ])
        (count, rm_sum, score_sum, total_sum, kl_sum, k3_sum, ent_sum, tokens, truncated, gen_time,
         r_sum, r_sq, res_sq, res_sum) = sums
        var_r = r_sq / tokens - (r_sum / tokens) ** 2
        var_res = res_sq / tokens - (res_sum / tokens) ** 2
        stats = {
            "reward": rm_sum / count,
            "reward_score": score_sum / count,
            "reward_total": total_sum / count,
            "kl": kl_sum / count,
            "kl_k3": k3_sum / count,
            "kl_coef": self.kl_coef,
            "entropy": ent_sum / tokens,
            "response_length": tokens / count,
            "truncated": truncated / count,
            "explained_variance": 1.0 - var_res / var_r if var_r > 0 else float("nan"),
            "generation_time": gen_time / self.dist.world_size,
            "response_tokens": tokens,
        }
        return batch, stats

    # ----------------------------------------------------------------------------------------------------------
    # Update
    # ----------------------------------------------------------------------------------------------------------

    def _update(self, module: nn.Module, batch: _Batch, step: int) -> dict[str, float]:
        config = self.config
        n = len(batch.rollouts)
        sums: dict[str, float] = {"policy_loss": 0.0, "value_loss": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0,
                                  "value_clip_fraction": 0.0, "ptx_loss": 0.0, "grad_norm": 0.0}
        updates = 0
        stopped = False
        epochs_done = 0
        for epoch in range(config.ppo_epochs):
            order = list(range(n))
            if batch.graph is None:  # (a single minibatch of everything needs no shuffle: its loss is a mean)
                random.Random(hash((config.seed, step, epoch, self.dist.rank)) & 0xFFFFFFFF).shuffle(order)
            for start in range(0, n - config.mini_batch_size + 1, config.mini_batch_size):
                idx = order[start : start + config.mini_batch_size]
                rolls = [batch.rollouts[i] for i in idx]
                packed = self._pack(rolls)
                width = max(len(r.response_ids) for r in rolls)
                take = lambda t: t[idx][:, :width]  # noqa: B023, E731
                mask = take(batch.mask)
                if batch.graph is not None:
                    lp, ent, val, ptx_loss = batch.graph
                    batch.graph = None  # used once
                else:
                    with self._autocast():
                        lp, ent, val, ptx_loss = module(packed, self._ptx_batch(self._updates_done))
                logprobs = rollout.padded(lp.float(), packed.spans, width)
                values = rollout.padded(val.float(), packed.spans, width)
                entropy = rollout.padded(ent.float(), packed.spans, width)
                pg, pstats = losses.policy_loss(logprobs, take(batch.old_logprobs), take(batch.advantages), mask, config.clip_range)
                vl, vclip = losses.value_loss(values, take(batch.old_values), take(batch.returns), mask, config.clip_range_value)
                loss = pg + config.vf_coef * vl
                if config.entropy_coef:
                    loss = loss - config.entropy_coef * losses.masked_mean(entropy, mask)
                if ptx_loss is not None:
                    loss = loss + config.ptx_coef * ptx_loss
                loss.backward()
                grad_norm = common.optimizer_step(self.trainable, self.optimizer, self.scheduler, config.max_grad_norm)
                self._updates_done += 1
                updates += 1
                local = [float(pg.detach()), float(vl.detach()), pstats.clip_fraction, pstats.approx_kl, vclip,
                         float(ptx_loss.detach()) if ptx_loss is not None else 0.0, grad_norm]
                mean = [v / self.dist.world_size for v in self.dist.sum(local)]
                for key, value in zip(sums, mean, strict=True):
                    sums[key] += value
                if config.early_stop_kl is not None and mean[3] > config.early_stop_kl:
                    stopped = True  # every process saw the same mean, so all stop together
                    break
            epochs_done = epoch + 1
            if stopped:
                break
        out = {key: value / max(updates, 1) for key, value in sums.items()}
        out.update(ppo_epochs=epochs_done, ppo_updates=updates, early_stopped=float(stopped))
        return out

    # ----------------------------------------------------------------------------------------------------------
    # The loop
    # ----------------------------------------------------------------------------------------------------------

    def _run(self) -> PPOResult:
        config = self.config
        module = self._distributed(self._module)
        self.write_run_info(prompts=len(self.contexts))
        bar = self._progress_bar()
        started = time.monotonic()
        stats: dict[str, float] = {}
        while self.step < config.steps:
            step_started = time.monotonic()
            self.model.eval()
            batch, stats = self.make_rollouts(self.step, module)
            update = self._update(module, batch, self.step)
            step_time = time.monotonic() - step_started
            kl_coef_used = self.kl_coef
            if config.adaptive_kl_target is not None:
                self.kl_coef = losses.adaptive_kl_coef(
                    self.kl_coef, stats["kl"], config.adaptive_kl_target, config.batch_size * self.dist.world_size, config.kl_horizon
                )
            self.step += 1
            record = {"kind": "train", "step": self.step, **stats, **update, "kl_coef": kl_coef_used,
                      "lr": float(self.scheduler.get_last_lr()[0]),
                      "tokens_per_s": stats["response_tokens"] / step_time if step_time > 0 else 0.0,
                      "generation_share": stats["generation_time"] / step_time if step_time > 0 else 0.0,
                      "step_time": step_time,
                      "elapsed": self._elapsed(started)}
            self._log_step(bar, record, reward=f"{stats['reward']:.3f}", kl=f"{stats['kl']:.3f}")
            if self._due(self.config.save_every):
                self.save_checkpoint(self._elapsed(started))
        bar.close()
        final_dir, adapter_dir = self.publish_final()
        if self.dist.is_main:
            try:
                plot_curves(self.output_dir / "metrics.jsonl", self.output_dir / "reward_kl.png")
            except ImportError:
                log.warning("matplotlib is not installed: no reward_kl.png")
        return PPOResult(self.step, stats.get("reward"), stats.get("kl"), self.checkpoint_dir(self.step), final_dir, adapter_dir)

    # ----------------------------------------------------------------------------------------------------------
    # What the run directory saves (see checkpoint.CheckpointedTrainer): the value head and the KL controller too
    # ----------------------------------------------------------------------------------------------------------

    def plan_signature(self) -> dict[str, Any]:
        digest = hashlib.sha256(
            json.dumps([[m.to_dict() for m in c] for c in self.contexts], sort_keys=True).encode()
        ).hexdigest()[:16]
        return self._plan(("seed", "batch_size", "lora"), prompts=digest)

    def _extra_state(self) -> dict[str, Any]:
        return {"value_head": self.value_head.state_dict(), "kl_coef": self.kl_coef, "updates_done": self._updates_done}

    def _restore_extra_state(self, state: dict[str, Any]) -> None:
        self.value_head.load_state_dict(state["value_head"])
        self.kl_coef = float(state["kl_coef"])
        self._updates_done = int(state["updates_done"])

    def _checkpoint_summary(self, elapsed: float) -> dict[str, Any]:
        return {"step": self.step, "kl_coef": self.kl_coef, "elapsed": elapsed, "config": self.config.to_dict()}

    def _fill_checkpoint(self, tmp: Path) -> None:
        _save_value_head(self.value_head, tmp)  # beside model/, which resume loads whole

    def _fill_final(self, tmp: Path, checkpoint: Path) -> None:
        shutil.copy2(checkpoint / "value_head.safetensors", tmp / "value_head.safetensors")


def _cumulative(lengths: Sequence[int]) -> list[tuple[int, int]]:
    spans, start = [], 0
    for n in lengths:
        spans.append((start, start + n))
        start += n
    return spans


def _save_value_head(head: nn.Linear, directory: Path) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in head.state_dict().items()}, str(directory / "value_head.safetensors"))


def plot_curves(metrics_path: Path, out: Path) -> Path:
    """Reward (RM score and total) and KL per step, from a run's metrics.jsonl, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_jsonl(metrics_path) if r.get("kind") == "train"]
    steps = [r["step"] for r in records]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(steps, [r["reward"] for r in records], label="reward model score")
    ax1.plot(steps, [r["reward_total"] for r in records], label="score - beta KL")
    ax1.set_xlabel("step")
    ax1.set_title("reward")
    ax1.legend()
    ax2.plot(steps, [r["kl"] for r in records], color="tab:red", label="KL to SFT (per response)")
    ax2.set_xlabel("step")
    ax2.set_title("KL")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
