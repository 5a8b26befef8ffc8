"""The run report: one self-contained HTML page (plots embedded) built from what the stages recorded.

Every number on the page is read from the run directory (registry.json and the stages' JSON files) or from the
committed gold labels: the report computes no score of its own, so it cannot disagree with the run. Every rate
carries its n and a 95% interval, every comparison its p-value.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from chatforge.recipe import Recipe, RunDirectory

EVALS = (("base", "base_eval"), ("SFT", "sft_eval"), ("final", "final_eval"))


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _metrics(path: Path, kind: str = "train") -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip()) if r.get("kind") == kind]


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def _rate_cell(r: dict[str, Any] | None) -> str:
    if not r:
        return "–"
    return f"{_pct(r['rate'])} <small>[{100 * r['low']:.0f}–{100 * r['high']:.0f}] n={int(r['n'])}</small>"


def _json(path: str | None) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8")) if path and Path(path).is_file() else None


def _pass_rate_section(run: RunDirectory) -> str:
    present = [(label, run.stages[name]) for label, name in EVALS if run.done(name)]
    if not present:
        return ""
    categories: list[str] = []
    for _, record in present:
        for c in (record.metrics or {}).get("pass_rates", {}):
            if c not in categories and c != "all":
                categories.append(c)
    rows = [
        [html.escape(c)] + [_rate_cell((record.metrics or {}).get("pass_rates", {}).get(c)) for _, record in present]
        for c in [*categories, "all"]
    ]
    return (
        "<h2>Behaviour pass rates (test prompts, independent judges)</h2>"
        "<p>Prompts of scenarios no training data contains, and harmful requests from the datasets' held-out share; "
        "graded by <code>chatforge.evaluate.judges</code>, which no training stage reads. Brackets: 95% Wilson "
        "interval.</p>" + _table(["category", *[label for label, _ in present]], rows)
    )


def _winrate_section(run: RunDirectory) -> str:
    record = run.stages.get("winrate")
    if record is None or record.status != "done" or not record.metrics:
        return ""
    m = record.metrics
    rows = [
        [html.escape(c), _pct(t["win_rate"]), f"{t['wins']} / {t['ties']} / {t['losses']}", f"{t['p_value']:.3g}"]
        for c, t in m.get("by_category", {}).items()
    ]
    rows.append(["<b>all</b>", f"<b>{_pct(m['win_rate'])}</b>", f"{m['wins']} / {m['ties']} / {m['losses']}", f"<b>{m['p_value']:.3g}</b>"])
    return (
        "<h2>Win rate of the final policy over SFT</h2>"
        f"<p>Greedy answers to the same {m['n']} test prompts. A win is a prompt where only the final policy's reply "
        "does what the prompt asks by the evaluation's own verdicts (<code>chatforge.evaluate.judges</code>; for "
        "factual questions \"I don't know\" beats a wrong answer), a loss one where only SFT's does; a tie counts "
        "half. p is the two-sided exact sign test of wins against losses (McNemar's exact test). No rater that made "
        "training data takes part. "
        "</p>" + _table(["category", "win rate", "won / tied / lost", "p"], rows)
    )


def _curves(run: RunDirectory, rounds: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for r in range(1, rounds + 1):
        select = run.stages.get(f"round_{r}/select")
        data = _json(select.outputs.get("curve")) if select and select.outputs else None
        if data:
            curves.append((r, data))
    sft = _metrics(run.path("sft") / "run" / "metrics.jsonl")
    if not curves and not sft:
        return ""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    if sft:
        axes[0].plot([r["step"] for r in sft], [r["loss"] for r in sft], label="train")
        evals = _metrics(run.path("sft") / "run" / "metrics.jsonl", "eval")
        if evals:
            axes[0].plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval")
        axes[0].set_title("SFT loss")
        axes[0].set_xlabel("step")
        axes[0].legend()
    proxy_axis = axes[1].twinx()  # the reward model's scale is its own
    proxy_axis.set_ylabel("reward-model score (proxy), dashed")
    for r, data in curves:
        steps = [c["step"] for c in data]
        axes[1].plot(steps, [c["independent"] for c in data], "o-", label=f"round {r}: independent judges (dev)")
        if all(c.get("proxy_reward") is not None for c in data):
            proxy_axis.plot(steps, [c["proxy_reward"] for c in data], "s--", alpha=0.6)
        kls = [c.get("kl") for c in data]
        if all(k is not None for k in kls):
            axes[2].plot(kls, [c["independent"] for c in data], "o-", label=f"round {r}")
    axes[1].set_title("Over-optimisation: proxy vs independent score")
    axes[1].set_xlabel("policy step")
    axes[1].set_ylabel("macro pass rate (dev)")
    axes[1].legend(loc="lower left", fontsize=7)
    axes[2].set_title("Independent score against KL")
    axes[2].set_xlabel("KL to the round's starting policy")
    if axes[2].lines:
        axes[2].legend(fontsize=7)
    image = _png(fig)
    plt.close(fig)
    rows = [
        [str(r), str(c["step"]), _pct(c["independent"]), "–" if c.get("proxy_reward") is None else f"{c['proxy_reward']:.3f}",
         "–" if c.get("kl") is None else f"{c['kl']:.3f}"]
        for r, data in curves for c in data
    ]
    return (
        "<h2>Training curves and over-optimisation</h2>"
        f"<img alt='SFT loss; proxy reward and independent pass rate over policy steps; pass rate against KL' src='{image}'>"
        "<p>Each round's checkpoints answered the dev prompts (never the test prompts): the reward model's mean score "
        "of those answers is the proxy the policy was trained on; the independent judges' macro pass rate is what "
        "matters. The checkpoint with the best independent score is kept (step 0 is the round's starting policy).</p>"
        + (_table(["round", "step", "independent (dev)", "proxy reward", "KL"], rows) if rows else "")
    )


def _redteam_section(run: RunDirectory) -> str:
    record = run.stages.get("redteam_eval")
    if record is None or record.status != "done" or not record.metrics:
        return ""
    m = record.metrics

    def cell(rate: dict[str, Any] | None) -> str:
        if not rate:
            return "–"
        return f"{_pct(rate['rate'])} <small>[{100 * rate['low']:.0f}–{100 * rate['high']:.0f}] n={int(rate['n'])}</small>"

    families = sorted({f for model in m.values() for f in model.get("heldout", {}).get("evaluation", {})}, key=lambda f: (f == "all", f))
    rows = []
    for family in families:
        row = [html.escape(family)]
        for judge in ("evaluation", "safety_judge", "heuristic"):
            row += [cell(m.get(name, {}).get("heldout", {}).get(judge, {}).get(family)) for name in ("before", "after")]
        rows.append(row)
    parts = [
        "<h2>Red-teaming: attack success rate</h2><p>Held-out harmful goals in held-out attack framings (neither was "
        "ever training data), against the policy before and after the adversarial round. An attack succeeds unless "
        "the reply refuses, by the evaluation's refusal judge (which chose no training data; an upper bound on harmful "
        "compliance, since a reply that neither refuses nor complies counts as a success); beside it the "
        "training-side safety judge (which chose the adversarial round's data) and the refusal-prefix heuristic.</p>",
        _table(["family", "evaluation judge: before", "after", "safety judge: before", "after", "heuristic: before", "after"], rows),
    ]
    regression = [(name, m[name]["regression"]["evaluation"].get("all")) for name in ("before", "after") if "regression" in m.get(name, {})]
    if regression:
        parts.append("<p>Regression set (this round's successful attacks, replayed): " + ", ".join(
            f"{name}: {cell(rate)}" for name, rate in regression) + " still succeed.</p>")
    attack = run.stages.get("adversarial/attack")
    if attack and attack.metrics:
        a = attack.metrics
        parts.append(
            f"<p>The adversarial round: {a['attempts']} attacks on training goals, {a['successes']} judged successful by the "
            f"safety judge and turned into refusal demonstrations; {a['needless_refusals']} of {a['benign_probes']} "
            "alarming-but-benign probes refused.</p>"
        )
    win = run.stages.get("adversarial/winrate")
    if win and win.metrics:
        w = win.metrics
        parts.append(
            f"<p>After vs before the adversarial round (test prompts, verdicts): {_pct(w['win_rate'])} "
            f"({w['wins']} won, {w['ties']} tied, {w['losses']} lost; p = {w['p_value']:.3g}).</p>"
        )
    return "".join(parts)


def _rounds_section(run: RunDirectory, recipe: Recipe) -> str:
    rows = []
    for r in range(1, recipe.rounds + 1):
        reward, rated, select = (run.stages.get(f"round_{r}/{s}") for s in ("reward", "rate", "select"))
        rows.append([
            str(r),
            str(rated.metrics.get("comparisons")) if rated and rated.metrics else "–",
            _pct(rated.metrics.get("panel_agreement")) if rated and rated.metrics else "–",
            _pct(reward.metrics.get("eval_accuracy")) if reward and reward.metrics else "–",
            str(select.metrics.get("chosen_step")) if select and select.metrics else "–",
        ])
    if not rows:
        return ""
    return (
        f"<h2>Rounds ({html.escape(recipe.policy.algorithm)})</h2><p>Reward-model accuracy is on comparisons of held-out "
        "prompts (policy samples only); the panel's agreement is its ceiling.</p>"
        + _table(["round", "comparisons", "panel agreement", "RM held-out accuracy", "checkpoint kept (step)"], rows)
    )


def _guards_section(run: RunDirectory) -> str:
    record = run.stages.get("guards")
    if record is None or record.status != "done" or not record.metrics:
        return ""
    m = record.metrics
    names = [n for n in ("sft", "final") if n in m]

    def cell(value: dict[str, Any] | None, scale: float = 100.0) -> str:
        if not value:
            return "–"
        centre = float(value.get("rate", value.get("mean")) or 0.0)
        return f"{scale * centre:.1f} <small>[{scale * value['low']:.1f}–{scale * value['high']:.1f}] n={value['n']}</small>"

    rows = [
        ["instruction following, prompt-level strict (%)", *(cell(m[n]["instructions"].get("prompt_strict")) for n in names)],
        ["instruction following, instruction-level strict (%)", *(cell(m[n]["instructions"].get("instruction_strict")) for n in names)],
        ["MT-Bench chrF vs reference answers (0-100)", *(cell(m[n]["mtbench_chrf"].get("all"), 1.0) for n in names)],
        ["MT-Bench math+reasoning answers right (%)", *(cell(m[n]["mtbench_accuracy"].get("math+reasoning")) for n in names)],
    ]
    text = ""
    if "final_vs_sft_instructions" in m:
        c = m["final_vs_sft_instructions"]
        d = c["difference"]
        text = (
            f"<p>Instruction following, final minus SFT: {100 * d['difference']:+.1f} points "
            f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] (exact McNemar p = {c['p_value']:.3g}).</p>"
        )
    return (
        "<h2>General-capability guards (the alignment tax)</h2><p>Instruction following with verifiable constraints "
        "(IFEval's verifiers on 66 prompts) and MT-Bench's questions with reference answers, scored by code. "
        "Brackets: 95% intervals.</p>" + _table(["guard", *names], rows) + text
    )


def _gold_section() -> str:
    from chatforge.evaluate.gold import agreement_report

    try:
        text = agreement_report("all")
    except (OSError, ValueError) as err:
        text = f"gold labels unreadable: {err}"
    return (
        "<h2>How far the judges can be trusted</h2><p>Agreement of each judge with labels made by reading replies "
        "(<code>chatforge eval gold</code>; guideline in docs/gold-guidelines.md). A judge under 80% on its category "
        f"is not used for headline numbers.</p><pre>{html.escape(text)}</pre>"
    )


def _examples_section(run: RunDirectory) -> str:
    replies: dict[str, dict[str, str]] = {}
    order: list[str] = []
    labels = []
    for label, name in EVALS:
        record = run.stages.get(name)
        data = _json(record.outputs.get("behaviours")) if record and record.outputs else None
        if not data:
            continue
        labels.append(label)
        for r in data["results"]:
            key = r["prompt"]["id"]
            if key not in replies:
                order.append(key)
                replies[key] = {"prompt": r["prompt"]["messages"][-1]["content"], "category": r["prompt"]["category"]}
            mark = "" if r["prompt"]["category"] == "general" else ("✔ " if r["passed"] else "✘ ")
            replies[key][label] = mark + r["reply"]
    if not order:
        return ""
    picked = order[:: max(1, len(order) // 16)][:16]
    rows = [
        [f"<small>{html.escape(replies[k]['category'])}</small><br>{html.escape(replies[k]['prompt'][:400])}"]
        + [f"<pre>{html.escape(replies[k].get(label, '–'))}</pre>" for label in labels]
        for k in picked
    ]
    return "<h2>Example conversations (test prompts)</h2>" + _table(["prompt", *labels], rows)


def write_report(run: RunDirectory, recipe: Recipe) -> Path:
    parts: list[str] = [f"<h1>chatforge run: {html.escape(recipe.name)}</h1>"]
    parts.append(
        f"<p>Base model <code>{html.escape(recipe.base)}</code>; {recipe.rounds} round(s) of comparisons, reward model "
        f"and {html.escape(recipe.policy.algorithm)}. Chat with the result: "
        f"<code>chatforge chat --model {html.escape(str(run.root / 'chat'))}</code></p>"
    )
    parts.append(_pass_rate_section(run))
    parts.append(_winrate_section(run))
    parts.append(_redteam_section(run))
    parts.append(_guards_section(run))
    parts.append(_rounds_section(run, recipe))
    parts.append(_curves(run, recipe.rounds))
    parts.append(_gold_section())
    parts.append(_examples_section(run))
    timing = [
        [html.escape(name), record.status, f"{record.seconds:.0f} s" if record.seconds is not None else "–"]
        for name, record in run.stages.items()
    ]
    total = sum(record.seconds or 0 for record in run.stages.values())
    parts.append(f"<h2>Stages</h2><p>Total stage time: {total / 60:.1f} min.</p>")
    parts.append(_table(["stage", "status", "time"], timing))
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}"
        "th{background:#f3f3f3}pre{white-space:pre-wrap;margin:0;max-width:28em;font-size:12px}img{max-width:100%}"
        "small{color:#666}"
    )
    page = (
        f"<!doctype html><html lang='en'><meta charset='utf-8'><title>chatforge report: {html.escape(recipe.name)}</title>"
        f"<style>{style}</style><body>{''.join(parts)}</body></html>"
    )
    path = run.root / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
