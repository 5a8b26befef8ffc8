"""The reward model's configuration: ``RewardConfig`` (YAML keys and long CLI flags have the same names) and the
two errors a reward-model run reports."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict

from chatforge.train.config import ConfigIO


class RewardConfigError(ValueError):
    """A reward-model configuration that cannot run; the message lists every problem found."""


class RewardDataError(ValueError):
    """Comparisons or reference data that cannot be used; the message names file and line, or what is missing."""


@dataclass
class RewardConfig(ConfigIO):
    """Everything that decides a reward-model run. Keys of a YAML config and long CLI flags have the same names."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")
    _error: ClassVar[type[ValueError]] = RewardConfigError
    _what: ClassVar[str] = "reward-model"

    output_dir: str = field(metadata={"help": "run directory: metrics, checkpoints, final reward model"})
    # Read by the command (`run_command`, `load_data`); RewardTrainer itself takes a loaded model and records.
    sft_model: str | None = field(
        default=None,
        metadata={
            "help": "model to start from: a chatforge SFT run directory (its final/) or any model name"
        },
    )
    comparisons: str | None = field(default=None, metadata={"help": "training comparisons, JSONL"})
    eval_comparisons: str | None = field(default=None, metadata={"help": "held-out comparisons, JSONL"})
    eval_fraction: float = field(
        default=0.1,
        metadata={"help": "without eval_comparisons, hold out this fraction of the prompts (seeded)"},
    )
    reference_data: str | None = field(
        default=None,
        metadata={
            "help": "conversations JSONL ending in reference replies (e.g. SFT demonstrations) that the "
            "normalised reward puts at 0 on average; default: the top-ranked training responses"
        },
    )
    skip_bad_records: bool = field(
        default=False, metadata={"help": "skip malformed comparison lines (logged) instead of stopping"}
    )

    learning_rate: float = field(default=1e-5, metadata={"help": "peak learning rate of AdamW"})
    epochs: int = field(
        default=1, metadata={"help": "passes over the data (InstructGPT: 1; the RM overfits beyond)"}
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "train exactly this many optimizer steps, cycling the data as needed"}
    )
    batch_prompts: int = field(
        default=8,
        metadata={"help": "prompts per micro-batch per process; each brings all of its K responses"},
    )
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step (per process)"})
    max_seq_len: int = field(
        default=1024,
        metadata={"help": "longest context + response in tokens; longer ones lose the start of the context"},
    )
    margin: float = field(
        default=0.0, metadata={"help": "demand r_better - r_worse > margin (0: InstructGPT's plain loss)"}
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
    seed: int = field(
        default=0, metadata={"help": "seed for data order, the held-out split, head and LoRA initialisation"}
    )
    bf16: bool | Literal["auto"] = field(
        default="auto",
        metadata={"help": "bfloat16 autocast: auto uses it where the hardware has native bf16"},
    )

    lora: bool = field(
        default=False,
        metadata={"help": "train LoRA adapters (and the full score head) instead of all weights"},
    )
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
        default=2, metadata={"help": "keep only the newest N checkpoints (null: all)"}
    )
    score_batch_size: int = field(
        default=16, metadata={"help": "sequences per forward pass when scoring references and evaluating"}
    )
    plots: bool = field(
        default=True, metadata={"help": "write calibration and reward-vs-length plots (needs matplotlib)"}
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
        problems = self.problems()
        if problems:
            raise RewardConfigError(
                "invalid reward-model config:\n" + "\n".join(f"  - {p}" for p in problems)
            )

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

        def below_one(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
                out.append(f"{name} must be below 1, got {value!r}")

        if not isinstance(self.output_dir, str) or not self.output_dir.strip():
            out.append("output_dir must be a non-empty path")
        for name in ("sft_model", "comparisons", "eval_comparisons", "reference_data"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                out.append(f"{name} must be a path or name, got {value!r}")
        number("eval_fraction", minimum=0.0)
        below_one("eval_fraction")
        number("learning_rate", minimum=0.0, inclusive=False)
        number("epochs", minimum=1, integer=True)
        number("max_steps", minimum=1, integer=True, optional=True)
        number("batch_prompts", minimum=1, integer=True)
        number("grad_accum", minimum=1, integer=True)
        number("max_seq_len", minimum=2, integer=True)
        number("margin", minimum=0.0)
        number("warmup_ratio", minimum=0.0)
        below_one("warmup_ratio")
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
        below_one("lora_dropout")
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
        number("score_batch_size", minimum=1, integer=True)
        number("threads", minimum=1, integer=True, optional=True)
        if self.resume and self.overwrite:
            out.append("resume and overwrite contradict each other: give one")
        return out


