"""A reward-model run killed and resumed gives the same curves, weights and normalisation as one that never
stopped."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch

from chatforge import models
from chatforge.data.comparisons import Comparison, Response
from chatforge.train import reward
from chatforge.train.checkpoint import STATE_FILE
from chatforge.train.reward import RewardConfig, RewardConfigError, RewardTrainer


class Killed(Exception):
    """Stands in for the process being killed in the middle of a run."""


def comparisons(n: int, seed: int) -> list[Comparison]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a = rng.randint(2, 30)
        right = f"{a} squared is {a * a}."
        wrong = f"{a} squared is {a * a + rng.randint(1, 9)}."
        rude = "Work it out yourself."
        responses, ranks = [right, wrong, rude], [1, 2, 3]
        if i % 3 == 0:  # some prompts with two responses, to mix K in a batch
            responses, ranks = [right, rude], [1, 2]
        out.append(
            Comparison(
                f"sq-{i}",
                [{"role": "user", "content": f"Square {a}."}],
                [Response(t) for t in responses],
                ranks,
            )
        )
    return out


def config(tmp_path, name: str, **overrides) -> RewardConfig:
    values = dict(
        output_dir=str(tmp_path / name),
        learning_rate=2e-3,
        max_steps=7,  # more than one epoch: 12 comparisons in micro-batches of 4 make 3 steps an epoch
        batch_prompts=4,
        max_seq_len=64,
        warmup_steps=2,
        save_every=2,
        eval_every=3,
        plots=False,
        progress=False,
        tensorboard=False,
    )
    values.update(overrides)
    return RewardConfig(**values)


def curve(run, key: str) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in records if key in r]


def kill_at(step: int):
    def on_log(record: dict) -> None:
        if record["kind"] == "train" and record["step"] == step:
            raise Killed

    return on_log


@pytest.fixture(scope="module")
def base_rm():
    lm, tokenizer = models.build_tiny()
    return reward.reward_model_from_causal_lm(lm, tokenizer, seed=0)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_killed_and_resumed_run_matches_an_uninterrupted_one(base_rm, tmp_path, lora):
    model, tokenizer = base_rm
    data, held_out = comparisons(12, seed=1), comparisons(3, seed=2)
    # Full training under bf16 autocast where the CPU has it; LoRA with dropout, so RNG state matters.
    extra = (
        {"lora": True, "lora_r": 4, "lora_dropout": 0.2, "learning_rate": 1e-2} if lora else {"bf16": "auto"}
    )

    whole = RewardTrainer(config(tmp_path, "whole", **extra), copy.deepcopy(model), tokenizer, data, held_out)
    whole_result = whole.train()

    broken = config(tmp_path, "broken", **extra)
    with pytest.raises(Killed):
        RewardTrainer(broken, copy.deepcopy(model), tokenizer, data, held_out, on_log=kill_at(5)).train()
    run = tmp_path / "broken"
    assert [step for step, _ in curve(run, "loss")] == [1, 2, 3, 4, 5]
    # Debris a crash could leave: a half-written checkpoint (no state file) and a temporary directory.
    (run / "checkpoint-6" / "model").mkdir(parents=True)
    (run / ".checkpoint-6.tmp-12345").mkdir()

    resumed = RewardTrainer(
        config(tmp_path, "broken", resume=True, **extra), copy.deepcopy(model), tokenizer, data, held_out
    )
    result = resumed.train()
    assert result.step == 7
    assert not (run / ".checkpoint-6.tmp-12345").exists()

    for key in ("loss", "accuracy", "grad_norm", "lr", "reward_mean", "eval_loss", "eval_accuracy"):
        expected, got = curve(tmp_path / "whole", key), curve(run, key)
        assert [s for s, _ in got] == [s for s, _ in expected], key  # each step logged once, in order
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6, abs=1e-7), key
    for (name, a), b in zip(whole.model.named_parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    assert result.offset == pytest.approx(whole_result.offset, rel=1e-6, abs=1e-7)
    assert (
        result.eval_report is not None
        and result.eval_report["accuracy"] == whole_result.eval_report["accuracy"]
    )


def test_resume_refuses_a_different_data_order(base_rm, tmp_path):
    model, tokenizer = base_rm
    data = comparisons(12, seed=1)
    RewardTrainer(
        config(tmp_path, "run", max_steps=2, bf16=False), copy.deepcopy(model), tokenizer, data
    ).train()
    assert (tmp_path / "run" / "checkpoint-2" / STATE_FILE).is_file()
    changed = config(tmp_path, "run", max_steps=4, bf16=False, batch_prompts=3, resume=True)
    with pytest.raises(RewardConfigError, match=r"batch_prompts: 4 -> 3"):
        RewardTrainer(changed, copy.deepcopy(model), tokenizer, data).train()
    other_data = config(tmp_path, "run", max_steps=4, bf16=False, resume=True)
    with pytest.raises(RewardConfigError, match="data: "):
        RewardTrainer(other_data, copy.deepcopy(model), tokenizer, comparisons(13, seed=1)).train()
    # Same settings, more steps: the run simply continues.
    assert RewardTrainer(other_data, copy.deepcopy(model), tokenizer, data).train().step == 4
    assert [s for s, _ in curve(tmp_path / "run", "loss")] == [1, 2, 3, 4]
