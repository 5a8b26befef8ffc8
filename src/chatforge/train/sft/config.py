"""SFT's configuration: ``SFTConfig`` (YAML keys and long CLI flags have the same names) and the two errors an SFT
run reports."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict

from chatforge.train.config import ConfigIO

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
