"""SFT's configuration: ``SFTConfig`` (YAML keys and long CLI flags have the same names) and the two errors an SFT
run reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from chatforge.train.config import ConfigIO, LoRAOptions, RunOptions, ScheduleOptions, below_one

DEFAULT_BATCH_TOKENS = 4096


class SFTConfigError(ValueError):
    """An SFT configuration that cannot run; the message lists every problem found."""


class SFTDataError(ValueError):
    """Training data that cannot be used: unreadable, malformed (the message names file and line) or too little."""


@dataclass
class SFTConfig(ConfigIO, RunOptions, LoRAOptions, ScheduleOptions):
    """Everything that decides an SFT run. Keys of a YAML config and long CLI flags have the same names; the fields
    SFT shares with other trainers are in ``ScheduleOptions``, ``LoRAOptions`` and ``RunOptions``."""

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
    batch_tokens: int | None = field(
        default=None,
        metadata={
            "help": f"micro-batch size per process in tokens (default {DEFAULT_BATCH_TOKENS} unless batch_sequences is set)"
        },
    )
    batch_sequences: int | None = field(
        default=None, metadata={"help": "micro-batch size per process in conversations, instead of tokens"}
    )
    max_seq_len: int = field(
        default=1024, metadata={"help": "longest sequence in tokens; longer conversations are truncated"}
    )
    seed: int = field(default=0, metadata={"help": "seed for data order, LoRA initialisation and dropout"})

    def __post_init__(self) -> None:
        if self.batch_tokens is None and self.batch_sequences is None:
            self.batch_tokens = DEFAULT_BATCH_TOKENS
        super().__post_init__()

    def _own_problems(self, number: Callable[..., None], out: list[str]) -> None:
        if self.base_model is not None and (
            not isinstance(self.base_model, str) or not self.base_model.strip()
        ):
            out.append("base_model must be a model name or path")
        if self.data is not None and self.mix is not None:
            out.append("give either data or mix, not both")
        number("mix_size", minimum=1, integer=True, optional=True)
        number("eval_fraction", minimum=0.0)
        below_one(self, "eval_fraction", out)
        number("learning_rate", minimum=0.0, inclusive=False)
        if self.batch_tokens is not None and self.batch_sequences is not None:
            out.append("give either batch_tokens or batch_sequences, not both")
        number("batch_tokens", minimum=1, integer=True, optional=True)
        number("batch_sequences", minimum=1, integer=True, optional=True)
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
        number("seed", minimum=0, integer=True)
