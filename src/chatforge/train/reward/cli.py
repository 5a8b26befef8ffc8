"""``chatforge rm`` (train a reward model) and ``chatforge rm-eval`` (evaluate one)."""

from __future__ import annotations

import argparse
import logging
import typing
from pathlib import Path
from typing import Any

from chatforge import chat, models
from chatforge.data.comparisons import ComparisonError
from chatforge.train.command import StageCommand, fail
from chatforge.train.reward.config import RewardConfig, RewardConfigError, RewardDataError
from chatforge.train.reward.data import load_data, read_comparisons
from chatforge.train.reward.evaluation import PlottingUnavailable, evaluate_reward_model
from chatforge.train.reward.model import RewardModel, load_reward_base
from chatforge.train.reward.trainer import RewardTrainer
from chatforge.train.sft.config import SFTDataError

_ERRORS = (
    RewardConfigError,
    RewardDataError,
    ComparisonError,
    SFTDataError,
    chat.ConversationError,
    models.ModelNotFoundError,
    FileExistsError,
    PlottingUnavailable,
)


def build(config: RewardConfig) -> RewardTrainer:
    """train a reward model on ranked comparisons

    Train a reward model (the SFT model with a scalar head) on K-wise rankings with InstructGPT's loss, normalise
    it so reference replies score 0, and evaluate it on held-out comparisons. Run it under
    `torchrun --nproc_per_node=N -m chatforge.train rm ...` to train on N processes.
    """
    if config.sft_model is None:
        raise RewardConfigError("no model to start from: give --sft RUN_DIR_OR_MODEL (or sft_model in the YAML)")
    comparisons, held_out, references = load_data(config)
    model, tokenizer = load_reward_base(config.sft_model, seed=config.seed)
    return RewardTrainer(
        config, model, tokenizer, comparisons, held_out or None, references, reference_name=config.reference_data
    )


COMMAND = StageCommand(
    "rm", RewardConfig, build, _ERRORS, aliases={"sft_model": ["--sft"], "output_dir": ["--out"], "learning_rate": ["--lr"]}
)
add_arguments = COMMAND.add_arguments
run_command = COMMAND.run
main = COMMAND.main


def config_from_args(args: argparse.Namespace) -> RewardConfig:
    """The config a command line describes: the --config YAML (if any) with the given flags on top."""
    return typing.cast(RewardConfig, COMMAND.config_from_args(args))


def run_eval_command(args: argparse.Namespace) -> int:
    """``chatforge rm-eval``: evaluate a trained reward model on comparisons."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    models.set_threads(args.threads)
    try:
        reward_model = RewardModel.load(args.rm)
        comparisons = read_comparisons(args.comparisons, strict=not args.skip_bad_records)
        report = evaluate_reward_model(
            reward_model, comparisons, args.out, batch_size=args.batch_size, plots=args.plots
        )
    except _ERRORS as err:
        return fail("rm-eval", err)
    accuracy = report["accuracy"]
    print(
        f"pairwise accuracy {accuracy:.3f} over {report['pairs']} pairs"
        if accuracy is not None
        else "no pairs",
        f"\nreport: {Path(args.out) / 'rm_eval.json'}",
        sep="",
    )
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``rm`` (train a reward model) and ``rm-eval`` (evaluate one) to a ``chatforge`` sub-parser set."""
    COMMAND.register(subparsers)

    evaluate = subparsers.add_parser(
        "rm-eval",
        help="evaluate a reward model on comparisons",
        description="Pairwise accuracy (overall, per category, per rater), calibration and length bias of a "
        "reward model on a comparisons file; writes rm_eval.json and plots into --out.",
    )
    evaluate.add_argument(
        "--rm", required=True, help="reward-model checkpoint or `chatforge rm` run directory"
    )
    evaluate.add_argument("--comparisons", required=True, help="comparisons JSONL")
    evaluate.add_argument("--out", required=True, help="directory for rm_eval.json and the plots")
    evaluate.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    evaluate.add_argument(
        "--plots", action=argparse.BooleanOptionalAction, default=True, help="write PNG plots"
    )
    evaluate.add_argument(
        "--skip-bad-records", action="store_true", help="skip malformed lines instead of stopping"
    )
    evaluate.add_argument("--threads", type=int, default=None, help="torch threads")
    evaluate.set_defaults(func=run_eval_command)
