"""``chatforge sft``: load the model and data, fine-tune, print where the result is."""

from __future__ import annotations

import argparse
import typing

from chatforge import chat, models
from chatforge.train.command import StageCommand
from chatforge.train.sft.config import SFTConfig, SFTConfigError, SFTDataError
from chatforge.train.sft.data import load_data
from chatforge.train.sft.trainer import SFTTrainer


def build(config: SFTConfig) -> SFTTrainer:
    """supervised fine-tuning on chat conversations

    Fine-tune a model on conversations (loss on the assistant's tokens only). Run it under
    `torchrun --nproc_per_node=N -m chatforge.train sft ...` to train on N processes.
    """
    if config.base_model is None:
        raise SFTConfigError("no model to fine-tune: give --base NAME (or base_model in the YAML)")
    conversations, evaluation = load_data(config, models.load_tokenizer(config.base_model))
    model, tokenizer = models.load_model(config.base_model)
    return SFTTrainer(config, model, tokenizer, conversations, evaluation)


COMMAND = StageCommand(
    "sft", SFTConfig, build, (SFTConfigError, SFTDataError, chat.ConversationError, models.ModelNotFoundError,
                              FileExistsError),
    aliases={"base_model": ["--base"], "output_dir": ["--out"], "learning_rate": ["--lr"]},
)
add_arguments = COMMAND.add_arguments
run_command = COMMAND.run
register_cli = COMMAND.register
main = COMMAND.main


def config_from_args(args: argparse.Namespace) -> SFTConfig:
    """The config a command line describes: the --config YAML (if any) with the given flags on top."""
    return typing.cast(SFTConfig, COMMAND.config_from_args(args))
