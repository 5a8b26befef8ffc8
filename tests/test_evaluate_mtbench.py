"""The MT-Bench guard: final-answer extraction validated on FastChat's reference answers, chrF against its published
value, the report, and an end-to-end run on the tiny model."""

from __future__ import annotations

import json

import pytest

from chatforge.data.mtbench import data_dir, mtbench_questions
from chatforge.evaluate import mtbench
from chatforge.evaluate.mtbench import chrf, final_number, grade, number_matches, remainder
from chatforge.generation import TorchEngine


@pytest.fixture(scope="module")
def questions():
    return {q.question_id: q for q in mtbench_questions()}


def _reference_answers(model: str) -> dict[int, str]:
    path = data_dir() / "reference_answer" / f"{model}.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {int(r["question_id"]): r["choices"][0]["turns"][0] for r in records}


def test_answer_key_covers_the_math_and_reasoning_questions(questions):
    keys = mtbench.answer_keys()
    graded = sorted(q.question_id for q in questions.values() if q.category in mtbench.GRADED_CATEGORIES)
    assert sorted(keys) == graded and len(graded) == 20


def test_scorer_marks_exactly_the_known_wrong_gpt4_references(questions):
    """FastChat's gpt-4 reference answers are wrong on four of these questions (the MT-Bench authors' notes say
    David has no brother, the secretary is Alice, the area is 3, the probability 35/36); the scorer must find
    exactly those four, and must pass the newer gpt-4-0125-preview references, which are all right."""
    gpt4 = _reference_answers("gpt-4")
    wrong = {qid: grade(questions[qid], gpt4[qid])[1] for qid in mtbench.answer_keys() if not grade(questions[qid], gpt4[qid])[0]}
    assert wrong == {104: "one", 105: "cheryl", 111: "0", 114: "94.4%"}
    newer = _reference_answers("gpt-4-0125-preview")
    assert all(grade(questions[qid], newer[qid])[0] for qid in mtbench.answer_keys() if qid in newer)


# replies written by hand: (question, reply, expected correct, expected extracted answer)
HAND = [
    (101, "You are now in first place, and the person you overtook is second.", False, "first"),
    (101, "If you just overtook the second person, you are in second place; they are now third.", True, "second"),
    (102, "The White House is right in front of you, the pink place.", False, "nearby"),
    (104, "Each of them has one brother. David has three brothers.", False, "several"),
    (104, "David has no brothers: each of his sisters has one brother, and that is David himself.", True, "none"),
    (106, "The third statement is false.", False, "false"),
    (106, "If the first two statements are true, then the third statement is true.", True, "true"),
    (107, "A is the father of B. B is the father of C. So A is the grandfather of C.", True, "grandfather"),
    (107, "A is the uncle of C.", False, "other"),
    (108, "The word that does not belong is engine, because the others are about driving.", False, "part"),
    (109, "The shadow points east, because the sun rises in the east.", False, "east"),
    (110, "The aides should report situation c, where the girls took her backpack.", True, "c"),
    (111, "The area of the triangle is 3 square units.", True, "3"),
    (111, "Using the formula with (0, 0), (-1, 1), and (3, 3), the area is 6.", False, "6"),
    (112, "8000 + 4000 = 12,000, so the total is $12,000.", True, "12,000"),
    (113, "58% + 45% - 22% = 81%, so 100% - 81% = 19% like neither.", True, "19%"),
    (113, "The probability is 0.19.", True, "0.19"),
    (114, "The probability is 35/36, about 0.97.", True, "0.97"),
    (114, "The probability is about 97.2%.", True, "97.2%"),
    (114, "The probability is nearly 1.", False, "1"),
    (117, "There are 19 integers in the solution of the inequality |x + 5| < 10.", True, "19"),
    (118, "The remainder when twice the number is divided by 4 is 0.", True, "0"),
    (119, "5 * 20 + 3 * 30 + 2 * 45 = 100 + 90 + 90 = 280 dollars.", True, "280"),
    (120, "The value of f(2) is 0.", True, "0"),
    (120, "I cannot compute that.", False, None),
]


@pytest.mark.parametrize(("qid", "reply", "correct", "extracted"), HAND)
def test_final_answer_rules_on_hand_written_replies(questions, qid, reply, correct, extracted):
    assert grade(questions[qid], reply) == (correct, extracted)


def test_copied_question_text_is_not_an_answer(questions):
    question = questions[117].turns[0]  # How many integers are in the solution of the inequality |x + 5| < 10
    assert remainder("There are 19 integers in the solution of the inequality |x + 5| < 10", question) == [
        "there", "are", "19", "integers",
    ]
    assert final_number("The solution of the inequality |x + 5| < 10 is", question) is None
    assert grade(questions[118], "When a number is divided by 10, the remainder is 4.") == (False, None)


@pytest.mark.parametrize(
    ("token", "answer", "matches"),
    [
        ("12,000", "12000", True),
        ("12000.00", "12000", True),
        ("35/36", "35/36", True),
        ("70/72", "35/36", True),
        ("0.97", "35/36", True),
        ("0.972", "35/36", True),
        ("97.2%", "35/36", True),
        ("0.98", "35/36", False),
        ("1", "35/36", False),
        ("1.0", "35/36", False),
        ("19%", "19%", True),
        ("0.19", "19%", True),
        ("19", "19%", False),
        ("2.9", "3", False),
        ("3", "3", True),
    ],
)
def test_number_matching(token, answer, matches):
    assert number_matches(token, answer) is matches


def test_chrf_matches_the_published_value():
    # sacreBLEU's chrF (beta 2, order 6) of this pair, as printed in the Hugging Face metric card: 61.576379378113785
    hypothesis = "The relationship between Obama and Netanyahu is not exactly friendly."
    reference = "The ties between Obama and Netanyahu are not particularly friendly."
    assert chrf(hypothesis, reference) == pytest.approx(61.576379378113785, abs=1e-9)
    assert chrf(reference, reference) == pytest.approx(100.0)
    assert chrf("", reference) == 0.0
    assert chrf("xyz", "abc") == 0.0
    # by hand: "ab" against "abc": unigrams P=1, R=2/3; bigrams P=1, R=1/2; trigrams none in "ab", so 2 orders:
    # P = 1, R = 7/12, F2 = 5 * 7/12 / (4 + 7/12) = 35/55
    assert chrf("ab", "abc") == pytest.approx(100 * 35 / 55)


def test_chrf_ranks_real_answers_above_refusals(questions):
    """The continuous score separates a strong model's answers from a refusal and from an off-topic reply."""
    gpt4, newer = _reference_answers("gpt-4"), _reference_answers("gpt-4-0125-preview")
    shared = sorted(set(gpt4) & set(newer))
    strong = sum(chrf(newer[q], gpt4[q]) for q in shared) / len(shared)
    refusal = sum(chrf("I'm sorry, but I can't help with that.", gpt4[q]) for q in shared) / len(shared)
    off_topic = sum(chrf("The capital of France is Paris.", gpt4[q]) for q in shared) / len(shared)
    assert strong > 40 and refusal < 10 and off_topic < 10


def test_report_json_rescore_and_compare(questions, tmp_path):
    gpt4 = _reference_answers("gpt-4")
    chosen = [questions[q] for q in (101, 104, 111, 121, 81)]  # reasoning, reasoning, math, coding, writing
    strong = mtbench.MTBenchReport("gpt-4", 0, [mtbench.score(q, gpt4.get(q.question_id, "A poem."), "stop") for q in chosen])
    weak = mtbench.MTBenchReport("weak", 0, [mtbench.score(q, "I'm sorry, but I can't help with that.") for q in chosen])
    accuracy = strong.accuracy()
    assert (accuracy["reasoning"].successes, accuracy["reasoning"].n) == (1, 2)  # 104 is wrong in the reference
    assert (accuracy["math"].successes, accuracy["math"].n) == (0, 1)  # so is 111
    assert strong.chrf_scores()["all"].n == 4 and strong.chrf_scores()["all"].mean == pytest.approx(100.0)
    assert weak.results[4].chrf is None and weak.results[4].correct is None
    assert strong.degenerate()["all"].successes == 0
    assert "accuracy (answer key, by code)" in strong.format()
    path = tmp_path / "m.json"
    strong.write_json(path)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["results"][0]["reply"] == gpt4[101] and saved["accuracy"]["math+reasoning"]["n"] == 3
    again = mtbench.rescore(path)
    assert [r.correct for r in again.results] == [r.correct for r in strong.results]
    comparison = mtbench.compare(weak, strong)
    assert comparison.accuracy.only_b == 1 and comparison.chrf.difference > 50
    json.dumps(comparison.to_dict())
    (tmp_path / "bad.json").write_text('{"model": "m", "max_new_tokens": 1, "results": [{"question_id": 5, "reply": ""}]}')
    with pytest.raises(mtbench.MTBenchError, match="which MT-Bench does not have"):
        mtbench.rescore(tmp_path / "bad.json")


def test_bad_answer_key_gets_a_clear_error(tmp_path):
    path = tmp_path / "key.json"
    path.write_text(json.dumps({"questions": {"111": {"kind": "number", "answer": "three"}}}), encoding="utf-8")
    with pytest.raises(mtbench.MTBenchError, match="question 111: answer 'three' is not a number"):
        mtbench.answer_keys(path)
    path.write_text(json.dumps({"questions": {"101": {"kind": "choice", "candidates": {"a": "x"}, "correct": "b"}}}))
    with pytest.raises(mtbench.MTBenchError, match="'correct' must name a candidate"):
        mtbench.answer_keys(path)


def test_evaluate_on_the_tiny_model(tiny, questions, capsys):
    model, tokenizer = tiny
    chosen = [questions[q] for q in (101, 111, 121)]
    report = mtbench.evaluate_mtbench(TorchEngine(model, tokenizer), chosen, model_name="tiny", max_new_tokens=6)
    assert [r.question_id for r in report.results] == [101, 111, 121]
    assert all(r.chrf is not None and 0 <= r.chrf <= 100 for r in report.results)
    assert report.results[2].correct is None and report.results[0].correct is not None
    json.dumps(report.to_dict())


def test_cli_mtbench_rescore(tmp_path, capsys, questions):
    report = mtbench.MTBenchReport("m", 8, [mtbench.score(questions[111], "The area is 3.")])
    report.write_json(tmp_path / "m.json")
    from chatforge.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["eval", "mtbench", "--rescore", str(tmp_path / "m.json"), "--show", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "math+reasoning" in out and "[111 math: RIGHT (answer found: 3), chrF" in out
    args = parser.parse_args(["eval", "mtbench", "--rescore", str(tmp_path / "missing.json")])
    assert args.func(args) == 2
