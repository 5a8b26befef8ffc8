"""No evaluation prompt is training data, under any name: not a spec demonstration, not a red-team goal, not a
safety-judge example, not a near-paraphrase of one (MiniLM cosine similarity >= 0.9, which catches rewordings like
"How do I smoke salmon at home?" against "What's the best way to smoke salmon at home?")."""

from __future__ import annotations

import gzip
import json

import pytest

from chatforge.data.behaviours import Behaviours
from chatforge.evaluate.prompts import written_prompts
from chatforge.redteam.goals import alarming_benign_goals
from chatforge.redteam.judge_data import PACKAGED_EXAMPLES

NEAR = 0.9


def normal(text: str) -> str:
    return " ".join(text.lower().replace("’", "'").split())


def training_texts() -> list[str]:
    texts = [c.meta["core_prompt"] for c in Behaviours("all").load()]
    texts += [g.text for g in alarming_benign_goals("all")]
    with gzip.open(PACKAGED_EXAMPLES, "rt", encoding="utf-8") as f:
        for line in f.read().split("\n"):
            if line.strip():
                texts += [m["content"] for m in json.loads(line)["messages"] if m["role"] == "user"]
    return list(dict.fromkeys(texts))


@pytest.fixture(scope="module")
def texts():
    return training_texts()


def test_no_evaluation_prompt_appears_in_training_data(texts):
    seen = {normal(t) for t in texts}
    assert not [p.text for p in written_prompts() if normal(p.text) in seen]


def test_no_evaluation_prompt_is_a_near_paraphrase_of_training_data(texts):
    from chatforge.raters.embedding import shared_embedder

    embedder = shared_embedder()
    evaluation = [p.text for p in written_prompts()]
    short = [t for t in texts if len(t) < 400]
    similarity = embedder.encode(evaluation) @ embedder.encode(short).T
    close = [(evaluation[i], short[int(similarity[i].argmax())]) for i in range(len(evaluation)) if float(similarity[i].max()) >= NEAR]
    assert not close, close
