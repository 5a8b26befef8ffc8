"""PPO on the tiny model: the packed forward, the LoRA reference, a toy task, resumption."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json

import pytest
import torch

from chatforge import chat, models
from chatforge.generation import SamplingParams, TorchEngine
from chatforge.train import SFTConfig, SFTTrainer, rollout
from chatforge.train.ppo import PPOConfig, PPOConfigError, PPOTrainer
from chatforge.train.ppo import cli as ppo_cli

WORDS = ["cats", "dogs", "rain", "tea", "code", "maps", "owls", "jazz"]
PROMPTS = [[{"role": "user", "content": f"Do you like {w}?"}] for w in WORDS]


def says_yes(conversations):
    return [1.0 if "yes" in c[-1].content.lower() else 0.0 for c in conversations]


def config(tmp_path, **overrides) -> PPOConfig:
    values = dict(
        output_dir=str(tmp_path / "ppo"), steps=3, batch_size=4, mini_batch_size=2, ppo_epochs=2,
        learning_rate=1e-3, max_new_tokens=5, progress=False, tensorboard=False,
        bf16=False,  # float32 so the exactness checks below hold on every CPU (bf16 is the "auto" default)
    )
    values.update(overrides)
    return PPOConfig(**values)


def test_packed_forward_matches_sampling_logprobs():
    model, tokenizer = models.build_tiny(seed=0)
    engine = TorchEngine(model, tokenizer, decode_dtype="float32")  # bf16 decoding is close, not equal
    contexts = [rollout.as_context(p) for p in PROMPTS[:3]]
    rolls = rollout.generate(engine, contexts, SamplingParams(max_new_tokens=7, temperature=1.0, seed=1))
    packed = rollout.pack([(r.prompt_ids + r.response_ids, len(r.prompt_ids)) for r in rolls], 0)
    with torch.no_grad():
        out = rollout.sequence_forward(model, packed)
    sampled = torch.tensor([lp for r in rolls for lp in r.sample_logprobs])
    assert packed.lengths == [len(r.response_ids) for r in rolls]
    torch.testing.assert_close(out.logprobs, sampled, atol=1e-4, rtol=0)


def test_lora_reference_is_the_initial_policy(tmp_path):
    model, tokenizer = models.build_tiny(seed=0)
    initial = copy.deepcopy(model)
    trainer = PPOTrainer(config(tmp_path, lora=True, lora_r=4), model, tokenizer, says_yes, PROMPTS)
    with torch.no_grad():  # move the adapters away from zero: the policy now differs from the initial model
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    rolls = rollout.generate(trainer.engine, trainer.step_contexts(0), SamplingParams(max_new_tokens=6, temperature=1.0, seed=0))
    packed = trainer._pack(rolls)
    reference = trainer.reference_logprobs(rolls)
    with torch.no_grad():
        expected = rollout.sequence_forward(initial, packed, with_entropy=False).logprobs
        policy = rollout.sequence_forward(trainer.model, packed, with_entropy=False).logprobs
    torch.testing.assert_close(reference, expected, atol=1e-5, rtol=0)
    assert (policy - expected).abs().max() > 1e-2


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_full_finetuning_reference_through_the_lean_decoder_is_the_initial_policy(tmp_path, temperature):
    """Without LoRA the frozen copy is the reference, run through the lean decoder in float32: its log-probs must
    be the initial model's own (at the sampling temperature), whatever the policy has become, for rollouts of
    different lengths (left padded together)."""
    model, tokenizer = models.build_tiny(seed=0)
    initial = copy.deepcopy(model)
    trainer = PPOTrainer(config(tmp_path, temperature=temperature), model, tokenizer, says_yes, PROMPTS)
    assert trainer._reference_decoder is not None
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    rolls = rollout.generate(trainer.engine, trainer.step_contexts(0), SamplingParams(max_new_tokens=8, temperature=1.0, seed=1))
    rolls[0] = dataclasses.replace(rolls[0], response_ids=rolls[0].response_ids[:3])  # a shorter one, left padded
    assert len({len(r.prompt_ids) + len(r.response_ids) for r in rolls}) > 1
    packed = trainer._pack(rolls)
    with torch.no_grad():
        expected = rollout.sequence_forward(initial, packed, temperature=temperature, with_entropy=False).logprobs
        policy = rollout.sequence_forward(trainer.model, packed, temperature=temperature, with_entropy=False).logprobs
    torch.testing.assert_close(trainer.reference_logprobs(rolls), expected, atol=1e-4, rtol=0)
    assert (policy - expected).abs().max() > 1e-2


def test_first_ratio_is_one(tmp_path):
    model, tokenizer = models.build_tiny(seed=0)
    seen = []
    cfg = config(tmp_path, steps=1, ppo_epochs=1, mini_batch_size=4, learning_rate=1e-9)
    PPOTrainer(cfg, model, tokenizer, says_yes, PROMPTS, on_log=seen.append).train()
    # One minibatch of the whole batch before any update: ratio 1 exactly, so nothing is clipped.
    assert seen[0]["clip_fraction"] == 0.0
    assert seen[0]["approx_kl"] == pytest.approx(0.0, abs=1e-10)
    assert seen[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy is still the reference


@pytest.fixture(scope="module")
def yes_no_policy(tmp_path_factory):
    """The tiny model after a short SFT to answer "Yes." or "No." (half each)."""
    model, tokenizer = models.build_tiny(seed=0)
    conversations = [
        chat.Conversation.from_messages(
            [{"role": "user", "content": f"Do you like {w}?"}, {"role": "assistant", "content": "Yes." if i % 2 == 0 else "No."}]
        )
        for i, w in enumerate(WORDS * 2)
    ]
    sft = SFTConfig(output_dir=str(tmp_path_factory.mktemp("sft")), max_steps=30, learning_rate=3e-3, batch_sequences=8,
                    max_seq_len=64, warmup_steps=0, bf16=False, progress=False, tensorboard=False)
    SFTTrainer(sft, model, tokenizer, conversations).train()
    return model, tokenizer


def test_ppo_raises_reward_with_bounded_kl(tmp_path, yes_no_policy):
    model, tokenizer = yes_no_policy
    model = copy.deepcopy(model)
    cfg = config(tmp_path, steps=8, batch_size=8, mini_batch_size=4, max_new_tokens=6, kl_coef=0.05)
    result = PPOTrainer(cfg, model, tokenizer, says_yes, PROMPTS).train()
    records = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 8
    first = records[0]["reward"]  # the SFT policy: about half its answers say yes
    last = sum(r["reward"] for r in records[-3:]) / 3
    assert last > first + 0.3, [r["reward"] for r in records]
    assert max(r["kl"] for r in records) < 10.0
    for key in ("reward", "reward_total", "kl", "entropy", "clip_fraction", "value_loss", "explained_variance",
                "response_length", "tokens_per_s", "generation_share", "approx_kl", "policy_loss"):
        assert key in records[-1]
    assert (tmp_path / "ppo" / "reward_kl.png").is_file()
    assert (result.final_dir / "config.json").is_file() and (result.final_dir / "value_head.safetensors").is_file()


def test_resume_continues_exactly(tmp_path):
    base, tokenizer = models.build_tiny(seed=0)
    kwargs = dict(steps=3, adaptive_kl_target=0.5, kl_horizon=20, ptx_coef=0.5, ptx_batch_sequences=2, early_stop_kl=50.0)
    ptx = [chat.Conversation.from_messages([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}])] * 3

    straight = PPOTrainer(config(tmp_path / "a", **kwargs), copy.deepcopy(base), tokenizer, says_yes, PROMPTS, ptx)
    straight.train()
    PPOTrainer(config(tmp_path / "b", **{**kwargs, "steps": 2}), copy.deepcopy(base), tokenizer, says_yes, PROMPTS, ptx).train()
    resumed = PPOTrainer(config(tmp_path / "b", **kwargs), copy.deepcopy(base), tokenizer, says_yes, PROMPTS, ptx)
    resumed.train(resume=True)

    def records(path):
        return [json.loads(line) for line in (path / "ppo" / "metrics.jsonl").read_text().splitlines()]

    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    assert [r["step"] for r in b] == [1, 2, 3]
    for x, y in zip(a, b, strict=True):
        for key in ("reward", "kl", "kl_coef", "policy_loss", "value_loss", "ptx_loss"):
            assert x[key] == pytest.approx(y[key], abs=1e-6), key
    assert a[-1]["kl_coef"] != 0.05  # the adaptive controller moved it
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    torch.testing.assert_close(straight.value_head.weight, resumed.value_head.weight, atol=1e-6, rtol=0)


def test_config_problems_are_listed(tmp_path):
    with pytest.raises(PPOConfigError) as err:
        PPOConfig(output_dir=str(tmp_path), batch_size=2, mini_batch_size=4, lam=1.5, clip_range=0)
    text = str(err.value)
    assert "mini_batch_size" in text and "lam" in text and "clip_range" in text
    with pytest.raises(PPOConfigError, match="unknown key"):
        PPOConfig.from_dict({"output_dir": "x", "kl_coeff": 0.1})


@pytest.mark.parametrize(("old", "new"), [("kl_target", "adaptive_kl_target"), ("target_kl", "early_stop_kl")])
def test_renamed_keys_and_flags_are_refused_with_the_new_name(tmp_path, capsys, old, new):
    with pytest.raises(PPOConfigError, match=f"did you mean '{new}'"):
        PPOConfig.from_dict({"output_dir": "x", old: 0.5})
    (tmp_path / "ppo.yaml").write_text(f"output_dir: x\n{old}: 0.5\n")
    with pytest.raises(PPOConfigError, match=f"did you mean '{new}'"):
        PPOConfig.from_yaml(tmp_path / "ppo.yaml")
    old_flag, new_flag = "--" + old.replace("_", "-"), "--" + new.replace("_", "-")
    with pytest.raises(SystemExit):
        ppo_cli.main(["--out", str(tmp_path / "run"), old_flag, "0.5"])
    assert f"{old_flag} was renamed: did you mean {new_flag}?" in capsys.readouterr().err
    parser = argparse.ArgumentParser()
    ppo_cli.add_arguments(parser)
    assert getattr(parser.parse_args(["--out", "x", new_flag, "0.5"]), new) == 0.5
    assert old_flag not in parser.format_help()


def test_single_pass_step_equals_the_two_pass_step(tmp_path, monkeypatch):
    """One epoch over one minibatch reuses the training forward for the old log-probs and values; the update must
    be the one the separate no-grad forward gives."""
    weights = []
    for single in (True, False):
        model, tokenizer = models.build_tiny(seed=0)
        cfg = config(tmp_path / str(single), steps=2, ppo_epochs=1, mini_batch_size=4, entropy_coef=0.01)
        monkeypatch.setattr(PPOTrainer, "single_pass", property(lambda self, s=single: s))
        PPOTrainer(cfg, model, tokenizer, says_yes, PROMPTS).train()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    initial = torch.cat([p.detach().flatten() for p in models.build_tiny(seed=0)[0].parameters()])
    assert (weights[0] - initial).abs().max() > 1e-4  # the steps really moved the weights
    torch.testing.assert_close(weights[0], weights[1], atol=1e-5, rtol=1e-4)
