"""``chatforge ppo``: load the policy, the reward model, the prompts (and PPO-ptx data); train."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from chatforge import chat, models
from chatforge.train import config as config_io
from chatforge.train import starting_point
from chatforge.train.ppo.config import PPOConfig, PPOConfigError
from chatforge.train.ppo.trainer import PPOTrainer
from chatforge.train.sft.data import read_conversations

_ALIASES = {"reward_model": ["--reward"], "output_dir": ["--out"], "learning_rate": ["--lr"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_io.add_config_arguments(parser, PPOConfig, _ALIASES)


def run_command(args: argparse.Namespace) -> int:
    """``chatforge ppo``: load policy, reward model, prompts (and PPO-ptx data); train."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = config_io.config_from_args(PPOConfig, args)
        missing = [flag for flag, value in (("--policy", config.policy), ("--reward", config.reward_model),
                                            ("--prompts", config.prompts)) if not value]
        if missing:
            raise PPOConfigError(f"missing {', '.join(missing)}")
        models.set_threads(config.threads)
        from chatforge.sampling import load_prompts
        from chatforge.train.reward import RewardModel

        assert config.policy and config.reward_model and config.prompts
        prompts = load_prompts(config.prompts, seed=config.seed)
        ptx = read_conversations(config.ptx_data) if config.ptx_data else None
        policy, tokenizer = starting_point.load_policy(config.policy)
        reward = RewardModel.load(config.reward_model)
        trainer = PPOTrainer(config, policy, tokenizer, reward, prompts, ptx)
        result = trainer.train()
    except (PPOConfigError, chat.ConversationError, models.ModelNotFoundError, FileExistsError, FileNotFoundError,
            ValueError) as err:
        print(f"chatforge ppo: error: {err}", file=sys.stderr)
        return 2
    if trainer.dist.is_main:
        print(f"done: {result.step} steps, reward {result.reward:.4f}, KL {result.kl:.4f}\npolicy: {result.final_dir}")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``ppo`` to a ``chatforge`` argparse sub-parser set."""
    parser = subparsers.add_parser(
        "ppo",
        help="PPO against a reward model with a KL penalty to the SFT policy",
        description="RLHF with PPO (InstructGPT step 3). Run under `torchrun --nproc_per_node=N -m chatforge.train "
        "ppo ...` for N processes.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run_command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatforge ppo", description="PPO against a reward model.")
    add_arguments(parser)
    return run_command(parser.parse_args(argv))
