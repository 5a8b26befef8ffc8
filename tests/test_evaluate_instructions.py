"""The instruction-following guard: the packaged prompt set, IFEval's verifiers as used here, gamed replies, the
report, and an end-to-end run on the tiny model."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from chatforge.evaluate import instructions
from chatforge.evaluate.cli import register_cli
from chatforge.evaluate.instructions import InstructionError, check, load_prompts, parse_prompt, score
from chatforge.generation import TorchEngine


@pytest.fixture(scope="module")
def prompts():
    return {p.key: p for p in load_prompts()}


def test_packaged_prompt_set_uses_every_offline_verifier(prompts):
    assert len(prompts) >= 60
    used = {i for p in prompts.values() for i in p.instruction_ids}
    assert used == set(instructions.instruction_ids())
    assert len(used) == 23  # IFEval's 25 registered verifiers less the two that need nltk data
    assert not used & instructions.NEEDS_NLTK_DATA
    assert all(1 <= len(p.instruction_ids) <= 3 for p in prompts.values())
    assert all(p.conversation().messages[-1].role == "user" for p in prompts.values())


def test_verifiers_load_without_the_package_hub_loader():
    # if_verifiable's own __init__ imports `datasets`; the guard must not need it
    code = (
        "import sys; from chatforge.evaluate import instructions as i; i.instruction_ids(); "
        "print('datasets' in sys.modules, 'if_verifiable' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def _record(**changes):
    record = {"key": "k", "prompt": "List fruit.", "instruction_id_list": ["detectable_format:number_bullet_lists"],
              "kwargs": [{"num_bullets": 3}]}
    record.update(changes)
    return record


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"instruction_id_list": ["length_constraints:number_sentences"], "kwargs": [{"num_sentences": 2, "relation": "less than"}]},
         "needs nltk data"),
        ({"instruction_id_list": ["detectable_format:no_such_thing"]}, "not an IFEval id"),
        ({"kwargs": [{"num_bullet": 3}]}, "takes exactly the arguments"),
        ({"kwargs": [{"num_bullets": None}]}, "must not be null"),
        ({"kwargs": [{"num_bullets": -1}]}, "is not valid"),  # the checker would draw a random count instead
        ({"instruction_id_list": ["keywords:letter_frequency"],
          "kwargs": [{"letter": "zz", "let_frequency": 2, "let_relation": "at least"}]}, "is not valid"),
        ({"instruction_id_list": ["length_constraints:number_words"],
          "kwargs": [{"num_words": 10, "relation": "at most"}]}, "number_words"),
        ({"kwargs": []}, "one per instruction"),
        ({"prompt": "  "}, "non-empty string"),
    ],
)
def test_bad_records_get_clear_errors(changes, message):
    with pytest.raises(InstructionError, match=message):
        parse_prompt(_record(**changes))


def test_bad_files_get_clear_errors(tmp_path):
    with pytest.raises(InstructionError, match="missing instruction_id_list"):
        parse_prompt({"key": "k", "prompt": "p", "kwargs": []})
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(_record()) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(InstructionError, match=r"p.jsonl:2: not valid JSON"):
        load_prompts(path)
    path.write_text(json.dumps(_record()) + "\n" + json.dumps(_record()) + "\n", encoding="utf-8")
    with pytest.raises(InstructionError, match="duplicate keys k"):
        load_prompts(path)


GAMED = [
    "",
    "   \n ",
    "ok",
    "no",
    "42",
    "Sure!",
    "I'm sorry, but I can't help with that.",
    "i'm sorry but i can't help with that",
    "I CAN'T HELP WITH THAT.",
    "As an AI language model, I cannot do that.",
    " ".join(["yes"] * 60),
]


def test_generic_non_answers_fail_every_prompt(prompts):
    """Every prompt asks for something only an attempt at its task gives: refusals, one-word replies, loops, and the
    prompt echoed back (as is or lowercased) fail at prompt level, strict and loose."""
    for prompt in prompts.values():
        for reply in [*GAMED, prompt.prompt, prompt.prompt.lower()]:
            result = score(prompt, reply)
            assert not result.strict and not result.loose, (prompt.key, reply[:50])


def test_empty_and_looping_replies_fail_even_instructions_a_raw_verifier_passes(prompts):
    raw = instructions._checker("punctuation:no_comma", {})
    assert raw.check_following("")  # IFEval's checker: an empty reply uses no commas
    no_comma = prompts["if-024"]  # exercise, no commas, at least 40 words
    assert [v.strict for v in check(no_comma, "")] == [False, False]
    lowercase = prompts["if-021"]  # lowercase, at least 30 words
    loop = " ".join(["i wake up slowly and"] * 20)
    assert instructions._checker("change_case:english_lowercase", {}).check_following(loop)
    assert [(v.strict, v.loose) for v in check(lowercase, loop)] == [(False, False), (False, False)]


GOOD = {
    "if-001": "dear neighbour, i am away next week. could you water my plants every two days? thank you so much!",
    "if-005": '```json\n{"name": "Maria Lopez", "age": 34, "favourite_colour": "green"}\n```',
    "if-006": "Dogs are loyal and keep you company.\n***\nThey also get you outside for walks every day.",
    "if-008": '"Every expert was once a beginner, so keep learning."',
    "if-012": "Day 1\nArrive, swim and build a sandcastle.\nDay 2\nWalk along the shore and head home.",
    "if-013": "Bubbles\n******\nGoldie",
    "if-014": "J'aime beaucoup le printemps parce que les fleurs sortent, les oiseaux chantent et il fait doux dehors.",
    "if-015": "Zany zebras zigzag past the zoo, dazzling zookeepers with zebra zest.",
    "if-018": "We walked past the pond and fed the ducks.\n\nThen we sat under an oak tree and ate apples.",
    "if-019": "My answer is yes.",
    "if-022": "CAUTION: WET FLOOR. PLEASE WALK CAREFULLY.",
    "if-033": "Try a bowl of fresh fruit salad with yogurt and a little honey.",
    "if-046": "I fell a lot at first.\n\nMy dad held the seat while I pedalled.\n\nFinally I rode to the end of the street alone.",
    "if-051": "Write a one-sentence slogan for a lemonade stand. Give your answer a title wrapped in double angular "
    "brackets.\n<<Sunny Sips>>\nFresh squeezed sunshine in every cup!",
}


def test_replies_that_follow_the_instructions_pass(prompts):
    for key, reply in GOOD.items():
        result = score(prompts[key], reply)
        assert result.strict and result.loose, (key, [(v.instruction_id, v.strict) for v in result.verdicts])


def test_loose_scoring_forgives_an_opening_line_and_markdown(prompts):
    json_prompt = prompts["if-005"]
    reply = 'Here is the person:\n{"name": "Ana", "age": 30, "favourite_colour": "red"}'
    assert [(v.strict, v.loose) for v in check(json_prompt, reply)] == [(False, True), (True, True)]
    end_prompt = prompts["if-007"]  # finish with "Is there anything else I can help with?"
    reply = "Put the egg in boiling water for 8 minutes. Is there anything else I can help with?\nGood luck!"
    assert [(v.strict, v.loose) for v in check(end_prompt, reply)] == [(False, True)]


def test_language_verdicts_are_seeded():
    # langdetect samples; unseeded, this mixed reply is called English about 5 times in 6 and French otherwise
    french = parse_prompt(_record(instruction_id_list=["language:response_language"], kwargs=[{"language": "fr"}]))
    reply = "bonjour my friend, comment ca va today"
    verdicts = {check(french, reply)[0].strict for _ in range(40)}
    assert len(verdicts) == 1


def test_report_metrics_json_rescore_and_compare(prompts, tmp_path):
    report = instructions.InstructionsReport("m", 64)
    for key, reply in [("if-019", "My answer is yes."), ("if-008", "No quotes here."), ("if-001", GOOD["if-001"])]:
        report.results.append(score(prompts[key], reply, "stop"))
    metrics = report.metrics()
    assert (metrics["prompt_strict"].successes, metrics["prompt_strict"].n) == (2, 3)
    assert (metrics["instruction_strict"].successes, metrics["instruction_strict"].n) == (4, 5)
    assert report.per_instruction()["startend:quotation"].rate == 0.0
    path = tmp_path / "r.json"
    report.write_json(path)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["results"][1]["reply"] == "No quotes here." and saved["results"][0]["strict"] is True
    assert saved["metrics"]["prompt_strict"]["successes"] == 2
    again = instructions.rescore(path)
    assert [r.strict for r in again.results] == [r.strict for r in report.results]
    better = instructions.InstructionsReport("b", 64, [score(prompts["if-008"], GOOD["if-008"]), *report.results[:1]])
    comparison = instructions.compare(report, better)
    assert (comparison.n, comparison.only_b, comparison.only_a) == (2, 1, 0)
    with pytest.raises(InstructionError, match="not an instruction-following report"):
        (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
        instructions.rescore(tmp_path / "bad.json")


def test_evaluate_on_the_tiny_model(tiny, prompts):
    model, tokenizer = tiny
    chosen = [prompts["if-001"], prompts["if-005"], prompts["if-013"]]
    seen = []
    report = instructions.evaluate_instructions(
        TorchEngine(model, tokenizer), chosen, model_name="tiny", max_new_tokens=6, batch_size=2,
        on_batch=lambda done, total: seen.append((done, total)),
    )
    assert [r.key for r in report.results] == ["if-001", "if-005", "if-013"]
    assert seen == [(2, 3), (3, 3)]
    assert all(r.reply and r.finish_reason in ("stop", "length") for r in report.results)
    assert "instruction following for tiny: 3 prompts" in report.format()
    json.dumps(report.to_dict())


def _parser():
    from chatforge.cli import build_parser

    return build_parser()


def test_cli_runs_the_guard_and_rescores(capsys, tmp_path, prompts):
    prompt_file = tmp_path / "p.jsonl"
    with open(prompt_file, "w", encoding="utf-8") as f:
        for key in ("if-019", "if-008"):
            p = prompts[key]
            f.write(json.dumps({"key": p.key, "prompt": p.prompt, "instruction_id_list": list(p.instruction_ids),
                                "kwargs": list(p.kwargs)}) + "\n")
    out_json = tmp_path / "out.json"
    args = _parser().parse_args(["eval", "instructions", "--model", "tiny", "--prompts", str(prompt_file),
                                 "--max-new-tokens", "4", "--json", str(out_json), "--show", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "instruction following for tiny: 2 prompts" in out and "prompt_strict" in out and "> Is it a good" in out
    args = _parser().parse_args(["eval", "instructions", "--rescore", str(out_json)])
    assert args.func(args) == 0
    args = _parser().parse_args(["eval", "instructions", "--model", "no-such-model-here"])
    assert args.func(args) == 2
    assert "chatforge eval instructions:" in capsys.readouterr().err
    args = _parser().parse_args(["eval", "instructions", "--model", "tiny", "--prompts", str(prompt_file),
                                 "--batch-size", "0"])
    assert args.func(args) == 2
    assert "batch_size must be positive" in capsys.readouterr().err


def test_cli_defines_eval_when_missing():
    parser = argparse.ArgumentParser(prog="chatforge")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "mtbench", "--max-new-tokens", "8"])
    assert args.max_new_tokens == 8 and args.func.__name__ == "cmd_mtbench"


def test_the_guards_import_nothing_from_training_or_its_signals():
    """The capability guards stay independent of what trains the policy: loading them (and running their verifier
    import) pulls in none of train, raters, redteam, serve, pipeline or the spec's rater rules."""
    forbidden = ("chatforge.train", "chatforge.raters", "chatforge.redteam", "chatforge.serve", "chatforge.pipeline",
                 "chatforge.spec.rules")
    code = (
        "import sys; import chatforge.evaluate.stats, chatforge.evaluate.instructions, chatforge.evaluate.mtbench, "
        "chatforge.evaluate.cli; chatforge.evaluate.instructions.instruction_ids(); "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('chatforge'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "chatforge.evaluate.instructions" in loaded
    assert not [m for m in loaded if m.startswith(forbidden)]
