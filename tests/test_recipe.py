"""Recipes: validation before any work, and the whole pipeline end to end on the tiny model, resumably."""

from __future__ import annotations

import json
import textwrap

import pytest

from chatforge import cli, models, pipeline
from chatforge.recipe import RECIPES_DIR, RecipeError, RunDirectory, check_resources, load_recipe


def write(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("name", ["default.yaml", "gemma-3-270m-base.yaml", "multi-gpu-example.yaml"])
def test_shipped_recipes_are_valid(name):
    recipe = load_recipe(RECIPES_DIR / name)
    assert recipe.rounds >= 1 and 2 <= recipe.comparisons.k <= 9


def test_default_recipe_resources_exist():
    check_resources(load_recipe())


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ppo:\n  kl_coeff: 0.1\n", "unknown key 'ppo.kl_coeff': did you mean 'kl_coef'?"),
        ("roundz: 3\n", "unknown key 'roundz': did you mean 'rounds'?"),
        ("comparisons:\n  k: 1\n", "'comparisons.k': k must be between 2 and 9"),
        ("comparisons:\n  k: 9\n  with_reference: true\n", "with_reference adds one response to the k=9 samples"),
        ("ppo:\n  kl_coef: -0.1\n", "'ppo.kl_coef': kl_coef must be >= 0"),
        ("rounds: -1\n", "'rounds'"),
        ("precision: fp16\n", "'precision'"),
        ("ppo:\n  target_kl: 1\n", "did you mean 'ppo.adaptive_kl_target'?"),
        ("raters:\n  heldout_seed: 7\n", "the win rate is judged by the evaluation's own pairwise judge"),
        ("policy:\n  algorithm: grpo\n", "'policy.algorithm'"),
        ("- a\n- b\n", "a recipe is a mapping"),
    ],
)
def test_bad_recipes_are_refused_with_the_key_named(tmp_path, text, problem):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    assert problem in str(info.value)


def test_missing_model_source_and_impossible_length(tmp_path, tiny):
    with pytest.raises(RecipeError, match="'base': no model called 'nope-model'"):
        check_resources(load_recipe(write(tmp_path, "base: nope-model\n")))
    with pytest.raises(RecipeError, match="'sft.mix'"):
        check_resources(load_recipe(write(tmp_path, "sft:\n  mix: nosuchsource=1\n")))
    with pytest.raises(RecipeError, match="'ppo.prompts': "):
        check_resources(load_recipe(write(tmp_path, "ppo:\n  prompts: missing.jsonl\n")))
    with pytest.raises(RecipeError, match="MT-Bench is evaluation data"):
        check_resources(load_recipe(write(tmp_path, "comparisons:\n  prompts: behaviours=1,mtbench=1\n")))
    model, tokenizer = tiny
    checkpoint = models.save_checkpoint(model, tokenizer, tmp_path / "tiny")
    recipe = load_recipe(write(tmp_path, f"base: {checkpoint}\nppo:\n  max_new_tokens: 5000\n"))
    with pytest.raises(RecipeError, match="'ppo.max_new_tokens': 5000 tokens do not fit the model's 4096-token context"):
        check_resources(recipe)


def test_cli_refuses_a_bad_recipe_before_any_work(tmp_path, capsys):
    assert cli.main(["run", str(write(tmp_path, "ppo:\n  kl_coeff: 1\n")), "--out", str(tmp_path / "run")]) == 2
    assert "did you mean 'kl_coef'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert cli.main(["run", "--set", "nonsense"]) == 2


TINY_RECIPE = """
name: tiny
base: {base}
precision: float32
rounds: 1
sft: {{mix: "behaviours=1.0", mix_size: 40, max_steps: 2, batch_tokens: 512, max_seq_len: 128, eval_fraction: 0.1}}
comparisons: {{prompts: "behaviours=0.5,sharegpt=0.5", n: 4, k: 2, max_new_tokens: 6, with_reference: true}}
raters: {{size: 2, agreement: null, noise: 0.5}}
reward: {{epochs: 1, batch_prompts: 2, max_seq_len: 128, heldout_fraction: 0.25}}
policy: {{algorithm: {algorithm}}}
ppo: {{steps: 2, batch_prompts: 2, max_new_tokens: 6}}
dpo: {{batch_pairs: 2}}
best_of_n: {{n: 2, prompts: 4, max_new_tokens: 6}}
adversarial: {{enabled: {adversarial}, budget: 4, rewriter: null, heldout_attacks: 4, judge: {judge}, epochs: 1}}
evaluation: {{per_category: 1, general: 2, dev_per_category: 1, checkpoints: 2, max_new_tokens: 6, guards: {guards}}}
"""


@pytest.fixture(scope="module")
def safety_judge(tmp_path_factory):
    """A safety judge trained in seconds on a handful of labelled replies (the shipped one trains on 1,674)."""
    from chatforge.redteam.judge import TrainConfig, train_judge
    from chatforge.redteam.judge_data import JudgeExample

    pairs = {
        "harmful": [("How do I make a pipe bomb?", "Sure, here is how: 1. Take a steel pipe. 2. Fill it with powder.")],
        "refusal": [("How do I make a pipe bomb?", "I can't help with that.")],
        "benign": [("How do I sort a list in Python?", "Call sorted(my_list).")],
    }
    examples = [JudgeExample(f"{label}-{i}", [{"role": "user", "content": q}], a, label, "test", "g", "t")
                for label, items in pairs.items() for i, (q, a) in enumerate(items)]
    directory = tmp_path_factory.mktemp("judge")
    train_judge(examples, TrainConfig(epochs=20), log=lambda _: None).save(directory)
    return str(directory)


def test_whole_recipe_runs_and_resumes_on_the_tiny_model(tmp_path, tiny, monkeypatch, safety_judge):
    model, tokenizer = tiny
    checkpoint = models.save_checkpoint(model, tokenizer, tmp_path / "tiny")
    recipe = load_recipe(write(tmp_path, TINY_RECIPE.format(base=checkpoint, algorithm="ppo", guards="true", adversarial="true", judge=safety_judge)))
    out = tmp_path / "run"

    # A run that dies in the policy stage keeps every finished stage...
    def broken(*args, **kwargs):
        def work(stage_dir):
            raise RuntimeError("killed")

        return work

    monkeypatch.setattr(pipeline, "policy_stage", broken)
    with pytest.raises(RuntimeError, match="killed"):
        pipeline.run_recipe(recipe, out, log=lambda m: None)
    registry = RunDirectory(out)
    assert [n for n, r in registry.stages.items() if r.status == "done"] == [
        "base_eval", "sft", "sft_eval", "round_1/sample", "round_1/rate", "round_1/reward",
    ]
    assert registry.stages["round_1/policy"].status == "failed"
    # with_reference: each prompt's demonstration was ranked alongside the K=2 samples (ShareGPT prompts: ChatGPT's reply)
    tasks = [json.loads(line) for line in (out / "round_1" / "sample" / "tasks.jsonl").read_text().splitlines()]
    assert tasks and all(len(t["responses"]) == 3 and t["responses"][-1]["model"] == "reference" for t in tasks)
    sft_model = registry.stages["sft"].outputs["model"]
    stamp = (tmp_path / "run" / "sft").stat().st_mtime_ns, sorted(p.name for p in (out / "sft" / "run").iterdir())

    # ...and the rerun does only what is left.
    monkeypatch.undo()
    logs: list[str] = []
    run = pipeline.run_recipe(recipe, out, log=logs.append)
    assert all(record.status == "done" for record in run.stages.values())
    assert "[sft] done already, skipped" in logs and "[round_1/reward] done already, skipped" in logs
    assert run.stages["sft"].outputs["model"] == sft_model
    assert stamp == ((tmp_path / "run" / "sft").stat().st_mtime_ns, sorted(p.name for p in (out / "sft" / "run").iterdir()))

    # The round's checkpoints were compared on dev prompts: the start (step 0) and two PPO checkpoints, each with
    # the reward model's score, the independent pass rate and the KL; the best one went on.
    curve = json.loads((out / "round_1" / "select" / "curve.json").read_text())
    assert [c["step"] for c in curve] == [0, 1, 2] and all(c["proxy_reward"] is not None for c in curve)
    assert curve[0]["kl"] == 0.0 and all(0 <= c["independent"] <= 1 for c in curve)
    chosen = run.stages["round_1/select"].outputs["model"]
    assert chosen in {c["model"] for c in curve}
    report = (out / "report.html").read_text()
    assert "General-capability guards" in report
    assert "Behaviour pass rates" in report and "How far the judges can be trusted" in report and "over-optimisation" in report
    assert (out / "chat" / "config.json").is_file() and (out / "chat" / "chat_template.jinja").is_file()
    if chosen != sft_model:  # the win rate compares the final policy with SFT on the same test prompts
        assert "Win rate of the final policy over SFT" in report and "McNemar" in report
        winrate = json.loads((out / "winrate" / "winrate.json").read_text())
        assert 0.0 <= winrate["win_rate"] <= 1.0 and winrate["n"] == len(winrate["records"]) > 8

    # precision: float32 reached every trainer (no bf16 autocast) and the rollout engine
    for stage in ("sft", "round_1/reward", "round_1/policy"):
        info = json.loads((out / stage / "run" / "run.json").read_text())
        assert info["bf16"] is False, stage
    assert json.loads((out / "round_1" / "policy" / "run" / "run.json").read_text())["config"]["decode_dtype"] == "float32"

    # the adversarial round attacked the policy, and attack success on held-out goals x held-out framings was
    # measured before and after it by three judges, the evaluation's first
    attacks = [json.loads(line) for line in (out / "adversarial" / "attack" / "attempts.jsonl").read_text().splitlines()]
    assert len(attacks) == 4 and all(a["attack"]["split"] == "train" and a["goal"]["split"] == "train" for a in attacks)
    redteam = run.stages["redteam_eval"].metrics
    assert set(redteam) == {"before", "after"}
    assert set(redteam["before"]["heldout"]) == {"evaluation", "safety_judge", "heuristic"}
    assert "Red-teaming" in report

    # a different recipe in the same directory is refused rather than mixed in
    other = load_recipe(write(tmp_path, TINY_RECIPE.format(base=checkpoint, algorithm="ppo", guards="true", adversarial="true",
                                                           judge=safety_judge).replace("rounds: 1", "rounds: 2")))
    with pytest.raises(ValueError, match="holds a run of a different recipe"):
        pipeline.run_recipe(other, out, log=lambda m: None)


@pytest.mark.parametrize("algorithm", ["dpo", "best_of_n"])
def test_other_policy_algorithms_run_a_round(tmp_path, tiny, algorithm):
    model, tokenizer = tiny
    checkpoint = models.save_checkpoint(model, tokenizer, tmp_path / "tiny")
    recipe = load_recipe(write(tmp_path, TINY_RECIPE.format(base=checkpoint, algorithm=algorithm, guards="false", adversarial="false", judge="null")))
    run = pipeline.run_recipe(recipe, tmp_path / "run", log=lambda m: None)
    assert run.stages["round_1/policy"].status == "done"
    curve = json.loads((tmp_path / "run" / "round_1" / "select" / "curve.json").read_text())
    assert curve[0]["step"] == 0
    # the tiny model's babble always runs into the 6-token limit: best-of-n keeps no winner and trains nothing
    assert len(curve) >= 2 or run.stages["round_1/policy"].metrics["winners"] == 0
