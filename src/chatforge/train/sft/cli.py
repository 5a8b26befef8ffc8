"""``chatforge sft``: load the model and data, fine-tune, print where the result is."""

from __future__ import annotations

import argparse
import logging
import sys
import typing
from collections.abc import Sequence
from typing import Any

from chatforge import chat, models
from chatforge.train.config import add_config_arguments
from chatforge.train.config import config_from_args as config_from_args_of
from chatforge.train.sft.config import SFTConfig, SFTConfigError, SFTDataError
from chatforge.train.sft.data import load_data
from chatforge.train.sft.trainer import SFTTrainer

_ALIASES = {"base_model": ["--base"], "output_dir": ["--out"], "learning_rate": ["--lr"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``sft`` command's flags: --config YAML, and one flag per SFTConfig field (flags beat the YAML)."""
    add_config_arguments(parser, SFTConfig, _ALIASES)


def config_from_args(args: argparse.Namespace) -> SFTConfig:
    """The config a command line describes: the --config YAML (if any) with the given flags on top."""
    return typing.cast(SFTConfig, config_from_args_of(SFTConfig, args))


def run_command(args: argparse.Namespace) -> int:
    """``chatforge sft``: load the model and data, train, print where the result is."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = config_from_args(args)
        if config.base_model is None:
            raise SFTConfigError("no model to fine-tune: give --base NAME (or base_model in the YAML)")
        models.set_threads(config.threads)
        train, evaluation = load_data(config, models.load_tokenizer(config.base_model))
        model, tokenizer = models.load_model(config.base_model)
        trainer = SFTTrainer(config, model, tokenizer, train, evaluation)
        result = trainer.train()
    except (
        SFTConfigError,
        SFTDataError,
        chat.ConversationError,
        models.ModelNotFoundError,
        FileExistsError,
    ) as err:
        print(f"chatforge sft: error: {err}", file=sys.stderr)
        return 2
    if trainer.dist.is_main:
        summary = (
            f"done: {result.step} steps, last loss {result.train_loss:.4f}"
            if result.train_loss is not None
            else "done"
        )
        if result.eval_loss is not None:
            summary += f", eval loss {result.eval_loss:.4f}"
        print(
            f"{summary}\nchat model: {result.final_dir}"
            + (f"\nLoRA adapter: {result.adapter_dir}" if result.adapter_dir else "")
        )
    return 0


def register_cli(subparsers: Any) -> None:
    """Add the ``sft`` command to a ``chatforge`` argparse sub-parser set (its handler is ``args.func(args)``)."""
    parser = subparsers.add_parser(
        "sft",
        help="supervised fine-tuning on chat conversations",
        description="Fine-tune a model on conversations (loss on the assistant's tokens only). "
        "Run it under `torchrun --nproc_per_node=N` to train on N processes.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run_command)


def main(argv: Sequence[str] | None = None) -> int:
    """``chatforge sft`` on its own, same flags (for torchrun: ``-m chatforge.train sft``, see ``__main__.py``)."""
    parser = argparse.ArgumentParser(
        prog="chatforge sft", description="Supervised fine-tuning on chat conversations."
    )
    add_arguments(parser)
    return run_command(parser.parse_args(argv))
