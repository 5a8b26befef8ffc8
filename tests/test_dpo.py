"""DPO on the tiny model: the loss by hand, the first step at log 2, learning a preference, the LoRA reference."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from chatforge import models
from chatforge.data.comparisons import Comparison, Response
from chatforge.train import losses
from chatforge.train.dpo import DPOConfig, DPOTrainer, encode_reply

WORDS = ["cats", "dogs", "rain", "tea", "code", "maps", "owls", "jazz"]


def comparisons():
    return [
        Comparison(id=f"c{i}", context=[{"role": "user", "content": f"Do you like {w}?"}],
                   responses=[Response("Yes, I do."), Response("No."), Response("Maybe later.")], ranks=[1, 3, 2])
        for i, w in enumerate(WORDS)
    ]


def test_dpo_loss_hand_value():
    # z = 0.1 * ((-4 + 5) - (-6 + 5)) = 0.2; -log sigmoid(0.2) = log(1 + e^-0.2) = 0.5981389
    loss, _, _ = losses.dpo_loss(torch.tensor([-4.0]), torch.tensor([-6.0]), torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.1)
    assert float(loss) == pytest.approx(0.5981389, abs=1e-6)


def test_reply_tokens_end_with_end_of_turn():
    _, tokenizer = models.build_tiny(seed=0)
    ids, start = encode_reply(tokenizer, comparisons()[0].context, "Yes, I do.", 1024)
    assert tokenizer.decode(ids[start:]) == "Yes, I do.<|im_end|>"


@pytest.mark.parametrize("lora", [False, True])
def test_dpo_learns_the_preference(tmp_path, lora):
    model, tokenizer = models.build_tiny(seed=0)
    seen = []
    config = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=6, batch_pairs=8, beta=0.5, lora=lora, lora_r=4,
                       learning_rate=3e-3 if lora else 1e-3, progress=False, tensorboard=False)
    trainer = DPOTrainer(config, model, tokenizer, comparisons(), on_log=seen.append)
    assert len(trainer.pairs) == 8 * 3  # C(3, 2) ordered pairs per ranking
    result = trainer.train()
    assert seen[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at the first step
    assert seen[-1]["loss"] < seen[0]["loss"] - 0.1
    assert (result.final_dir / "config.json").is_file()
    if lora:  # the reference really is the adapter-free model
        with torch.no_grad(), trainer.model.disable_adapter():
            again = trainer._reference_logprobs()
        torch.testing.assert_close(again, trainer.reference, atol=1e-5, rtol=0)


def test_resume_continues_exactly(tmp_path):
    """A run stopped after 2 steps and resumed to 4 logs the same steps, and ends with the same weights, as one
    run of 4; the reference log-probs come from the checkpoint (the initial policy's), not the resumed weights."""
    base, tokenizer = models.build_tiny(seed=0)

    def trainer(name, steps):
        config = DPOConfig(output_dir=str(tmp_path / name), max_steps=steps, batch_pairs=4, learning_rate=1e-3,
                           save_every=1, bf16=False, progress=False, tensorboard=False)
        return DPOTrainer(config, copy.deepcopy(base), tokenizer, comparisons())

    straight = trainer("a", 4)
    straight.train()
    trainer("b", 2).train()
    resumed = trainer("b", 4)
    resumed.train(resume=True)

    def records(name):
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    a, b = records("a"), records("b")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for x, y in zip(a, b, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6)
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="cannot resume"):  # another data order would not continue the run
        DPOTrainer(
            DPOConfig(output_dir=str(tmp_path / "b"), max_steps=5, batch_pairs=8, save_every=1, bf16=False,
                      progress=False, tensorboard=False),
            copy.deepcopy(base), tokenizer, comparisons(),
        ).train(resume=True)
