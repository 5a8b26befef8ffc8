"""`chatforge data ...`: look at the sources and the SFT mixture from the command line.

    chatforge data preview [--mix SPEC] [--model NAME] [-n N] [--seed S]
    chatforge data stats   [--mix SPEC] [--model NAME] [--size N] [--seed S] [--json PATH]

`register_cli(subparsers)` adds the `data` command to chatforge's argument parser. Each subcommand stores its
handler as `func`; a handler takes the parsed arguments and returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

from chatforge.data.base import DataError, Source
from chatforge.data.behaviours import Behaviours
from chatforge.data.mixture import EXAMPLE_SPEC, PACKAGED_SOURCES, Mixture, known_sources_text, make_source
from chatforge.data.preview import preview

DEFAULT_MODEL = "smollm2-135m-instruct"


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add `data preview` and `data stats` to an argparse subparsers object; returns the `data` parser."""
    data = subparsers.add_parser(
        "data",
        help="inspect the data sources and the SFT mixture",
        description="Inspect the data sources and the SFT mixture.",
    )
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    mix_help = f"sources and weights, e.g. {EXAMPLE_SPEC!r}; sources: {known_sources_text()}"

    show = commands.add_parser("preview", help="show mixed conversations with the trained-on tokens marked")
    show.add_argument("--mix", default=EXAMPLE_SPEC, metavar="SPEC", help=mix_help)
    show.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME", help="model whose tokenizer and chat template to use")
    show.add_argument("-n", type=int, default=3, metavar="N", help="how many conversations (default 3)")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--max-tokens", type=int, default=2048, metavar="T", help="drop conversations longer than this")
    show.add_argument(
        "--colour", "--color", choices=("auto", "always", "never"), default="auto",
        help="colour assistant tokens instead of bracketing them (auto: when writing to a terminal)",
    )
    show.set_defaults(func=run_preview)

    stats = commands.add_parser("stats", help="count what each source yields and what a mixture keeps")
    stats.add_argument("--mix", default=None, metavar="SPEC", help=f"build this mixture and report it ({mix_help}); "
                       "without it, every packaged source is read and counted")
    stats.add_argument("--model", default=None, metavar="NAME", help="tokenizer for the length filter (default: none)")
    stats.add_argument("--size", type=int, default=None, metavar="N", help="conversations in the mixture (default: all)")
    stats.add_argument("--seed", type=int, default=0)
    stats.add_argument("--max-tokens", type=int, default=2048, metavar="T")
    stats.add_argument("--min-assistant-tokens", type=int, default=1, metavar="T")
    stats.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON")
    stats.set_defaults(func=run_stats)
    return data


def _load_tokenizer(name: str) -> Any:
    from chatforge import models  # imports torch: only when a tokenizer is needed

    return models.load_tokenizer(name)


def _fail(err: Exception) -> int:
    print(f"chatforge data: error: {err}", file=sys.stderr)
    return 2


def run_preview(args: argparse.Namespace) -> int:
    if args.n < 1:
        return _fail(ValueError("-n must be at least 1"))
    try:
        tokenizer = _load_tokenizer(args.model)
        mixture = Mixture(args.mix, tokenizer=tokenizer, size=args.n, max_tokens=args.max_tokens, seed=args.seed)
        result = mixture.build()
    except (DataError, ValueError) as err:
        return _fail(err)
    colour = args.colour == "always" or (args.colour == "auto" and sys.stdout.isatty())
    print(preview(result.conversations, tokenizer, args.n, colour=colour))
    return 0


def run_stats(args: argparse.Namespace) -> int:
    try:
        if args.mix is not None:
            tokenizer = _load_tokenizer(args.model) if args.model else None
            mixture = Mixture(
                args.mix,
                tokenizer=tokenizer,
                size=args.size,
                max_tokens=args.max_tokens,
                min_assistant_tokens=args.min_assistant_tokens,
                seed=args.seed,
            )
            report = mixture.build().report
            print(report.format())
            summary: dict[str, Any] = report.to_dict()
        else:
            summary = {"sources": [source_summary(name, make_source(name, seed=args.seed)) for name in PACKAGED_SOURCES]}
            summary["sources"].append(source_summary("behaviours (eval split)", Behaviours("eval", seed=args.seed)))
            print(format_source_summaries(summary["sources"]))
    except (DataError, ValueError) as err:
        return _fail(err)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, ensure_ascii=False)
            f.write("\n")
        print(f"\nwrote {args.json}")
    return 0


def source_summary(label: str, source: Source) -> dict[str, Any]:
    """Read a whole source and describe it: counts, sizes, categories, and what reading skipped or repaired."""
    try:
        conversations = source.load()
    except DataError as err:
        return {"name": label, "error": str(err)}
    turns = [len(c) for c in conversations]
    characters = [sum(len(m.content) for m in c.messages) for c in conversations]
    categories = Counter(str(c.meta["category"]) for c in conversations if "category" in c.meta)
    return {
        "name": label,
        "eval_only": source.eval_only,
        "conversations": len(conversations),
        "mean_messages": sum(turns) / len(turns) if turns else 0.0,
        "mean_characters": sum(characters) / len(characters) if characters else 0.0,
        "categories": dict(sorted(categories.items())),
        "reading": source.stats.to_dict(),
    }


def format_source_summaries(summaries: list[dict[str, Any]]) -> str:
    lines = []
    for s in summaries:
        if "error" in s:
            lines.append(f"{s['name']}: unavailable: {s['error']}\n")
            continue
        eval_note = " (eval only)" if s["eval_only"] else ""
        lines.append(
            f"{s['name']}{eval_note}: {s['conversations']} conversations, {s['mean_messages']:.1f} messages and "
            f"{s['mean_characters']:.0f} characters on average"
        )
        for category, count in s["categories"].items():
            lines.append(f"  category {category}: {count}")
        reading = s["reading"]
        lines.append(f"  records read: {reading['read']}")
        lines.extend(f"  skipped {count:>6}  {reason}" for reason, count in reading["skipped"].items())
        lines.extend(f"  repaired {count:>5}  {what}" for what, count in reading["repaired"].items())
        lines.append("")
    return "\n".join(lines).rstrip()
