"""SFTTrainer on the tiny model: accumulation, learning, LoRA, the run directory, config errors and the CLI."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import random

import pytest
import torch

from chatforge import chat, models
from chatforge.train import SFTConfig, SFTTrainer, sft
from chatforge.train.sft import SFTConfigError, SFTDataError


def arithmetic(n: int, seed: int = 0) -> list[chat.Conversation]:
    """Short conversations of varied length (so micro-batches hold different token counts)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        more = " Adding is easy." * rng.randint(0, 3)
        messages = [
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"{a + b}.{more}"},
        ]
        if i % 3 == 0:
            messages += [
                {"role": "user", "content": "And doubled?"},
                {"role": "assistant", "content": f"{2 * (a + b)}."},
            ]
        out.append(chat.Conversation.from_messages(messages, id=f"arith-{i}"))
    return out


def quick(tmp_path, name: str = "run", **overrides) -> SFTConfig:
    values = dict(
        output_dir=str(tmp_path / name),
        learning_rate=1e-3,
        max_steps=3,
        batch_sequences=4,
        max_seq_len=256,
        warmup_steps=0,
        bf16=False,
        progress=False,
        tensorboard=False,
    )
    values.update(overrides)
    return SFTConfig(**values)


def losses(output_dir) -> list[float]:
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"]


def record_gradients(trainer: SFTTrainer) -> list[list[torch.Tensor]]:
    """Capture the gradient the optimizer is about to apply, at every step."""
    seen: list[list[torch.Tensor]] = []
    trainer.optimizer.register_step_pre_hook(
        lambda *_: seen.append([p.grad.clone() for p in trainer.trainable])
    )
    return seen


def test_gradient_accumulation_matches_one_big_batch(tiny, tmp_path):
    model, tokenizer = tiny
    data = arithmetic(12)
    big = SFTTrainer(quick(tmp_path, "big", batch_sequences=4), copy.deepcopy(model), tokenizer, data)
    big_grads = record_gradients(big)
    big.train()
    halves = SFTTrainer(
        quick(tmp_path, "halves", batch_sequences=2, grad_accum=2), copy.deepcopy(model), tokenizer, data
    )
    halves_grads = record_gradients(halves)
    halves.train()
    assert losses(tmp_path / "big") == pytest.approx(losses(tmp_path / "halves"), rel=1e-6)
    # The first step starts from the same weights, so its gradients must agree to float32 rounding. (Later
    # weights may differ by a few lr where a gradient is ~0: Adam's first update is about lr * sign(gradient).)
    for a, b in zip(big_grads[0], halves_grads[0], strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)
    # The micro-batches really differed in size, so a per-micro-batch mean would not have matched.
    records = [json.loads(line) for line in (tmp_path / "big" / "metrics.jsonl").read_text().splitlines()]
    assert len({r["loss_tokens"] for r in records if r["kind"] == "train"}) > 1
    halves_records = [
        json.loads(line) for line in (tmp_path / "halves" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["grad_norm"] for r in records] == pytest.approx(
        [r["grad_norm"] for r in halves_records], rel=1e-5
    )


def test_loss_goes_down_on_a_tiny_overfit_set(tiny, tmp_path):
    model, tokenizer = tiny
    data = arithmetic(6, seed=1)
    config = quick(
        tmp_path, max_steps=25, batch_sequences=6, learning_rate=3e-3, lr_schedule="constant", bf16="auto"
    )
    trainer = SFTTrainer(config, copy.deepcopy(model), tokenizer, data, data[:2])
    result = trainer.train()
    curve = losses(tmp_path / "run")
    assert len(curve) == 25
    assert curve[-1] < 0.5 * curve[0], curve
    assert result.eval_loss is not None and result.eval_loss < 0.5 * curve[0]
    # The final model is a plain Hugging Face checkpoint with the chat template, and it learned the data.
    reloaded, reloaded_tokenizer = models.load_model(str(result.final_dir))
    assert reloaded_tokenizer.chat_template == tokenizer.chat_template
    for (name, a), b in zip(trainer.model.named_parameters(), reloaded.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_metrics_and_run_directory(tiny, tmp_path):
    model, tokenizer = tiny
    data = arithmetic(12)
    config = quick(tmp_path, max_steps=4, eval_every=2, save_every=1, save_limit=2)
    seen = []
    trainer = SFTTrainer(config, copy.deepcopy(model), tokenizer, data, data[:3], on_log=seen.append)
    result = trainer.train()
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records == seen
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert set(train[0]) >= {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed", "epoch"}
    assert [r["step"] for r in records if r["kind"] == "eval"] == [2, 4]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]  # save_limit
    assert (
        result.checkpoint_dir == run / "checkpoint-4"
        and (result.checkpoint_dir / "model" / "config.json").is_file()
    )
    assert (run / "final" / "chat_template.jinja").is_file() or "chat_template" in (
        run / "final" / "tokenizer_config.json"
    ).read_text()
    info = json.loads((run / "run.json").read_text())
    assert info["train_data"]["conversations"] == 12 and info["config"]["max_steps"] == 4
    # A second run into the same directory must say what to do instead of silently mixing runs.
    with pytest.raises(FileExistsError, match="resume it"):
        SFTTrainer(config, copy.deepcopy(model), tokenizer, data).train()
    again = SFTTrainer(quick(tmp_path, max_steps=1, overwrite=True), copy.deepcopy(model), tokenizer, data)
    again.train()
    assert len(losses(run)) == 1 and sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]


def test_truncation_is_reported(tiny, tmp_path):
    model, tokenizer = tiny
    data = [
        *arithmetic(4),
        chat.Conversation.from_messages(
            [{"role": "user", "content": "Count."}, {"role": "assistant", "content": "one two three " * 80}]
        ),
    ]
    trainer = SFTTrainer(quick(tmp_path, max_seq_len=96, max_steps=1), copy.deepcopy(model), tokenizer, data)
    assert trainer.train_stats.truncated == 1 and trainer.train_stats.dropped == 0
    assert max(len(e) for e in trainer.train_examples) == 96


def test_lora_trains_only_adapters_and_keeps_the_reference(tiny, tmp_path):
    model, tokenizer = tiny
    original = copy.deepcopy(model)
    data = arithmetic(8)
    config = quick(
        tmp_path,
        lora=True,
        lora_r=4,
        lora_target_modules=["q_proj", "v_proj", "down_proj"],
        learning_rate=1e-2,
    )
    trainer = SFTTrainer(config, copy.deepcopy(model), tokenizer, data)
    result = trainer.train()
    peft_model = trainer.model
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # Every base weight is bit-for-bit the original one.
    base_state = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in peft_model.state_dict().items()
        if "lora_" not in k
    }
    for name, tensor in original.state_dict().items():
        assert torch.equal(base_state[name], tensor), name
    assert any(
        p.abs().sum() > 0 for n, p in peft_model.named_parameters() if "lora_B" in n
    )  # B starts at zero
    ids = torch.tensor([tokenizer.encode("What is 2 plus 2? It is 4.")])
    with torch.no_grad():
        reference = original(ids).logits
        with peft_model.disable_adapter():
            disabled = peft_model(input_ids=ids).logits
        adapted = peft_model(input_ids=ids).logits
        merged, _ = models.load_model(str(result.final_dir))
        merged_logits = merged(ids).logits
    torch.testing.assert_close(disabled, reference)
    assert not torch.allclose(adapted, reference)
    torch.testing.assert_close(merged_logits, adapted, atol=1e-4, rtol=1e-4)
    assert result.adapter_dir is not None and (result.adapter_dir / "adapter_config.json").is_file()


# ------------------------------------------------------------------------------------------------------------------
# Bad configurations and data
# ------------------------------------------------------------------------------------------------------------------


def test_bad_config_lists_every_problem():
    with pytest.raises(SFTConfigError) as err:
        SFTConfig(
            output_dir="x", learning_rate=-1, grad_accum=0, batch_tokens=100, max_seq_len=512, bf16="maybe"
        )
    message = str(err.value)
    for expected in (
        "learning_rate must be > 0",
        "grad_accum must be >= 1",
        "batch_tokens (100) must be at least max_seq_len (512)",
        "bf16 must be",
    ):
        assert expected in message
    with pytest.raises(SFTConfigError, match="either batch_tokens or batch_sequences"):
        SFTConfig(output_dir="x", batch_tokens=4096, batch_sequences=4)
    with pytest.raises(SFTConfigError, match="resume and overwrite"):
        SFTConfig(output_dir="x", resume=True, overwrite=True)
    assert SFTConfig(output_dir="x").batch_tokens == sft.DEFAULT_BATCH_TOKENS


def test_config_from_dict_and_yaml(tmp_path):
    with pytest.raises(
        SFTConfigError, match="unknown key 'learning_rat' \\(did you mean 'learning_rate'\\?\\)"
    ):
        SFTConfig.from_dict({"output_dir": "x", "learning_rat": 1e-4})
    with pytest.raises(SFTConfigError, match="learning_rate: .*number"):
        SFTConfig.from_dict({"output_dir": "x", "learning_rate": "fast"})
    with pytest.raises(SFTConfigError, match="output_dir: missing"):
        SFTConfig.from_dict({})
    with pytest.raises(SFTConfigError, match="max_steps must be >= 1"):
        SFTConfig.from_dict({"output_dir": "x", "max_steps": 0})
    path = tmp_path / "sft.yaml"
    path.write_text(
        "output_dir: out\nlearning_rate: 1e-4\nlora: true\nlora_target_modules: [q_proj, v_proj]\n"
    )
    config = SFTConfig.from_yaml(path)  # YAML reads 1e-4 as a string; it becomes a number
    assert config.learning_rate == 1e-4 and config.lora and config.lora_target_modules == ["q_proj", "v_proj"]
    path.write_text("- just a list\n")
    with pytest.raises(SFTConfigError, match="must hold a mapping"):
        SFTConfig.from_yaml(path)


def test_trainer_rejects_unusable_setups(tiny, tmp_path):
    model, tokenizer = tiny
    data = arithmetic(4)
    with pytest.raises(chat.ConversationError, match="ends with a user message"):
        SFTTrainer(
            quick(tmp_path),
            model,
            tokenizer,
            [chat.Conversation.from_messages([{"role": "user", "content": "hi"}])],
        )
    with pytest.raises(SFTDataError, match="fewer than one optimizer step"):
        SFTTrainer(quick(tmp_path, batch_sequences=2, grad_accum=4), model, tokenizer, data)
    with pytest.raises(SFTConfigError, match="must be float32"):
        SFTTrainer(quick(tmp_path), copy.deepcopy(model).to(torch.bfloat16), tokenizer, data)


# ------------------------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------------------------


def write_jsonl(path, conversations) -> None:
    path.write_text("".join(json.dumps({"messages": c.to_dicts()}) + "\n" for c in conversations))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chatforge")
    sft.register_cli(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_flags_override_the_yaml(tmp_path):
    (tmp_path / "sft.yaml").write_text(
        "output_dir: from-yaml\nlearning_rate: 1e-4\nmax_steps: 50\nlora: true\n"
    )
    args = parse(
        [
            "sft",
            "--config",
            str(tmp_path / "sft.yaml"),
            "--base",
            "tiny",
            "--data",
            "d.jsonl",
            "--out",
            "o",
            "--max-steps",
            "7",
            "--no-lora",
            "--bf16",
            "off",
            "--lora-target-modules",
            "q_proj,k_proj",
        ]
    )
    config = sft.config_from_args(args)
    assert (config.output_dir, config.max_steps, config.learning_rate, config.lora, config.bf16) == (
        "o",
        7,
        1e-4,
        False,
        False,
    )
    assert (
        config.base_model == "tiny"
        and config.data == "d.jsonl"
        and config.lora_target_modules == ["q_proj", "k_proj"]
    )
    assert args.func == sft.run_command  # (a bound method: equal, not the same object)


def test_cli_trains_from_a_jsonl_file(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    write_jsonl(data, arithmetic(8))
    code = sft.main(
        [
            "--base",
            "tiny",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--max-steps",
            "2",
            "--batch-sequences",
            "4",
            "--eval-fraction",
            "0.25",
            "--no-progress",
            "--no-tensorboard",
            "--bf16",
            "off",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "done: 2 steps" in out and "eval loss" in out
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert (info["train_data"]["conversations"], info["eval_data"]["conversations"]) == (6, 2)
    assert (tmp_path / "out" / "final" / "config.json").is_file()


def test_cli_reports_bad_input_clearly(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
        + "\n{oops\n"
    )
    assert sft.main(["--base", "tiny", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:2: not valid JSON" in capsys.readouterr().err
    data.write_text(json.dumps({"messages": [{"role": "assistant", "content": "yo"}]}) + "\n")
    assert sft.main(["--base", "tiny", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:1: message 0" in capsys.readouterr().err
    assert sft.main(["--base", "tiny", "--out", str(tmp_path / "o")]) == 2
    assert "no training data" in capsys.readouterr().err
    assert sft.main(["--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "no model to fine-tune: give --base NAME" in capsys.readouterr().err
    assert sft.main(["--base", "tiny", "--data", str(data), "--out", str(tmp_path / "o"), "--lr", "-3"]) == 2
    assert "learning_rate must be > 0" in capsys.readouterr().err


def test_cli_mix_needs_the_data_package(tmp_path, capsys, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "chatforge.data" else real_find_spec(name, *a),
    )
    assert sft.main(["--base", "tiny", "--mix", "sharegpt=1.0", "--out", str(tmp_path / "o")]) == 2
    assert "--mix needs the chatforge.data package" in capsys.readouterr().err


def test_cli_trains_from_a_mix(tmp_path, capsys):
    data = tmp_path / "mine.jsonl"
    write_jsonl(data, arithmetic(8))
    out = tmp_path / "out"
    argv = [
        "--base",
        "tiny",
        "--mix",
        f"file:{data}=1",
        "--mix-size",
        "6",
        "--out",
        str(out),
        "--max-steps",
        "1",
    ]
    assert (
        sft.main([*argv, "--batch-sequences", "3", "--no-progress", "--no-tensorboard", "--bf16", "off"]) == 0
    )
    assert json.loads((out / "run.json").read_text())["train_data"]["conversations"] == 6
    assert sft.main(["--base", "tiny", "--mix", "nosuch=1", "--out", str(tmp_path / "o")]) == 2
    assert "unknown source 'nosuch'" in capsys.readouterr().err
