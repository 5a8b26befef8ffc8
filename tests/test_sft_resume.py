"""A run killed and resumed gives the same loss curve and weights as one that never stopped."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch

from chatforge import chat
from chatforge.train import SFTConfig, SFTTrainer
from chatforge.train.checkpoint import STATE_FILE
from chatforge.train.sft import SFTConfigError


class Killed(Exception):
    """Stands in for the process being killed in the middle of a run."""


def conversations(n: int) -> list[chat.Conversation]:
    rng = random.Random(5)
    out = []
    for i in range(n):
        a = rng.randint(2, 40)
        reply = f"The square of {a} is {a * a}." + " Squares grow fast." * rng.randint(0, 2)
        out.append(
            chat.Conversation.from_messages(
                [
                    {"role": "user", "content": f"Square {a}, please."},
                    {"role": "assistant", "content": reply},
                ],
                id=f"sq-{i}",
            )
        )
    return out


def config(tmp_path, name: str, **overrides) -> SFTConfig:
    values = dict(
        output_dir=str(tmp_path / name),
        learning_rate=2e-3,
        max_steps=7,  # more than one epoch: 10 conversations in micro-batches of 3 make 3 steps an epoch
        batch_sequences=3,
        max_seq_len=128,
        warmup_steps=2,
        save_every=2,
        eval_every=3,
        progress=False,
        tensorboard=False,
    )
    values.update(overrides)
    return SFTConfig(**values)


def records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def curve(run, key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in records(run) if key in r]


def kill_at(step: int):
    def on_log(record: dict) -> None:
        if record["kind"] == "train" and record["step"] == step:
            raise Killed

    return on_log


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_killed_and_resumed_run_matches_an_uninterrupted_one(tiny, tmp_path, lora):
    model, tokenizer = tiny
    data, held_out = conversations(10), conversations(3)
    extra = {"lora": True, "lora_r": 4, "lora_dropout": 0.2, "learning_rate": 1e-2} if lora else {}

    whole = SFTTrainer(config(tmp_path, "whole", **extra), copy.deepcopy(model), tokenizer, data, held_out)
    whole.train()

    # Killed after step 5 was logged: the newest checkpoint is step 4, so step 5 is done twice.
    broken = config(tmp_path, "broken", **extra)
    with pytest.raises(Killed):
        SFTTrainer(broken, copy.deepcopy(model), tokenizer, data, held_out, on_log=kill_at(5)).train()
    run = tmp_path / "broken"
    assert [step for step, _ in curve(run, "loss")] == [1, 2, 3, 4, 5]
    # Debris a crash could leave: a half-written checkpoint directory (no state file) and a temporary one.
    (run / "checkpoint-6" / "model").mkdir(parents=True)
    (run / ".checkpoint-6.tmp-12345").mkdir()

    resumed = SFTTrainer(
        config(tmp_path, "broken", resume=True, **extra), copy.deepcopy(model), tokenizer, data, held_out
    )
    result = resumed.train()
    assert result.step == 7
    assert not (run / ".checkpoint-6.tmp-12345").exists()

    for key in ("loss", "grad_norm", "lr", "eval_loss"):
        expected, got = curve(tmp_path / "whole", key), curve(run, key)
        assert [s for s, _ in got] == [s for s, _ in expected], key  # each step logged once, in order
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6, abs=1e-7), key
    for (name, a), b in zip(whole.model.named_parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)


def test_resume_refuses_a_different_data_order(tiny, tmp_path):
    model, tokenizer = tiny
    data = conversations(10)
    SFTTrainer(
        config(tmp_path, "run", max_steps=2, bf16=False), copy.deepcopy(model), tokenizer, data
    ).train()
    assert (tmp_path / "run" / "checkpoint-2" / STATE_FILE).is_file()
    changed = config(tmp_path, "run", max_steps=4, bf16=False, batch_sequences=2, resume=True)
    with pytest.raises(SFTConfigError, match=r"batch_sequences: 3 -> 2"):
        SFTTrainer(changed, copy.deepcopy(model), tokenizer, data).train()
    other_data = config(tmp_path, "run", max_steps=4, bf16=False, resume=True)
    with pytest.raises(SFTConfigError, match="data: "):
        SFTTrainer(other_data, copy.deepcopy(model), tokenizer, conversations(11)).train()
    # Same settings, more steps: the run simply continues.
    more = SFTTrainer(other_data, copy.deepcopy(model), tokenizer, data)
    assert more.train().step == 4
    assert [s for s, _ in curve(tmp_path / "run", "loss")] == [1, 2, 3, 4]


def test_resume_without_a_checkpoint_starts_over(tiny, tmp_path):
    model, tokenizer = tiny
    data = conversations(10)
    with pytest.raises(Killed):  # killed before the first checkpoint
        SFTTrainer(
            config(tmp_path, "run", save_every=5, bf16=False),
            copy.deepcopy(model),
            tokenizer,
            data,
            on_log=kill_at(2),
        ).train()
    SFTTrainer(
        config(tmp_path, "run", max_steps=2, resume=True, bf16=False), copy.deepcopy(model), tokenizer, data
    ).train()
    assert [s for s, _ in curve(tmp_path / "run", "loss")] == [1, 2]
