"""How good is a reward model? Scored against held-out comparisons it never trained on: a diagnostic of the
reward-model training (``RewardTrainer`` writes it into its run directory, ``chatforge rm-eval`` on any
comparisons), not part of chatforge's evaluation of the policy, which stays independent of training signals.

``evaluate_reward_model(reward_model, comparisons, out_dir)`` writes ``rm_eval.json`` and two plots:

* pairwise accuracy: over every strictly ordered pair of every held-out ranking, how often the better-ranked
  response gets the higher reward; also per category and per rater (agreement with that rater's rankings,
  which shows whether the RM learned everyone's preferences or only the majority's);
* calibration (``calibration.png``): the RM's implied probability that one response beats another,
  sigmoid(r_a - r_b), binned, against how often it actually did. Each pair is counted in both orders, so the
  curve is symmetric about (0.5, 0.5) and a perfectly calibrated RM lies on the diagonal;
* length (``reward_vs_length.png``): reward against response length in tokens, with the correlation, and how
  often the RM prefers the longer response of a pair compared with how often the raters did. An RM that
  prefers length much more than the raters is one that PPO will exploit by rambling.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from chatforge.atomic import write_text_atomically
from chatforge.chat import Conversation
from chatforge.data.comparisons import Comparison
from chatforge.train import losses

EVAL_FILE = "rm_eval.json"
CALIBRATION_PLOT = "calibration.png"
LENGTH_PLOT = "reward_vs_length.png"


class PlottingUnavailable(RuntimeError):
    """matplotlib is needed for the plots and is not installed."""


class Scorer(Protocol):
    """What the evaluation needs of a reward model (``RewardModel`` is one)."""

    tokenizer: Any

    def score(self, items: Sequence[Any], batch_size: int = ...) -> list[float]: ...


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or a clear error saying what to install."""
    try:
        import matplotlib
    except ImportError:
        raise PlottingUnavailable(
            "the reward-model evaluation plots need matplotlib, which is not installed: "
            "pip install matplotlib  (or turn the plots off: plots: false in the config, --no-plots)"
        ) from None
    matplotlib.use("Agg")  # files only: no display, and no GUI toolkit import on a server
    import matplotlib.pyplot as plt

    return plt


def _sigmoid(x: float) -> float:
    # Two forms so that exp never overflows for large |x|.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _accuracy(correct: float, pairs: int) -> float | None:
    return correct / pairs if pairs else None


def _centered_sums(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float] | None:
    """(Sxx, Syy, Sxy): the sums of squares and of products about the means; None below two points."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    return (
        sum((x - mx) ** 2 for x in xs),
        sum((y - my) ** 2 for y in ys),
        sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)),
    )


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    sums = _centered_sums(xs, ys)
    if sums is None or sums[0] == 0 or sums[1] == 0:
        return None
    sxx, syy, sxy = sums
    return sxy / math.sqrt(sxx * syy)


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """The least-squares slope of ys on xs."""
    sums = _centered_sums(xs, ys)
    return sums[2] / sums[0] if sums is not None and sums[0] else None


def calibration_bins(
    probabilities: Sequence[float], outcomes: Sequence[int], bins: int = 10
) -> dict[str, Any]:
    """Equal-width bins of predicted probability: count, mean prediction and observed frequency of each, and the
    expected calibration error (the count-weighted mean gap between the two)."""
    table: list[dict[str, Any]] = []
    gap_sum = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [
            (p, o)
            for p, o in zip(probabilities, outcomes, strict=True)
            if low <= p < high or (b == bins - 1 and p == 1.0)
        ]
        row: dict[str, Any] = {"low": low, "high": high, "count": len(members)}
        if members:
            predicted = sum(p for p, _ in members) / len(members)
            observed = sum(o for _, o in members) / len(members)
            row.update(mean_predicted=predicted, observed=observed)
            gap_sum += len(members) * abs(predicted - observed)
        table.append(row)
    total = len(probabilities)
    return {"bins": table, "ece": gap_sum / total if total else None}


def evaluate_reward_model(
    reward_model: Scorer,
    comparisons: Sequence[Comparison],
    out_dir: str | Path | None = None,
    *,
    batch_size: int = 16,
    plots: bool = True,
    bins: int = 10,
) -> dict[str, Any]:
    """Score every response of ``comparisons`` and report accuracy, per-category and per-rater agreement,
    calibration and length bias. With ``out_dir``, write ``rm_eval.json`` (and the plots, with ``plots``)."""
    if not comparisons:
        raise ValueError("no comparisons to evaluate the reward model on")
    plt = require_matplotlib() if plots and out_dir is not None else None
    items: list[Conversation] = [c.conversation(k) for c in comparisons for k in range(c.k)]
    flat_scores = reward_model.score(items, batch_size=batch_size)
    scores: list[list[float]] = []
    lengths: list[list[int]] = []
    at = 0
    for c in comparisons:
        scores.append(flat_scores[at : at + c.k])
        lengths.append(
            [len(reward_model.tokenizer.encode(r.text, add_special_tokens=False)) for r in c.responses]
        )
        at += c.k

    # The same loss as training (margin 0), so eval numbers compare with the training curve.
    width = max(c.k for c in comparisons)
    rewards = torch.zeros(len(comparisons), width, dtype=torch.float64)
    ranks = torch.zeros(len(comparisons), width, dtype=torch.long)
    for i, c in enumerate(comparisons):
        rewards[i, : c.k] = torch.tensor(scores[i], dtype=torch.float64)
        ranks[i, : c.k] = torch.tensor(c.ranks)
    loss, stats = losses.ranking_loss(rewards, ranks)

    by_category: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"comparisons": 0, "pairs": 0, "correct": 0.0}
    )
    by_rater: dict[str, dict[str, Any]] = defaultdict(lambda: {"comparisons": 0, "pairs": 0, "correct": 0.0})
    probabilities: list[float] = []
    outcomes: list[int] = []
    longer_pairs = rm_longer = labels_longer = 0
    for c, rs, ls in zip(comparisons, scores, lengths, strict=True):
        groups = [by_category[c.category_name or "(none)"]]
        if c.rater is not None:
            rater_entry = by_rater[c.rater.id]
            rater_entry["kind"] = c.rater.kind
            groups.append(rater_entry)
        for group in groups:
            group["comparisons"] += 1
        for winner, loser in c.pairs():
            right = 1.0 if rs[winner] > rs[loser] else 0.0
            for group in groups:
                group["pairs"] += 1
                group["correct"] += right
            p = _sigmoid(rs[winner] - rs[loser])
            probabilities += [p, 1.0 - p]  # (winner, loser) won; (loser, winner) lost
            outcomes += [1, 0]
            if ls[winner] != ls[loser]:
                longer_pairs += 1
                longer, shorter = (winner, loser) if ls[winner] > ls[loser] else (loser, winner)
                labels_longer += int(longer == winner)
                rm_longer += int(rs[longer] > rs[shorter])

    def finish(groups: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out = {}
        for name in sorted(groups):
            entry = dict(groups[name])
            entry["accuracy"] = _accuracy(entry.pop("correct"), entry["pairs"])
            out[name] = entry
        return out

    all_scores = [s for rs in scores for s in rs]
    all_lengths = [n for ls in lengths for n in ls]
    top_scores = [rs[k] for c, rs in zip(comparisons, scores, strict=True) for k in c.best()]
    slope = _slope(all_lengths, all_scores)
    report: dict[str, Any] = {
        "comparisons": len(comparisons),
        "responses": len(all_scores),
        "pairs": stats.pairs,
        "accuracy": _accuracy(stats.correct, stats.pairs),
        "loss": float(loss),
        "by_category": finish(by_category),
        "by_rater": finish(by_rater),
        "calibration": calibration_bins(probabilities, outcomes, bins),
        "length": {
            "correlation": _pearson(all_lengths, all_scores),
            "reward_per_100_tokens": slope * 100 if slope is not None else None,
            "pairs_with_different_lengths": longer_pairs,
            "rm_prefers_longer": rm_longer / longer_pairs if longer_pairs else None,
            "raters_prefer_longer": labels_longer / longer_pairs if longer_pairs else None,
        },
        "reward": {
            "mean": sum(all_scores) / len(all_scores),
            "std": float(torch.tensor(all_scores, dtype=torch.float64).std()) if len(all_scores) > 1 else 0.0,
            "top_ranked_mean": sum(top_scores) / len(top_scores),
        },
        "plots": None,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if plt is not None:
            _plot_calibration(plt, report["calibration"], out / CALIBRATION_PLOT)
            top = {(i, k) for i, c in enumerate(comparisons) for k in c.best()}
            is_top = [(i, k) in top for i, c in enumerate(comparisons) for k in range(c.k)]
            _plot_length(plt, all_lengths, all_scores, is_top, report["length"], out / LENGTH_PLOT)
            report["plots"] = {"calibration": CALIBRATION_PLOT, "reward_vs_length": LENGTH_PLOT}
        write_text_atomically(out / EVAL_FILE, json.dumps(report, indent=2) + "\n")
    return report


def _plot_calibration(plt: Any, calibration: dict[str, Any], path: Path) -> None:
    rows = [r for r in calibration["bins"] if r["count"]]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ax.plot(
        [r["mean_predicted"] for r in rows],
        [r["observed"] for r in rows],
        marker="o",
        label="reward model",
    )
    for r in rows:
        ax.annotate(
            str(r["count"]),
            (r["mean_predicted"], r["observed"]),
            fontsize=7,
            xytext=(3, -9),
            textcoords="offset points",
        )
    ece = calibration["ece"]
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="predicted P(A preferred) = sigmoid(r_A - r_B)",
        ylabel="observed frequency A preferred",
        title=f"Reward model calibration (ECE {ece:.3f})" if ece is not None else "Reward model calibration",
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_length(
    plt: Any,
    lengths: Sequence[int],
    scores: Sequence[float],
    is_top: Sequence[bool],
    summary: dict[str, Any],
    path: Path,
) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for top, color, label in ((False, "tab:gray", "other responses"), (True, "tab:blue", "top-ranked")):
        xs = [n for n, t in zip(lengths, is_top, strict=True) if t is top]
        ys = [s for s, t in zip(scores, is_top, strict=True) if t is top]
        ax.scatter(xs, ys, s=12, alpha=0.6, color=color, label=label)
    slope = _slope(lengths, scores)
    if slope is not None:
        mx, my = sum(lengths) / len(lengths), sum(scores) / len(scores)
        xs_line = [min(lengths), max(lengths)]
        ax.plot(xs_line, [my + slope * (x - mx) for x in xs_line], color="tab:red", label="least-squares fit")
    correlation = summary["correlation"]
    title = "Reward vs response length"
    if correlation is not None:
        title += f" (r = {correlation:.2f})"
    ax.set(xlabel="response length (tokens)", ylabel="reward", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
