"""The reward model's configuration: ``RewardConfig`` (YAML keys and long CLI flags have the same names) and the
two errors a reward-model run reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from chatforge.train.config import ConfigIO, LoRAOptions, RunOptions, ScheduleOptions, below_one


class RewardConfigError(ValueError):
    """A reward-model configuration that cannot run; the message lists every problem found."""


class RewardDataError(ValueError):
    """Comparisons or reference data that cannot be used; the message names file and line, or what is missing."""


@dataclass
class RewardConfig(ConfigIO, RunOptions, LoRAOptions, ScheduleOptions):
    """Everything that decides a reward-model run. Keys of a YAML config and long CLI flags have the same names; the
    fields the RM shares with other trainers are in ``ScheduleOptions``, ``LoRAOptions`` and ``RunOptions``."""

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
    batch_prompts: int = field(
        default=8,
        metadata={"help": "prompts per micro-batch per process; each brings all of its K responses"},
    )
    max_seq_len: int = field(
        default=1024,
        metadata={"help": "longest context + response in tokens; longer ones lose the start of the context"},
    )
    margin: float = field(
        default=0.0, metadata={"help": "demand r_better - r_worse > margin (0: InstructGPT's plain loss)"}
    )
    seed: int = field(
        default=0, metadata={"help": "seed for data order, the held-out split, head and LoRA initialisation"}
    )
    score_batch_size: int = field(
        default=16, metadata={"help": "sequences per forward pass when scoring references and evaluating"}
    )
    plots: bool = field(
        default=True, metadata={"help": "write calibration and reward-vs-length plots (needs matplotlib)"}
    )
    epochs: int = field(
        default=1, kw_only=True, metadata={"help": "passes over the data (InstructGPT: 1; the RM overfits beyond)"}
    )
    lora: bool = field(
        default=False,
        kw_only=True,
        metadata={"help": "train LoRA adapters (and the full score head) instead of all weights"},
    )

    def _own_problems(self, number: Callable[..., None], out: list[str]) -> None:
        for name in ("sft_model", "comparisons", "eval_comparisons", "reference_data"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                out.append(f"{name} must be a path or name, got {value!r}")
        number("eval_fraction", minimum=0.0)
        below_one(self, "eval_fraction", out)
        number("learning_rate", minimum=0.0, inclusive=False)
        number("batch_prompts", minimum=1, integer=True)
        number("max_seq_len", minimum=2, integer=True)
        number("margin", minimum=0.0)
        number("seed", minimum=0, integer=True)
        number("score_batch_size", minimum=1, integer=True)
