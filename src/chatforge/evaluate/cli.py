"""`chatforge eval ...`: the evaluation's commands (registered by chatforge.cli like every stage's).

    chatforge eval behaviours --model M [--split test] [--json OUT]   pass rates per category, with intervals
    chatforge eval behaviours --rejudge OUT.json                      today's judges on saved replies
    chatforge eval compare A.json B.json                              win rate of A over B on the same prompts
    chatforge eval gold                                               every judge's agreement with the gold labels
    chatforge eval instructions --model M                             instruction following (IFEval's verifiers)
    chatforge eval mtbench --model M                                  MT-Bench first turns, scored by code
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from chatforge.quiet import quiet_transformers

DEFAULT_MODEL = "smollm2-135m-instruct"


def cmd_behaviours(args: argparse.Namespace) -> int:
    quiet_transformers()
    from chatforge.evaluate.behaviour import evaluate_behaviours, load_report

    if args.rejudge:
        report = load_report(args.rejudge)
    else:
        from chatforge import models
        from chatforge.evaluate.prompts import evaluation_prompts
        from chatforge.generation import TorchEngine

        models.set_threads(args.threads)
        try:
            prompts = evaluation_prompts(args.split, categories=args.categories.split(","), per_category=args.per_category, seed=args.seed)
            model, tokenizer = models.load_model(args.model, dtype=models.inference_dtype(args.dtype))
        except (models.ModelNotFoundError, ValueError) as err:
            print(f"chatforge eval behaviours: {err}", file=sys.stderr)
            return 2
        report = evaluate_behaviours(TorchEngine(model, tokenizer), prompts, model_name=args.model, max_new_tokens=args.max_new_tokens)
    print(report.format())
    for graded in report.graded[: args.show]:
        mark = "PASS" if graded.passed else "FAIL"
        print(f"\n[{mark} {graded.answer.prompt.category}: {graded.reason}]\n> {graded.answer.prompt.text}\n{graded.answer.reply}")
    if args.json:
        report.write_json(args.json)
        print(f"written to {args.json}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from chatforge.evaluate.behaviour import load_report
    from chatforge.evaluate.winrate import win_rate

    try:
        result = win_rate(load_report(args.a).answers(), load_report(args.b).answers())
    except (OSError, ValueError, KeyError) as err:
        print(f"chatforge eval compare: {err}", file=sys.stderr)
        return 2
    print(result.format(args.a, args.b))
    return 0


def cmd_gold(args: argparse.Namespace) -> int:
    from chatforge.evaluate.gold import agreement_report

    print(agreement_report(split=args.split))
    return 0


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
    from chatforge.evaluate.prompts import CATEGORIES

    p = subparsers.add_parser("eval", help="evaluate a model (independently of every training signal)")
    sub = p.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)

    p = sub.add_parser("behaviours", help="pass rates on the evaluation's behaviour prompts, with 95%% intervals")
    p.add_argument("--model", default=DEFAULT_MODEL, help="packaged name, checkpoint dir, .gguf file or hub id")
    p.add_argument("--split", choices=("dev", "test"), default="test", help="evaluation prompts to use (default %(default)s)")
    p.add_argument("--categories", default=",".join(CATEGORIES), help="comma-separated; 'general' adds ShareGPT requests")
    p.add_argument("--per-category", type=int, default=None, help="at most this many prompts per category (seeded sample)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", type=int, default=0, help="print this many prompts with replies and verdicts")
    p.add_argument("--json", default=None, help="write every prompt, reply and verdict here")
    p.add_argument("--rejudge", default=None, metavar="JSON", help="grade the replies of an earlier --json again")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: CHATFORGE_THREADS or all)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    p.set_defaults(func=cmd_behaviours)

    p = sub.add_parser("compare", help="win rate of one model's replies over another's (two --json reports)")
    p.add_argument("a", help="report of the model to score (chatforge eval behaviours --json)")
    p.add_argument("b", help="report of the model it is compared with, on the same prompts")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("gold", help="agreement of every judge with the labels made by reading")
    p.add_argument("--split", choices=("dev", "test", "all"), default="all", help="gold items to use (default %(default)s)")
    p.set_defaults(func=cmd_gold)

    from chatforge.evaluate.instructions import DEFAULT_MAX_NEW_TOKENS as INSTRUCTION_TOKENS
    from chatforge.evaluate.mtbench import DEFAULT_MAX_NEW_TOKENS as MTBENCH_TOKENS

    p = sub.add_parser("instructions", help="instruction following with verifiable constraints (IFEval's verifiers, 66 prompts)")
    _add_common(p, INSTRUCTION_TOKENS)
    p.add_argument("--prompts", default=None, help="an IFEval-format JSONL prompt set (default: the packaged one)")
    p.set_defaults(func=cmd_instructions)
    p = sub.add_parser("mtbench", help="MT-Bench first turns scored by code: answer accuracy and chrF")
    _add_common(p, MTBENCH_TOKENS)
    p.set_defaults(func=cmd_mtbench)
