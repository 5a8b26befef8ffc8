"""Config dataclasses shared by every trainer: YAML/dict loading with readable errors, range checks, and one
command-line flag per field.

A trainer's config is a dataclass with a ``problems()`` method listing what is wrong with it; it inherits
``ConfigIO`` for ``from_dict`` / ``from_yaml`` / ``to_dict`` and sets ``_error`` (its exception class), ``_what``
(e.g. "SFT") for the messages and ``_renamed`` (old field name -> new) for fields that were renamed: an old key or
flag is refused with the new name. ``add_config_arguments`` gives a command ``--config YAML`` plus a flag per field
(flags beat the YAML) and ``config_from_args`` builds the config back from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal


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
    """``from_dict`` / ``from_yaml`` / ``to_dict`` for a config dataclass with a ``problems()`` method. Subclasses
    set ``_error`` (the exception class) and ``_what`` (e.g. "PPO")."""

    _error: typing.ClassVar[type[ValueError]] = ValueError
    _what: typing.ClassVar[str] = ""
    _renamed: typing.ClassVar[Mapping[str, str]] = {}

    def _check(self) -> None:
        problems = self.problems()  # type: ignore[attr-defined]
        if problems:
            raise self._error(f"invalid {self._what} config:\n" + "\n".join(f"  - {p}" for p in problems))

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


def add_config_arguments(
    parser: argparse.ArgumentParser, cls: type, aliases: Mapping[str, list[str]] | None = None
) -> None:
    """--config YAML plus one flag per field of ``cls`` (flags beat the YAML), typed as SFT's are."""
    aliases = aliases or {}
    parser.add_argument("--config", metavar="YAML", help=f"a YAML file of {cls.__name__} fields; flags override it")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
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
