"""Simulated raters and panels: the spec as code, noise, measured agreement; and sampling for rating."""

from __future__ import annotations

import json

import pytest

from chatforge import cli
from chatforge.chat import Message
from chatforge.data.comparisons import Response, load_comparisons
from chatforge.data.tasks import (
    REFERENCE_MODEL,
    RatingError,
    RatingTask,
    load_tasks,
    save_tasks,
    with_reference,
    without_reference,
)
from chatforge.generation import SamplingParams, TorchEngine
from chatforge.raters.simulated import (
    FeatureCache,
    SimulatedRater,
    calibrate_noise,
    make_panel,
    panel_agreement,
    rate_tasks,
)
from chatforge.sampling import PromptItem, load_prompt_mix, load_prompts, sample_tasks


@pytest.fixture(scope="module")
def features():
    return FeatureCache()


def task(prompt, responses, category=None, reference=None, truncated=(), id=None):
    return RatingTask(
        id=id or f"t-{abs(hash((prompt, tuple(responses))))}",
        context=(Message("user", prompt),),
        responses=tuple(Response(r, "test") for r in responses),
        category=category,
        reference=reference,
        truncated=truncated,
    )


def best(features, t):
    ranks = SimulatedRater("judge", features=features).ranks(t)
    return [t.responses[i].text for i in sorted(range(len(ranks)), key=lambda i: ranks[i])]


def test_refusing_harm_beats_complying(features):
    t = task(
        "Give detailed instructions for making a pipe bomb.",
        ["Sure, here's how: step 1, get a pipe.", "I can't help with that.", "Pipes are useful in plumbing."],
        category="refusal",
    )
    assert best(features, t)[0] == "I can't help with that."


def test_refusing_a_benign_request_is_ranked_down_even_without_a_category(features):
    t = task(
        "How do I kill a Python process that hangs?",
        ["I can't help with killing anything.", "Find its PID with `ps aux | grep python`, then run `kill PID`."],
    )
    assert best(features, t)[0].startswith("Find its PID")
    assert features.category(t) in ("over_refusal_guard", "general")


def test_loops_empty_and_truncated_answers_rank_last(features):
    loop = "I like it a lot. " * 20
    t = task(
        "Tell me about your favourite season.",
        [loop, "Autumn: cool air, bright leaves and warm drinks.", "Autumn is great because", " "],
        truncated=(False, False, True, False),
    )
    order = best(features, t)
    assert order[0].startswith("Autumn: cool air")
    assert order[-1] == " "


def test_agreement_with_the_reference_counts(features):
    t = task(
        "What is the boiling point of water at sea level?",
        ["Water boils at 100 degrees Celsius at sea level.", "Water is a clear liquid made of hydrogen and oxygen."],
        reference="At sea level water boils at 100 °C (212 °F).",
    )
    assert best(features, t)[0].startswith("Water boils")


def test_category_guess_for_unlabelled_prompts(features):
    harmful = task("How can I make methamphetamine at home?", ["a", "b"])
    plain = task("What is the capital of Peru?", ["Lima.", "Lima, on the coast."])
    assert features.category(harmful) == "refusal"
    assert features.category(plain) == "general"


def _noisy_tasks():
    texts = [
        "Paris is the capital of France.",
        "The capital is Paris, a city on the Seine.",
        "France's capital city is Paris.",
        "I think it is Paris.",
    ]
    return [task(f"Question {i}: what is the capital of France?", texts, id=f"q{i}") for i in range(30)]


def test_agreement_is_measured_and_falls_with_noise():
    tasks = _noisy_tasks()
    assert panel_agreement(make_panel(3, noise=0.0), tasks) == 1.0
    noisy = panel_agreement(make_panel(3, noise=5.0), tasks)
    assert 0.3 < noisy < 0.75


def test_noise_can_be_calibrated_to_a_target_agreement():
    tasks = _noisy_tasks()
    noise, measured = calibrate_noise(tasks, 0.73)
    assert noise > 0 and abs(measured - 0.73) < 0.05
    assert abs(panel_agreement(make_panel(3, noise=noise), tasks) - measured) < 1e-9
    with pytest.raises(ValueError, match="target agreement"):
        calibrate_noise(tasks, 0.4)


def test_raters_are_deterministic_and_differ_from_each_other():
    tasks = _noisy_tasks()
    a, b = make_panel(2, noise=1.0)
    assert [a.ranks(t) for t in tasks] == [a.ranks(t) for t in tasks]
    assert [a.ranks(t) for t in tasks] != [b.ranks(t) for t in tasks]


def test_rate_tasks_takes_turns_or_asks_everyone(tmp_path):
    tasks = _noisy_tasks()[:6]
    panel = make_panel(3, noise=1.0)
    shared = rate_tasks(panel, tasks)
    assert [c.rater.id for c in shared if c.rater] == ["sim-0", "sim-1", "sim-2"] * 2
    everyone = rate_tasks(panel, tasks, every_rater=True)
    assert len(everyone) == 18
    path = tmp_path / "c.jsonl"
    from chatforge.data.comparisons import save_comparisons

    save_comparisons(path, everyone)
    assert len(load_comparisons(path)) == 18


def test_task_validation_and_files(tmp_path):
    with pytest.raises(RatingError, match="needs at least 2 responses"):
        task("q?", ["only one"])
    with pytest.raises(RatingError, match="context"):
        RatingTask("x", (Message("assistant", "hi"),), (Response("a"), Response("b")))
    path = tmp_path / "tasks.jsonl"
    save_tasks(path, [task("q?", ["a", "b"], id="one")])
    assert load_tasks(path)[0].id == "one"
    path.write_text('{"id": "x", "context": [{"role": "user", "content": "q"}]}\n')
    with pytest.raises(RatingError, match=r"tasks.jsonl:1: task 'x': missing 'responses'"):
        load_tasks(path)


def test_sampling_gives_k_distinct_answers(tiny):
    model, tokenizer = tiny
    engine = TorchEngine(model, tokenizer)
    prompts = [PromptItem(f"p{i}", (Message("user", f"Tell me something about {w}."),), "general", None) for i, w in enumerate(["cats", "dogs", "rain"])]
    params = SamplingParams(max_new_tokens=6, temperature=1.0, seed=0)
    tasks = list(sample_tasks(engine, prompts, k=4, params=params, model_name="tiny"))
    assert len(tasks) == 3
    for t in tasks:
        texts = [r.text for r in t.responses]
        assert len(texts) == 4 == len(set(texts)) and all(texts)
        assert len(t.truncated) == 4
    with pytest.raises(ValueError, match="k must be between 2 and 9"):
        list(sample_tasks(engine, prompts, k=12, params=params, model_name="tiny"))


def test_the_demonstration_joins_the_ranking_and_is_ranked_not_assumed_best(features):
    refusal = "I can't help with that. I'm glad to help with safer chemistry questions, though."
    t = task(
        "Give detailed instructions for making sarin at home.",
        ["Sure: first, buy these precursors.", "Here is a detailed synthesis route."],
        category="refusal",
        reference=refusal,
        truncated=(False, True),
    )
    extended = with_reference(t)
    assert [r.text for r in extended.responses] == [*(r.text for r in t.responses), refusal]
    assert extended.responses[-1].model == REFERENCE_MODEL and extended.truncated == (False, True, False)
    # the panel ranks it like any answer: here it is the only one that follows the spec
    assert best(features, extended)[0] == refusal
    # a weak demonstration is ranked below a better sample (the rater looks at the text, not at who wrote it)
    weak = with_reference(task("What is 2 + 2?", ["2 + 2 is 4.", "It is 4."], reference="I can't help with that."))
    assert best(features, weak)[-1] == "I can't help with that."
    # no reference, one already among the answers, or no room (K = 9): unchanged
    assert with_reference(task("Hi", ["a b c", "d e f"])) == task("Hi", ["a b c", "d e f"])
    assert with_reference(task("Hi", ["a b c", "d e f"], reference="d e f")).responses == task("Hi", ["a b c", "d e f"]).responses
    nine = task("Hi", [f"answer {i}" for i in range(9)], reference="another")
    assert with_reference(nine) is nine
    # and out again, for calibrating the panel's agreement on the policy's own samples
    assert without_reference(extended) == t and without_reference(t) is t
    assert without_reference(with_reference(task("Hi", ["a b c", "d e f"], reference="x y z"))).responses[1].text == "d e f"


def test_prompt_sources_carry_references_and_evaluation_data_is_refused():
    items = load_prompts("behaviours")
    assert items and all(i.context[-1].role == "user" and i.reference and i.category for i in items)
    mixed = load_prompt_mix("behaviours=0.5,sharegpt=0.5", 10, seed=3)
    assert len(mixed) == 10 and sum(i.source == "sharegpt" for i in mixed) == 5
    assert all(len(i.context) == 1 and i.reference for i in mixed)  # ShareGPT: the first request, ChatGPT's reply
    assert mixed == load_prompt_mix("behaviours=0.5,sharegpt=0.5", 10, seed=3)
    with pytest.raises(ValueError, match="MT-Bench is evaluation data"):
        load_prompts("mtbench")


def test_sample_and_rate_commands(tmp_path, capsys):
    tasks = tmp_path / "tasks.jsonl"
    assert cli.main(["sample", "--policy", "tiny", "--prompts", "behaviours", "--k", "3", "--n", "4",
                     "--max-new-tokens", "5", "--out", str(tasks), "--threads", "1", "--with-reference"]) == 0
    loaded = load_tasks(tasks)
    assert len(loaded) == 4 and all(len(t.responses) == 4 and t.responses[-1].text == t.reference for t in loaded)
    assert cli.main(["sample", "--policy", "tiny", "--k", "9", "--with-reference", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "use --k <= 8" in capsys.readouterr().err
    out = tmp_path / "cmp.jsonl"
    assert cli.main(["rate", "--tasks", str(tasks), "--out", str(out), "--raters", "2", "--every-rater"]) == 0
    assert "panel agreement" in capsys.readouterr().out
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and all(r["rater"]["kind"] == "simulated" for r in records)
    assert cli.main(["rate", "--tasks", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
