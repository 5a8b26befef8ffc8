"""`chatforge eval instructions` and `chatforge eval mtbench`: the general capability guards from the command line.

`register_cli(subparsers)` adds both under the `eval` command that chatforge's cli.py defines (and defines `eval`
itself when it is missing). Each loads a model, answers the guard's prompts greedily, prints the scores with their
intervals, and can save every reply (``--json``) or score saved replies again without a model (``--rescore``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

DEFAULT_MODEL = "smollm2-135m-instruct"


def _eval_commands(subparsers: Any) -> Any:
    """The subcommands of `chatforge eval`. argparse has no public way back from a parser to its subparsers, so
    the eval parser's actions are searched for them."""
    eval_parser = subparsers.choices.get("eval")
    if eval_parser is None:
        eval_parser = subparsers.add_parser("eval", help="evaluate a model")
        return eval_parser.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)
    for action in eval_parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("the `eval` command has no subcommands to add the capability guards to")


def _add_common(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="packaged name, checkpoint dir, .gguf file or hub id")
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="(default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--show", type=int, default=0, help="print this many prompts with replies and verdicts")
    parser.add_argument("--json", default=None, help="write every prompt, reply and score here")
    parser.add_argument("--rescore", default=None, metavar="JSON", help="score the replies of an earlier --json again")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: CHATFORGE_THREADS or all)")
    parser.add_argument(
        "--dtype", choices=("auto", "float32", "bfloat16"), default="auto", help="weights dtype (auto: float32 on CPUs)"
    )


def _engine(args: argparse.Namespace, command: str) -> Any:
    """A greedy-decoding engine on the requested model, or None after printing why it cannot load."""
    from chatforge import models
    from chatforge.generation import TorchEngine

    try:
        model, tokenizer = models.load_model(args.model, dtype=models.inference_dtype(args.dtype))
    except (models.ModelNotFoundError, ValueError) as err:
        print(f"chatforge eval {command}: {err}", file=sys.stderr)
        return None
    return TorchEngine(model, tokenizer)


def _progress(command: str) -> Any:
    start = time.monotonic()

    def report(done: int, total: int) -> None:
        print(f"[{command}: {done}/{total} answered, {time.monotonic() - start:.0f}s]", file=sys.stderr, flush=True)

    return report


def cmd_instructions(args: argparse.Namespace) -> int:
    from chatforge import models
    from chatforge.evaluate import instructions

    models.set_threads(args.threads)
    try:
        if args.rescore:
            report = instructions.rescore(args.rescore)
        else:
            prompts = instructions.load_prompts(args.prompts) if args.prompts else instructions.load_prompts()
            engine = _engine(args, "instructions")
            if engine is None:
                return 2
            report = instructions.evaluate_instructions(
                engine,
                prompts,
                model_name=args.model,
                max_new_tokens=args.max_new_tokens,
                batch_size=args.batch_size,
                on_batch=_progress("instructions"),
            )
    except (ValueError, OSError) as err:  # InstructionError is a ValueError, as is a bad --batch-size
        print(f"chatforge eval instructions: {err}", file=sys.stderr)
        return 2
    print(report.format())
    for result in report.results[: args.show]:
        verdicts = ", ".join(f"{v.instruction_id}={'ok' if v.strict else 'FAIL'}" for v in result.verdicts)
        print(f"\n[{'PASS' if result.strict else 'FAIL'} {result.key}: {verdicts}]\n> {result.prompt}\n{result.reply}")
    if args.json:
        report.write_json(args.json)
        print(f"written to {args.json}")
    return 0


def cmd_mtbench(args: argparse.Namespace) -> int:
    from chatforge import models
    from chatforge.evaluate import mtbench

    models.set_threads(args.threads)
    try:
        if args.rescore:
            report = mtbench.rescore(args.rescore)
        else:
            engine = _engine(args, "mtbench")
            if engine is None:
                return 2
            report = mtbench.evaluate_mtbench(
                engine,
                model_name=args.model,
                max_new_tokens=args.max_new_tokens,
                batch_size=args.batch_size,
                on_batch=_progress("mtbench"),
            )
    except (ValueError, OSError) as err:  # MTBenchError and the data's DataError are ValueErrors
        print(f"chatforge eval mtbench: {err}", file=sys.stderr)
        return 2
    print(report.format())
    for result in report.results[: args.show]:
        verdict = {True: "RIGHT", False: "WRONG", None: "ungraded"}[result.correct]
        chrf = "" if result.chrf is None else f", chrF {result.chrf:.1f}"
        print(
            f"\n[{result.question_id} {result.category}: {verdict} (answer found: {result.extracted}){chrf}]\n"
            f"> {result.prompt}\n{result.reply}"
        )
    if args.json:
        report.write_json(args.json)
        print(f"written to {args.json}")
    return 0


def register_cli(subparsers: Any) -> None:
    from chatforge.evaluate.instructions import DEFAULT_MAX_NEW_TOKENS as INSTRUCTION_TOKENS
    from chatforge.evaluate.mtbench import DEFAULT_MAX_NEW_TOKENS as MTBENCH_TOKENS

    commands = _eval_commands(subparsers)
    p = commands.add_parser(
        "instructions", help="instruction following with verifiable constraints (IFEval's verifiers, 66 prompts)"
    )
    _add_common(p, INSTRUCTION_TOKENS)
    p.add_argument("--prompts", default=None, help="an IFEval-format JSONL prompt set (default: the packaged one)")
    p.set_defaults(func=cmd_instructions)
    p = commands.add_parser("mtbench", help="MT-Bench first turns scored by code: answer accuracy and chrF")
    _add_common(p, MTBENCH_TOKENS)
    p.set_defaults(func=cmd_mtbench)
