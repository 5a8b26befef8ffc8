"""The training commands (``chatforge sft|rm|ppo|dpo``, and ``python -m chatforge.train STAGE`` for torchrun): one
shape for all of them.

A stage describes its command as a ``StageCommand``: its name, its config class, ``build(config)`` (load what the
config names and return the trainer, ready to train; the function's docstring is the command's help: its first
paragraph for ``chatforge --help``, the rest for ``chatforge NAME --help``), the errors that mean bad input (reported as
``chatforge NAME: error: ...``, exit status 2) and extra flag names. The flags are ``--config YAML`` plus one per
config field (``config.add_config_arguments``); at the end the main process prints the result's ``summary()``.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatforge import models
from chatforge.train.config import add_config_arguments, config_from_args


def fail(command: str, err: BaseException) -> int:
    """Report bad input the way every chatforge command does; the exit status."""
    print(f"chatforge {command}: error: {err}", file=sys.stderr)
    return 2


@dataclass(frozen=True)
class StageCommand:
    name: str  # the subcommand, e.g. "sft"
    config: type[Any]  # the stage's config dataclass (a config.ConfigIO)
    build: Callable[[Any], Any]  # config -> the trainer (a checkpoint.CheckpointedTrainer), ready to train
    errors: tuple[type[BaseException], ...]  # what bad input raises
    aliases: Mapping[str, list[str]] = field(default_factory=dict)  # field -> more flags, e.g. --out

    @property
    def help(self) -> str:
        """The first paragraph of ``build``'s docstring: a line for ``chatforge --help``."""
        return (inspect.getdoc(self.build) or "").split("\n\n")[0].replace("\n", " ")

    @property
    def description(self) -> str:
        """The rest of ``build``'s docstring, for ``chatforge NAME --help``."""
        parts = (inspect.getdoc(self.build) or "").split("\n\n", 1)
        return parts[-1]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """--config YAML and one flag per config field (flags beat the YAML)."""
        add_config_arguments(parser, self.config, self.aliases)

    def config_from_args(self, args: argparse.Namespace) -> Any:
        """The config a command line describes: the --config YAML (if any) with the given flags on top."""
        return config_from_args(self.config, args)

    def run(self, args: argparse.Namespace) -> int:
        """Build the config and the trainer, train, print the summary; bad input is reported, not raised."""
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        try:
            config = self.config_from_args(args)
            models.set_threads(config.threads)
            trainer = self.build(config)
            result = trainer.train()
        except self.errors as err:
            return fail(self.name, err)
        if trainer.dist.is_main:
            print(result.summary())
        return 0

    def register(self, subparsers: Any) -> argparse.ArgumentParser:
        """Add the command to a ``chatforge`` argparse sub-parser set (its handler is ``args.func(args)``)."""
        parser = subparsers.add_parser(self.name, help=self.help, description=self.description)
        self.add_arguments(parser)
        parser.set_defaults(func=self.run)
        return parser

    def main(self, argv: Sequence[str] | None = None) -> int:
        """The command on its own, same flags."""
        parser = argparse.ArgumentParser(prog=f"chatforge {self.name}", description=self.description)
        self.add_arguments(parser)
        return self.run(parser.parse_args(argv))
