"""Config dataclasses shared by every trainer: YAML/dict loading with readable errors, range checks, the fields
every trainer has, and one command-line flag per field.

A trainer's config is a dataclass that inherits ``ConfigIO`` (``from_dict`` / ``from_yaml`` / ``to_dict``, and
``problems()``: every reason it cannot run, checked when it is built) and the option groups it has:
``RunOptions`` (precision, the run directory, threads, logging: every trainer), ``LoRAOptions`` (SFT, RM;
``PolicyLoRAOptions`` for PPO and DPO) and ``ScheduleOptions`` (epochs, accumulation, warmup and decay: SFT and the reward model). It sets ``_error``
(its exception class), ``_what`` (e.g. "SFT") for the messages, ``_renamed`` (old field name -> new) for fields
that were renamed, so that an old key or flag is refused with the new name, and checks its own fields in
``_own_problems``. ``add_config_arguments`` gives a command ``--config YAML`` plus a flag per field (flags beat the
YAML) and ``config_from_args`` builds the config back from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict


def bf16_flag(text: str) -> bool | str:
    value = text.strip().lower()
    if value == "auto":
        return "auto"
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected auto, on or off, not {text!r}")


def name_list(text: str) -> list[str] | str:
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names[0] if names == ["all-linear"] else names


class ConfigIO:
    """``from_dict`` / ``from_yaml`` / ``to_dict`` and the checks of a trainer's config dataclass. Subclasses set
    ``_error`` (the exception class) and ``_what`` (e.g. "PPO") and check their own fields in ``_own_problems``."""

    # Reject unknown keys when built from a dict or YAML (pydantic reads this; see ``from_dict``).
    __pydantic_config__: typing.ClassVar[ConfigDict] = ConfigDict(extra="forbid")
    _error: typing.ClassVar[type[ValueError]] = ValueError
    _what: typing.ClassVar[str] = ""
    _renamed: typing.ClassVar[Mapping[str, str]] = {}

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise self._error(f"invalid {self._what} config:\n" + "\n".join(f"  - {p}" for p in problems))

    def problems(self) -> list[str]:
        """Every reason this config cannot run (empty when it can)."""
        out: list[str] = []
        number = number_checker(self, out)
        output_dir = getattr(self, "output_dir", None)
        if not isinstance(output_dir, str) or not output_dir.strip():
            out.append("output_dir must be a non-empty path")
        self._own_problems(number, out)
        for group in (ScheduleOptions, LoRAOptions, RunOptions):
            if isinstance(self, group):
                group._group_problems(self, number, out)
        return out

    def _own_problems(self, number: Callable[..., None], out: list[str]) -> None:
        """Append what is wrong with the subclass's own fields to ``out`` (``number`` checks a numeric field)."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Any:
        from pydantic import TypeAdapter, ValidationError

        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        problems = []
        for key in values:
            if key in cls._renamed:
                problems.append(f"unknown key {key!r} (did you mean {cls._renamed[key]!r}? the key was renamed)")
            elif key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                problems.append(f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        if problems:
            raise cls._error(f"invalid {cls._what} config:\n" + "\n".join(f"  - {p}" for p in problems))
        try:
            return TypeAdapter(cls).validate_python(dict(values))
        except ValidationError as err:
            lines = []
            for e in err.errors():
                if e["type"] == "value_error":
                    raise cls._error(str(e["ctx"]["error"])) from None
                where = ".".join(str(p) for p in e["loc"]) or "config"
                detail = "missing" if e["type"] == "missing" else f"{e['msg']} (got {e.get('input')!r})"
                lines.append(f"{where}: {detail}")
            raise cls._error(f"invalid {cls._what} config:\n" + "\n".join(f"  - {p}" for p in lines)) from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> Any:
        import yaml

        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise cls._error(f"cannot read the config file {path}: {err}") from None
        except yaml.YAMLError as err:
            raise cls._error(f"{path} is not valid YAML: {err}") from None
        loaded = loaded or {}
        if not isinstance(loaded, dict):
            raise cls._error(f"{path} must hold a mapping of {cls.__name__} fields, not a {type(loaded).__name__}")
        return cls.from_dict({**loaded, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def number_checker(config: Any, out: list[str]) -> Callable[..., None]:
    """``number(name, minimum=..., inclusive=..., integer=..., optional=...)`` appending problems to ``out``."""

    def number(
        name: str, *, minimum: float, inclusive: bool = True, integer: bool = False, optional: bool = False
    ) -> None:
        value: Any = getattr(config, name)
        if value is None and optional:
            return
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            out.append(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
        elif value != value or abs(float(value)) == float("inf") or value < minimum or (value == minimum and not inclusive):
            out.append(f"{name} must be {'>=' if inclusive else '>'} {minimum}, got {value!r}")

    return number


def below_one(config: Any, name: str, out: list[str]) -> None:
    value = getattr(config, name)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
        out.append(f"{name} must be below 1, got {value!r}")


# --------------------------------------------------------------------------------------------------------------
# Field groups several trainers share. Keyword-only, so that they can come before a subclass's required
# output_dir; a subclass that needs another default or help text declares the field again (keyword-only too).
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class ScheduleOptions:
    """Passes over the data, gradient accumulation, warmup and decay of the learning rate (SFT, reward model)."""

    epochs: int = dataclasses.field(
        default=1, metadata={"help": "passes over the data (ignored when max_steps is set)"}
    )
    max_steps: int | None = dataclasses.field(
        default=None, metadata={"help": "train exactly this many optimizer steps, cycling the data as needed"}
    )
    grad_accum: int = dataclasses.field(
        default=1, metadata={"help": "micro-batches per optimizer step (per process)"}
    )
    warmup_ratio: float = dataclasses.field(
        default=0.03, metadata={"help": "linear warmup over this fraction of the steps"}
    )
    warmup_steps: int | None = dataclasses.field(
        default=None, metadata={"help": "linear warmup over this many steps (overrides warmup_ratio)"}
    )
    lr_schedule: Literal["cosine", "constant"] = dataclasses.field(
        default="cosine", metadata={"help": "learning-rate decay after warmup"}
    )
    weight_decay: float = dataclasses.field(
        default=0.0, metadata={"help": "AdamW weight decay (not applied to biases and norms)"}
    )
    max_grad_norm: float | None = dataclasses.field(
        default=1.0, metadata={"help": "clip the gradient norm to this (null: no clipping)"}
    )
    eval_every: int | None = dataclasses.field(
        default=None, metadata={"help": "evaluate every N steps (and at the end) when there is evaluation data"}
    )

    def _group_problems(self, number: Callable[..., None], out: list[str]) -> None:
        number("epochs", minimum=1, integer=True)
        number("max_steps", minimum=1, integer=True, optional=True)
        number("grad_accum", minimum=1, integer=True)
        number("warmup_ratio", minimum=0.0)
        below_one(self, "warmup_ratio", out)
        number("warmup_steps", minimum=0, integer=True, optional=True)
        if self.lr_schedule not in ("cosine", "constant"):
            out.append(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        number("weight_decay", minimum=0.0)
        number("max_grad_norm", minimum=0.0, inclusive=False, optional=True)
        number("eval_every", minimum=1, integer=True, optional=True)

    def warmup(self, total_steps: int) -> int:
        """Warmup steps: ``warmup_steps``, else ``warmup_ratio`` of ``total_steps`` (rounded up)."""
        return self.warmup_steps if self.warmup_steps is not None else math.ceil(self.warmup_ratio * total_steps)


@dataclasses.dataclass(kw_only=True)
class LoRAOptions:
    """LoRA adapters instead of training all weights (``starting_point.with_lora`` reads these)."""

    lora: bool = dataclasses.field(default=False, metadata={"help": "train LoRA adapters instead of all weights"})
    lora_r: int = dataclasses.field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = dataclasses.field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = dataclasses.field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: list[str] | str = dataclasses.field(
        default="all-linear", metadata={"help": "modules to adapt: 'all-linear' or a list of names"}
    )

    def _group_problems(self, number: Callable[..., None], out: list[str]) -> None:
        number("lora_r", minimum=1, integer=True)
        number("lora_alpha", minimum=1, integer=True)
        number("lora_dropout", minimum=0.0)
        below_one(self, "lora_dropout", out)
        targets = self.lora_target_modules
        if not (
            (isinstance(targets, str) and targets.strip())
            or (isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets))
        ):
            out.append(
                f"lora_target_modules must be 'all-linear' or a non-empty list of module names, got {targets!r}"
            )


@dataclasses.dataclass(kw_only=True)
class PolicyLoRAOptions(LoRAOptions):
    """LoRA on a policy whose reference is the same weights with the adapters disabled (PPO, DPO), and whose
    forward passes all run in eval mode, so dropout would never apply."""

    lora: bool = dataclasses.field(
        default=False, metadata={"help": "train LoRA adapters (the reference: the adapters disabled)"}
    )
    lora_dropout: float = dataclasses.field(
        default=0.0, metadata={"help": "LoRA dropout (unused: every forward pass runs in eval mode)"}
    )


@dataclasses.dataclass(kw_only=True)
class RunOptions:
    """Precision, the run directory (``checkpoint.CheckpointedTrainer`` reads these), threads and logging."""

    bf16: bool | Literal["auto"] = dataclasses.field(
        default="auto", metadata={"help": "bfloat16 autocast: auto uses it where the hardware has native bf16"}
    )
    save_every: int | None = dataclasses.field(
        default=None, metadata={"help": "write a checkpoint every N steps (one is always written at the end)"}
    )
    save_limit: int | None = dataclasses.field(
        default=2, metadata={"help": "keep only the newest N checkpoints (null: keep all)"}
    )
    resume: bool = dataclasses.field(
        default=False, metadata={"help": "continue from the newest checkpoint in output_dir"}
    )
    overwrite: bool = dataclasses.field(
        default=False, metadata={"help": "delete an earlier run in output_dir and start over"}
    )
    threads: int | None = dataclasses.field(
        default=None, metadata={"help": "torch threads (default: CHATFORGE_THREADS, else torch's choice)"}
    )
    tensorboard: bool = dataclasses.field(
        default=True, metadata={"help": "also log to output_dir/tensorboard when tensorboard is installed"}
    )
    progress: bool = dataclasses.field(default=True, metadata={"help": "show a progress bar"})

    def _group_problems(self, number: Callable[..., None], out: list[str]) -> None:
        if self.bf16 not in (True, False, "auto"):
            out.append(f"bf16 must be true, false or 'auto', got {self.bf16!r}")
        number("save_every", minimum=1, integer=True, optional=True)
        number("save_limit", minimum=1, integer=True, optional=True)
        number("threads", minimum=1, integer=True, optional=True)
        if self.resume and self.overwrite:
            out.append("resume and overwrite contradict each other: give one")


def add_config_arguments(
    parser: argparse.ArgumentParser, cls: type, aliases: Mapping[str, list[str]] | None = None
) -> None:
    """--config YAML plus one flag per field of ``cls`` (flags beat the YAML), typed as SFT's are."""
    aliases = aliases or {}
    parser.add_argument("--config", metavar="YAML", help=f"a YAML file of {cls.__name__} fields; flags override it")
    hints = typing.get_type_hints(cls)
    # The config's own fields first, then the shared groups (keyword-only), each in declaration order.
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.kw_only is True):
        names = [*aliases.get(f.name, []), "--" + f.name.replace("_", "-")]
        help_text = f.metadata.get("help")
        hint = hints[f.name]
        if f.name == "bf16":
            parser.add_argument(*names, dest=f.name, type=bf16_flag, metavar="{auto,on,off}", help=help_text)
        elif f.name == "lora_target_modules":
            parser.add_argument(*names, dest=f.name, type=name_list, metavar="NAME[,NAME...]", help=help_text)
        elif hint is bool:
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, help=help_text)
        elif typing.get_origin(hint) is Literal:
            parser.add_argument(*names, dest=f.name, choices=typing.get_args(hint), help=help_text)
        else:
            scalar = next(t for t in (*typing.get_args(hint), hint) if t in (int, float, str))
            parser.add_argument(*names, dest=f.name, type=scalar, help=help_text)
    for old, new in getattr(cls, "_renamed", {}).items():
        parser.add_argument(
            "--" + old.replace("_", "-"), action=_Renamed, new="--" + new.replace("_", "-"), help=argparse.SUPPRESS
        )
    parser.set_defaults(**{f.name: None for f in dataclasses.fields(cls)})


class _Renamed(argparse.Action):
    """A flag that was renamed: using it stops the command with the new name."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs="?", **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.error(f"{self.option_strings[0]} was renamed: did you mean {self.new}?")


def config_from_args(cls: Any, args: argparse.Namespace) -> Any:
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    if getattr(args, "config", None):
        return cls.from_yaml(args.config, **flags)
    return cls.from_dict(flags)
