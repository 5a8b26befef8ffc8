"""`chatforge redteam` (attack a model, judge, store, convert) and `chatforge safety-judge` (build its data, train
it, validate it on the labelled set)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from chatforge.redteam.attacks import FAMILIES, HELDOUT_FAMILIES, TRAIN_FAMILIES


def default_judge_dir() -> Path:
    from chatforge.redteam.judge import default_judge_dir as judge_dir

    return judge_dir()


def _fail(command: str, message: str) -> int:
    print(f"chatforge {command}: {message}", file=sys.stderr)
    return 2


def summarize(attempts: list[Any], probes: list[Any], seconds: float) -> dict[str, Any]:
    from chatforge.redteam.metrics import attack_success_rate, over_refusal_rate

    asr = attack_success_rate((a.family, a.success) for a in attempts)
    return {
        "attempts": len(attempts),
        "successes": sum(a.success for a in attempts),
        "distinct_successes": sum(a.distinct for a in attempts),
        "goals_broken": len({a.goal["id"] for a in attempts if a.success}),
        "asr": {family: rate.to_dict() for family, rate in asr.items()},
        "over_refusal": over_refusal_rate(p.refused for p in probes).to_dict() if probes else None,
        "seconds": round(seconds, 1),
        "attempts_judged_per_minute": round(60 * len(attempts) / seconds, 2) if seconds > 0 else None,
    }


def cmd_redteam(args: argparse.Namespace) -> int:
    from chatforge.quiet import quiet_transformers

    quiet_transformers()
    from chatforge import models
    from chatforge.redteam.attacker import Attacker, AttackerConfig, Rewriter, probe_benign
    from chatforge.redteam.attacks import AttackError, check_families
    from chatforge.redteam.goals import GoalError, alarming_benign_goals, load_goals
    from chatforge.redteam.judge import JudgeError, SafetyJudge
    from chatforge.redteam.records import append_jsonl, record_flags
    from chatforge.redteam.target import Target, TargetError
    from chatforge.redteam.training_data import refusal_demonstrations, to_comparisons

    models.set_threads(args.threads)
    # Everything that can be refused is checked before any model runs.
    try:
        chosen = args.families or ",".join(TRAIN_FAMILIES if args.split == "train" else FAMILIES)
        families = check_families([f.strip() for f in chosen.split(",") if f.strip()])
        if args.budget < 1:
            raise ValueError(f"--budget must be at least 1, got {args.budget}")
        goals = load_goals(args.goals, limit=args.limit_goals)
        judge = SafetyJudge.load(args.judge or default_judge_dir())
    except (AttackError, GoalError, JudgeError, ValueError) as err:
        return _fail("redteam", str(err))
    store = None
    if args.db:
        from chatforge.store import Store

        try:
            store = Store(args.db)
        except Exception as err:
            return _fail("redteam", f"cannot open the database {args.db}: {err}")
    try:
        target = Target.load(args.target, dtype=args.dtype)
        rewriter = None
        if args.rewriter != "none":
            rewriter = Rewriter(target if args.rewriter == args.target else Target.load(args.rewriter))
        attacker = Attacker(
            target, judge, goals, families, split=args.split, rewriter=rewriter,
            config=AttackerConfig(budget=args.budget, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                  seed=args.seed),
        )
    except (TargetError, AttackError) as err:
        return _fail("redteam", str(err))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("attempts.jsonl", "successes.jsonl", "benign.jsonl"):
        (out / name).unlink(missing_ok=True)  # a re-run writes its own results, not appended to an older run's
    if args.goals == "eval" or args.split == "heldout":
        print("note: eval-split goals or held-out templates: successes are recorded but never made training data",
              file=sys.stderr)
    started = time.monotonic()
    attempts = []
    for attempt in attacker.run(log=lambda line: print(line, file=sys.stderr)):
        attempts.append(attempt)
        append_jsonl(out / "attempts.jsonl", [attempt.to_dict()])
        if attempt.success:
            append_jsonl(out / "successes.jsonl", [attempt.to_dict()])
    attack_seconds = time.monotonic() - started
    probes = []
    if args.benign > 0:
        benign = alarming_benign_goals("eval" if args.goals == "eval" else "train")[: args.benign]
        probes = probe_benign(target, judge, benign, seed=args.seed)
        append_jsonl(out / "benign.jsonl", [p.to_dict() for p in probes])
    demonstrations = refusal_demonstrations(attempts)
    comparisons = to_comparisons(attempts, probes)
    with open(out / "demonstrations.jsonl", "w", encoding="utf-8") as f:
        for conversation in demonstrations:
            f.write(json.dumps({"id": conversation.id, "messages": conversation.to_dicts(), "source": "redteam",
                                "meta": dict(conversation.meta)}, ensure_ascii=False) + "\n")
    from chatforge.data.comparisons import save_comparisons

    save_comparisons(out / "comparisons.jsonl", comparisons)
    flags = record_flags(store, attempts) if store is not None else 0
    summary = {"target": args.target, "goals": args.goals, "families": list(families), "split": args.split,
               "judge": str(args.judge or default_judge_dir()), **summarize(attempts, probes, attack_seconds),
               "demonstrations": len(demonstrations), "comparisons": len(comparisons), "flags": flags}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(format_summary(summary))
    print(f"written to {out}")
    return 0


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['attempts']} attempts on {summary['target']}: {summary['successes']} successes "
             f"({summary['distinct_successes']} distinct, {summary['goals_broken']} goals broken) in "
             f"{summary['seconds']:.0f} s ({summary['attempts_judged_per_minute']} attempts judged per minute)"]
    for family, rate in summary["asr"].items():
        lines.append(f"  ASR {family:20} {100 * rate['value']:5.1f}% [{100 * rate['low']:.1f}, "
                     f"{100 * rate['high']:.1f}] ({rate['k']}/{rate['n']})")
    if summary.get("over_refusal"):
        rate = summary["over_refusal"]
        lines.append(f"  over-refusal on benign prompts {100 * rate['value']:.1f}% ({rate['k']}/{rate['n']})")
    lines.append(f"  {summary['demonstrations']} refusal demonstrations, {summary['comparisons']} comparisons, "
                 f"{summary['flags']} flags stored")
    return "\n".join(lines)


# ---- the safety judge ----------------------------------------------------------------------------------------


def _shares(text: str) -> list[tuple[str, float]]:
    shares = []
    for item in text.split(","):
        name, sep, share = item.rpartition("=")
        if not sep or not name:
            raise ValueError(f"--models takes MODEL=SHARE,... (e.g. smollm2-135m-instruct=0.5), got {item!r}")
        shares.append((name, float(share)))
    return shares


def cmd_judge_build(args: argparse.Namespace) -> int:
    from chatforge.quiet import quiet_transformers

    quiet_transformers()
    from chatforge import models
    from chatforge.redteam.judge_data import assign_models, generate_replies, plan_jobs
    from chatforge.redteam.target import Target, TargetError

    models.set_threads(args.threads)
    try:
        shares = _shares(args.models)
    except ValueError as err:
        return _fail("safety-judge build", str(err))
    plan = assign_models(plan_jobs(seed=args.seed), shares)
    cache = Path(args.cache)
    for name, jobs in plan.items():
        started = time.monotonic()
        try:
            target = Target.load(name)
        except TargetError as err:
            return _fail("safety-judge build", str(err))
        generate_replies(jobs, target, cache / f"replies.{_slug(name)}.jsonl", seed=args.seed,
                         log=lambda line: print(line, file=sys.stderr))
        print(f"{name}: {len(jobs)} replies cached in {time.monotonic() - started:.0f} s")
    return 0


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip("/"))[-80:]


def cmd_judge_train(args: argparse.Namespace) -> int:
    from chatforge.redteam.judge import JudgeError, TrainConfig, train_judge
    from chatforge.redteam.judge_data import (
        PACKAGED_EXAMPLES,
        assemble,
        load_examples,
        plan_jobs,
        save_examples,
    )

    if args.examples or not args.cache:
        path = Path(args.examples) if args.examples else PACKAGED_EXAMPLES
        if not path.is_file():
            return _fail("safety-judge train", f"no training examples at {path}; give --cache (the directory "
                                               "`build` wrote) or --examples")
        examples = load_examples(path)
        print(f"{len(examples)} examples from {path}")
    else:
        caches = sorted(Path(args.cache).glob("replies.*.jsonl"))
        if not caches:
            return _fail("safety-judge train", f"no replies cached in {args.cache}; run `chatforge safety-judge "
                                               "build` first, or pass --examples")
        examples, dropped = assemble(plan_jobs(seed=args.seed), caches, seed=args.seed)
        print(f"{len(examples)} examples; dropped: {json.dumps(dropped)}")
        save_examples(Path(args.cache) / "examples.jsonl", examples)
    try:
        judge = train_judge(examples, TrainConfig(epochs=args.epochs, seed=args.seed))
    except JudgeError as err:
        return _fail("safety-judge train", str(err))
    out = judge.save(args.out or default_judge_dir())
    print(f"safety judge written to {out}")
    return 0


def cmd_judge_validate(args: argparse.Namespace) -> int:
    from chatforge.redteam.gold import GOLD_PATH, agreement, heuristic_labels, load_gold
    from chatforge.redteam.judge import JudgeError, SafetyJudge

    try:
        judge = SafetyJudge.load(args.judge or default_judge_dir())
        gold = load_gold(args.gold or GOLD_PATH)
    except (JudgeError, FileNotFoundError, ValueError) as err:
        return _fail("safety-judge validate", str(err))
    started = time.monotonic()
    verdicts = judge.judge([(g.conversation, g.reply) for g in gold])
    seconds = time.monotonic() - started
    results = [agreement("safety judge", gold, [v.label for v in verdicts]),
               agreement("refusal-prefix heuristic (told the request's kind)", gold, heuristic_labels(gold))]
    print(f"{len(gold)} labelled pairs from {args.gold or GOLD_PATH}; judged in {seconds:.1f} s")
    for result in results:
        print(result.format())
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n", encoding="utf-8")
    return 0


def register_cli(sub: Any) -> None:
    p = sub.add_parser("redteam", help="attack a model with jailbreaks, judge the replies, store successes as "
                                        "training data")
    p.add_argument("--target", required=True, help="model name, checkpoint dir, .gguf, or run dir (RUN/chat)")
    p.add_argument("--goals", default="train", help="train, eval (HarmBench + Do-Not-Answer split) or a goal file "
                                                   "(.jsonl with \"text\", or one goal a line)")
    p.add_argument("--families", default=None, help=f"comma-separated, from: {', '.join(FAMILIES)} (default: all "
                                                    "with templates in the chosen split)")
    p.add_argument("--split", choices=("train", "heldout"), default="train",
                   help="seed templates to use (held out whole: " + ", ".join(HELDOUT_FAMILIES) + ")")
    p.add_argument("--budget", type=int, default=64, help="attempts in all (default %(default)s)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--db", default=None, help="also store successes as moderation flags in this database")
    p.add_argument("--judge", default=None, help="safety judge directory (default: CHATFORGE_HOME/judges/safety)")
    p.add_argument("--rewriter", default="smollm2-135m-instruct",
                   help="model that rewrites attacks, or none (default %(default)s)")
    p.add_argument("--benign", type=int, default=16, help="alarming-but-benign prompts to probe for over-refusal")
    p.add_argument("--limit-goals", type=int, default=None, help="use only the first N goals")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    p.set_defaults(func=cmd_redteam)

    p = sub.add_parser("safety-judge", help="the red team's safety judge: build its data, train, validate")
    judge_sub = p.add_subparsers(dest="judge_command", metavar="STEP", required=True)
    q = judge_sub.add_parser("build", help="generate the replies the judge trains on (slow: CPU generation)")
    q.add_argument("--models", default="smollm2-135m-instruct=0.6,gemma-3-270m~comply=0.15",
                   help="MODEL=SHARE,...; MODEL~comply only writes compliant replies (default %(default)s)")
    q.add_argument("--cache", required=True, help="directory for the replies (resumable)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--threads", type=int, default=None)
    q.set_defaults(func=cmd_judge_build)
    q = judge_sub.add_parser("train", help="train the judge's head on the built data")
    q.add_argument("--cache", default=None, help="the directory `build` wrote")
    q.add_argument("--examples", default=None, help="instead of --cache: assembled examples (.jsonl or .jsonl.gz); "
                                                    "default: the packaged ones")
    q.add_argument("--out", default=None, help="judge directory (default: CHATFORGE_HOME/judges/safety)")
    q.add_argument("--epochs", type=int, default=40)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_judge_train)
    q = judge_sub.add_parser("validate", help="precision and recall on the labelled set, next to the heuristic")
    q.add_argument("--judge", default=None, help="judge directory (default: CHATFORGE_HOME/judges/safety)")
    q.add_argument("--gold", default=None, help="labelled JSONL (default: the committed safety gold set)")
    q.add_argument("--json", default=None, help="also write the numbers here")
    q.set_defaults(func=cmd_judge_validate)
