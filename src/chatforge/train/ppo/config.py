"""PPO's configuration: ``PPOConfig`` (YAML keys and long CLI flags have the same names) and its error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from chatforge import models
from chatforge.train import config as config_io


class PPOConfigError(ValueError):
    """A PPO configuration that cannot run; the message lists every problem found."""


@dataclass
class PPOConfig(config_io.ConfigIO, config_io.RunOptions, config_io.PolicyLoRAOptions):
    """Everything that decides a PPO run. YAML keys and long CLI flags have the same names."""

    _error: ClassVar[type[ValueError]] = PPOConfigError
    _what: ClassVar[str] = "PPO"
    # Both were called "target": one the KL the adaptive controller aims for, the other the early stop.
    _renamed: ClassVar[dict[str, str]] = {"kl_target": "adaptive_kl_target", "target_kl": "early_stop_kl"}

    output_dir: str = field(metadata={"help": "run directory: metrics, checkpoints, final model"})
    policy: str | None = field(default=None, metadata={"help": "SFT run directory or model to start from (command)"})
    reward_model: str | None = field(default=None, metadata={"help": "reward-model directory (command)"})
    prompts: str | None = field(
        default=None, metadata={"help": "prompt source: a JSONL file or a named source (command)"}
    )
    ptx_data: str | None = field(
        default=None, metadata={"help": "SFT conversations (JSONL) for PPO-ptx (command; needs ptx_coef > 0)"}
    )

    steps: int = field(default=100, metadata={"help": "PPO steps (rollout + update rounds)"})
    batch_size: int = field(default=16, metadata={"help": "prompts per step per process"})
    mini_batch_size: int = field(default=8, metadata={"help": "rollouts per optimizer step per process"})
    ppo_epochs: int = field(default=4, metadata={"help": "passes over each rollout batch"})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate (LoRA: ~1e-4)"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warmup over this many optimizer steps"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "clip the gradient norm (null: off)"})

    max_new_tokens: int = field(default=64, metadata={"help": "longest response in tokens"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the rollouts"})
    max_prompt_tokens: int = field(default=512, metadata={"help": "longer prompts keep their last tokens"})

    kl_coef: float = field(default=0.05, metadata={"help": "beta of the per-token KL penalty (initial, if adaptive)"})
    adaptive_kl_target: float | None = field(
        default=None, metadata={"help": "adapt beta towards this KL per response (Ziegler et al.); null: fixed"}
    )
    kl_horizon: int = field(default=10000, metadata={"help": "horizon of the adaptive KL controller"})
    gamma: float = field(default=1.0, metadata={"help": "discount of GAE"})
    lam: float = field(default=0.95, metadata={"help": "lambda of GAE"})
    clip_range: float = field(default=0.2, metadata={"help": "PPO ratio clip epsilon"})
    clip_range_value: float | None = field(default=0.2, metadata={"help": "value clip (null: unclipped)"})
    vf_coef: float = field(default=0.1, metadata={"help": "weight of the value loss"})
    entropy_coef: float = field(default=0.0, metadata={"help": "weight of the entropy bonus"})
    whiten_advantages: bool = field(default=True, metadata={"help": "normalise advantages over the batch"})
    early_stop_kl: float | None = field(
        default=None, metadata={"help": "stop a step's PPO epochs when approx-KL exceeds this (null: never)"}
    )
    truncation_reward: float | None = field(
        default=None, metadata={"help": "score of responses cut at max_new_tokens (null: the reward model's)"}
    )
    empty_reward: float = field(default=-1.0, metadata={"help": "score of an empty response"})

    ptx_coef: float = field(default=0.0, metadata={"help": "PPO-ptx: weight of the SFT loss (gamma in the paper)"})
    ptx_batch_sequences: int = field(default=4, metadata={"help": "SFT conversations per optimizer step"})
    max_seq_len: int = field(default=1024, metadata={"help": "PPO-ptx conversations are truncated to this"})

    reward_batch_size: int = field(default=16, metadata={"help": "batch size of reward-model scoring"})
    forward_batch_size: int = field(default=16, metadata={"help": "sequences per no-grad forward pass"})
    seed: int = field(default=0, metadata={"help": "seed of prompt order, sampling and LoRA init"})
    decode_dtype: str = field(
        default="auto",
        metadata={"help": "dtype the rollouts are sampled in (auto: bfloat16 on CPUs with AVX512-BF16, else the model's)"},
    )

    def _own_problems(self, number: Callable[..., None], out: list[str]) -> None:
        for name in ("steps", "batch_size", "mini_batch_size", "ppo_epochs", "max_new_tokens", "max_prompt_tokens",
                     "kl_horizon", "ptx_batch_sequences", "reward_batch_size", "forward_batch_size"):
            number(name, minimum=1, integer=True)
        number("max_seq_len", minimum=2, integer=True)
        number("warmup_steps", minimum=0, integer=True)
        number("seed", minimum=0, integer=True)
        number("learning_rate", minimum=0.0, inclusive=False)
        number("temperature", minimum=0.0, inclusive=False)
        for name in ("weight_decay", "kl_coef", "vf_coef", "entropy_coef", "ptx_coef", "gamma", "lam"):
            number(name, minimum=0.0)
        for name in ("gamma", "lam"):
            if isinstance(getattr(self, name), (int, float)) and getattr(self, name) > 1:
                out.append(f"{name} must be <= 1, got {getattr(self, name)!r}")
        number("clip_range", minimum=0.0, inclusive=False)
        number("clip_range_value", minimum=0.0, inclusive=False, optional=True)
        number("adaptive_kl_target", minimum=0.0, inclusive=False, optional=True)
        number("early_stop_kl", minimum=0.0, inclusive=False, optional=True)
        number("max_grad_norm", minimum=0.0, inclusive=False, optional=True)
        number("empty_reward", minimum=-float("inf"))
        number("truncation_reward", minimum=-float("inf"), optional=True)
        if isinstance(self.mini_batch_size, int) and isinstance(self.batch_size, int) and self.mini_batch_size > self.batch_size:
            out.append(f"mini_batch_size ({self.mini_batch_size}) cannot exceed batch_size ({self.batch_size})")
        if self.decode_dtype != "auto":
            try:
                models.parse_dtype(self.decode_dtype)
            except ValueError as err:
                out.append(f"decode_dtype: {err}")
