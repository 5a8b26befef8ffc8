"""The run report: one self-contained HTML page (plots embedded) built from what the stages recorded.

Every number on the page is read from the run directory (registry.json and the stages' JSON/JSONL files): the
report computes nothing of its own beyond arranging them, so it can never disagree with the run.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from chatforge import spec
from chatforge.recipe import Recipe, RunDirectory


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _metrics(path: Path, kind: str = "train") -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip()) if r.get("kind") == kind]


def _curves(run: RunDirectory, rounds: int) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    drawn = False
    sft = _metrics(run.path("sft") / "run" / "metrics.jsonl")
    if sft:
        axes[0].plot([r["step"] for r in sft], [r["loss"] for r in sft], label="train")
        evals = _metrics(run.path("sft") / "run" / "metrics.jsonl", "eval")
        if evals:
            axes[0].plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval")
        axes[0].set_title("SFT loss")
        axes[0].set_xlabel("step")
        axes[0].legend()
        drawn = True
    offset = 0
    for r in range(1, rounds + 1):
        records = _metrics(run.path(f"round_{r}/ppo") / "run" / "metrics.jsonl")
        if not records:
            continue
        steps = [offset + rec["step"] for rec in records]
        axes[1].plot(steps, [rec["reward"] for rec in records], label=f"round {r}")
        axes[2].plot(steps, [rec["kl"] for rec in records], label=f"round {r}")
        offset = steps[-1]
        drawn = True
    axes[1].set_title("PPO: reward-model score of rollouts")
    axes[2].set_title("PPO: KL to the reference policy (per response)")
    for ax in axes[1:]:
        ax.set_xlabel("PPO step")
        if ax.lines:
            ax.legend()
    result = _png(fig) if drawn else None
    plt.close(fig)
    return result


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _win_cell(metrics: dict[str, Any]) -> str:
    from chatforge.pipeline import sign_test

    wins, ties, n = int(metrics["wins"]), int(metrics["ties"]), int(metrics["n"])
    losses = n - wins - ties
    p = metrics.get("p_value", sign_test(wins, losses))  # older runs recorded no p
    return f"{_pct(metrics['win_rate'])} (n={n}: {wins} won, {ties} tied, {losses} lost; p = {p:.2f})"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def write_report(run: RunDirectory, recipe: Recipe) -> Path:
    stages = run.stages
    parts: list[str] = [f"<h1>chatforge run: {html.escape(recipe.name)}</h1>"]
    parts.append(
        f"<p>Base model <code>{html.escape(recipe.base)}</code>; {recipe.rounds} round(s) of comparisons, reward model "
        f"and PPO. Chat with the result: <code>chatforge chat --model {html.escape(str(run.root / 'chat'))}</code></p>"
    )

    # Behaviour pass rates, side by side.
    evals = [("base", "base_eval"), ("SFT", "sft_eval")] + [(f"PPO round {r}", f"round_{r}/eval") for r in range(1, recipe.rounds + 1)]
    present = [
        (label, metrics["pass_rates"])
        for label, name in evals
        if run.done(name) and (metrics := stages[name].metrics) is not None
    ]
    if present:
        rows = [[html.escape(c)] + [_pct(rates.get(c)) for _, rates in present] for c in [*spec.CATEGORIES, "all"]]
        parts.append("<h2>Behaviour pass rates on held-out prompts</h2>")
        parts.append(_table(["category", *[label for label, _ in present]], rows))

    # Win rate and reward models.
    rows = []
    for r in range(1, recipe.rounds + 1):
        win = stages.get(f"round_{r}/winrate")
        reward = stages.get(f"round_{r}/reward")
        rated = stages.get(f"round_{r}/rate")
        ppo = stages.get(f"round_{r}/ppo")
        rows.append([
            str(r),
            _win_cell(win.metrics) if win and win.metrics else "–",
            f"{ppo.metrics['kl']:.3f}" if ppo and ppo.metrics and ppo.metrics.get("kl") is not None else "–",
            _pct(reward.metrics.get("eval_accuracy")) if reward and reward.metrics else "–",
            _pct(rated.metrics.get("panel_agreement")) if rated and rated.metrics else "–",
            str(rated.metrics.get("comparisons")) if rated and rated.metrics else "–",
        ])
    if rows:
        parts.append("<h2>Rounds</h2>")
        parts.append(
            "<p>Win rate: the PPO policy's greedy answers against the SFT policy's on held-out prompts, judged by a "
            f"held-out simulated rater (seed {recipe.raters.heldout_seed}, never used for training data); a tie counts "
            "half; p is the two-sided sign test of wins against losses. Reward-model accuracy is on held-out "
            "comparisons of policy samples; the panel's agreement is its ceiling.</p>"
        )
        parts.append(_table(["round", "win rate over SFT", "final KL", "RM held-out accuracy", "panel agreement", "comparisons"], rows))

    curves = _curves(run, recipe.rounds)
    if curves:
        parts.append(f"<h2>Training curves</h2><img alt='SFT loss, PPO reward and KL curves' src='{curves}'>")

    # Example conversations: held-out prompts answered by each policy.
    answers: dict[str, dict[str, str]] = {}
    for label, name in evals:
        record = stages.get(name)
        if record and record.outputs and Path(record.outputs["behaviours"]).is_file():
            for result in json.loads(Path(record.outputs["behaviours"]).read_text())["results"]:
                answers.setdefault(result["prompt"], {})[label] = ("✔ " if result["passed"] else "✘ ") + result["reply"]
    if answers:
        labels = [label for label, _ in present]
        rows = [
            [html.escape(prompt)] + [f"<pre>{html.escape(by_model.get(label, '–'))}</pre>" for label in labels]
            for prompt, by_model in list(answers.items())[:: max(1, len(answers) // 12)][:12]
        ]
        parts.append("<h2>Example conversations</h2>")
        parts.append(_table(["prompt", *labels], rows))

    timing = [
        [html.escape(name), record.status, f"{record.seconds:.0f} s" if record.seconds is not None else "–"]
        for name, record in stages.items()
    ]
    total = sum(record.seconds or 0 for record in stages.values())
    parts.append(f"<h2>Stages</h2><p>Total stage time: {total / 60:.1f} min.</p>")
    parts.append(_table(["stage", "status", "time"], timing))

    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}"
        "th{background:#f3f3f3}pre{white-space:pre-wrap;margin:0;max-width:28em;font-size:12px}img{max-width:100%}"
    )
    page = f"<!doctype html><html lang='en'><meta charset='utf-8'><title>chatforge report: {html.escape(recipe.name)}</title><style>{style}</style><body>{''.join(parts)}</body></html>"
    path = run.root / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
