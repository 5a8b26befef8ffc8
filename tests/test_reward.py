"""Reward model: what is scored, the toy task it must learn, the saved checkpoint as transformers reads it,
normalisation, evaluation outputs, config and command line."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import random
import sys

import pytest
import torch

from chatforge import chat, models
from chatforge.data.comparisons import Comparison, Rater, Response, save_comparisons
from chatforge.train import reward
from chatforge.train.reward import (
    OFFSET_KEY,
    RewardConfig,
    RewardConfigError,
    RewardDataError,
    RewardModel,
    RewardTrainer,
)
from chatforge.train.reward import evaluation as rm_eval
from chatforge.train.reward import model as reward_model
from chatforge.train.reward import trainer as reward_trainer

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

# fmt: off
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "it", "ran", "to", "see", "what", "was", "over",
         "there", "by", "the", "old", "tree"]
TOPICS = ["cats", "rain", "trains", "tea", "maps", "music", "boats", "snow", "bread", "stars", "clocks", "birds"]
# fmt: on
RATERS = [Rater("alice", "human"), Rater("bob", "human"), Rater("judge-v1", "simulated")]


def toy_comparisons(n: int, seed: int) -> list[Comparison]:
    """The toy ranking task: of 4 random word salads, the one containing "great" is best; the rest tie."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        size = rng.randint(4, 9)
        texts: set[str] = set()
        while len(texts) < 4:
            texts.add(" ".join(rng.choice(WORDS) for _ in range(size)))
        responses = sorted(texts)
        good = rng.randrange(4)
        for k, text in enumerate(responses):  # as many words in each, so length says nothing about the rank
            words = text.split()
            words.insert(rng.randrange(len(words) + 1), "great" if k == good else rng.choice(WORDS))
            responses[k] = " ".join(words)
        topic = rng.choice(TOPICS)
        out.append(
            Comparison(
                f"toy-{seed}-{i}",
                [{"role": "user", "content": f"Tell me about {topic}."}],
                [Response(text, "toy-sampler") for text in responses],
                [1 if k == good else 2 for k in range(4)],
                rater=RATERS[i % len(RATERS)],
                category="weather" if topic in ("rain", "snow") else "other",
            )
        )
    return out


def config(tmp_path, name: str, **overrides) -> RewardConfig:
    values = dict(
        output_dir=str(tmp_path / name),
        learning_rate=1e-3,
        epochs=2,
        batch_prompts=8,
        max_seq_len=128,
        warmup_steps=2,
        bf16=False,
        plots=HAVE_MATPLOTLIB,
        progress=False,
        tensorboard=False,
    )
    values.update(overrides)
    return RewardConfig(**values)


@pytest.fixture(scope="module")
def base_rm():
    """A fresh one-label reward model on the tiny Llama (its score head seeded), and the RM tokenizer."""
    lm, tokenizer = models.build_tiny()
    return reward.reward_model_from_causal_lm(lm, tokenizer, seed=0)


@pytest.fixture(scope="module")
def trained(base_rm, tmp_path_factory):
    """The toy task trained once: (trainer, result, train comparisons, held-out comparisons)."""
    model, tokenizer = base_rm
    train, held_out = toy_comparisons(192, seed=1), toy_comparisons(30, seed=2)
    tmp = tmp_path_factory.mktemp("rm")
    trainer = RewardTrainer(
        config(tmp, "run", eval_every=8), copy.deepcopy(model), tokenizer, train, held_out
    )
    return trainer, trainer.train(), train, held_out


# ----------------------------------------------------------------------------------------------------------------
# What is scored
# ----------------------------------------------------------------------------------------------------------------


def test_pad_token_is_not_the_end_of_turn(smol_tokenizer):
    # SmolLM2 pads with <|im_end|>, its end-of-turn and eos token: transformers would then score the token before.
    assert smol_tokenizer.pad_token_id == smol_tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = reward.reward_pad_token_id(smol_tokenizer)
    assert pad == smol_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert pad not in chat.stop_token_ids(smol_tokenizer)
    prepared = reward.prepare_tokenizer(smol_tokenizer)
    assert prepared.pad_token == "<|endoftext|>" and prepared.padding_side == "right"
    assert smol_tokenizer.pad_token == "<|im_end|>"  # the SFT tokenizer itself is left alone
    assert reward.prepare_tokenizer(prepared) is prepared


def test_encoding_ends_at_the_end_of_turn_and_cuts_the_context_first(smol_tokenizer):
    tokenizer = reward.prepare_tokenizer(smol_tokenizer)
    messages = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
    ids, cut = reward.encode_for_reward(tokenizer, messages)
    text = tokenizer.decode(ids)
    assert text.endswith("Hello!<|im_end|>") and not cut  # not the template's newline after it
    assert ids == chat.encode_conversation(tokenizer, messages).input_ids[:-1]
    short, cut = reward.encode_for_reward(tokenizer, messages, max_seq_len=6)
    assert cut and short == ids[-6:]
    with pytest.raises(chat.ConversationError, match="last message must be from the assistant"):
        reward.encode_for_reward(tokenizer, messages[:1])


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


def test_learns_a_toy_ranking_task(trained):
    trainer, result, _, _ = trained
    assert result.eval_accuracy is not None and result.eval_accuracy > 0.95
    records = [json.loads(line) for line in (trainer.output_dir / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == list(range(1, result.step + 1))
    assert train_records[-1]["loss"] < train_records[0]["loss"] / 5
    assert {"loss", "accuracy", "pairs", "prompts", "lr", "grad_norm", "reward_mean", "reward_std"} <= set(
        train_records[0]
    )
    assert train_records[0]["pairs"] == 8 * 3  # 8 prompts, 3 strict pairs each (the three losers tie)
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [8, 16, 24, 32, 40, 48]  # 24 steps an epoch, 2 epochs
    run = json.loads((trainer.output_dir / "run.json").read_text())
    assert run["data"]["train_pairs"] == 192 * 3 and run["pad_token_id"] == 0


def test_saved_checkpoint_is_a_standard_hf_reward_model(trained):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    trainer, result, _, held_out = trained
    final = result.final_dir
    hf_model = AutoModelForSequenceClassification.from_pretrained(final).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(final)
    assert type(hf_model).__name__ == "LlamaForSequenceClassification" and hf_model.config.num_labels == 1
    assert hf_model.config.pad_token_id == hf_tokenizer.pad_token_id == 0

    # What another tool would do: render with the chat template, end at the end-of-turn marker, pad, forward.
    conversations = [c.conversation(k) for c in held_out[:4] for k in range(c.k)]
    texts = []
    for conversation in conversations:
        text = hf_tokenizer.apply_chat_template(conversation.to_dicts(), tokenize=False)
        texts.append(text[: text.rindex("<|im_end|>") + len("<|im_end|>")])
    batch = hf_tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    assert batch["attention_mask"].sum() < batch["attention_mask"].numel()  # the batch really is padded
    with torch.no_grad():
        hf_scores = hf_model(**batch).logits[:, 0]

    scorer = RewardModel.load(trainer.output_dir)  # a run directory means its final/
    assert scorer.encode(conversations[0]) == [int(i) for i in batch["input_ids"][0] if i != 0]
    raw = scorer.score(conversations, batch_size=5, normalize=False)
    torch.testing.assert_close(torch.tensor(raw), hf_scores, rtol=1e-5, atol=1e-5)
    normalised = scorer.score(conversations, batch_size=3)
    offset = hf_model.config.to_dict()[OFFSET_KEY]
    assert offset == pytest.approx(result.offset)
    torch.testing.assert_close(torch.tensor(normalised), hf_scores - offset, rtol=1e-5, atol=1e-5)
    # (context, reply) pairs score the same as whole conversations.
    pair = (list(conversations[0].messages[:-1]), conversations[0].messages[-1].content)
    assert scorer.score([pair]) == pytest.approx(normalised[:1], abs=1e-5)


def test_normalisation_puts_the_references_at_zero(trained, base_rm, tmp_path):
    _, result, train, _ = trained
    scorer = RewardModel.load(result.final_dir)
    top = [c.conversation(k) for c in train for k in c.best()]
    scores = scorer.score(top)
    assert sum(scores) / len(scores) == pytest.approx(0.0, abs=1e-4)
    assert result.offset != pytest.approx(0.0, abs=1e-2)  # there was something to remove
    saved = json.loads((result.final_dir / "config.json").read_text())
    assert saved["chatforge_reward_reference"] == "top-ranked training responses"
    assert saved["chatforge_reward_reference_count"] == len(top)
    assert saved["chatforge_reward_max_seq_len"] == 128
    # The checkpoint's own config (hard-linked weights, separate config) stays unnormalised.
    checkpoint_config = json.loads((result.checkpoint_dir / "model" / "config.json").read_text())
    assert OFFSET_KEY not in checkpoint_config

    # Given references (e.g. the SFT demonstrations) instead.
    model, tokenizer = base_rm
    demos = [
        chat.Conversation.from_messages(
            [
                {"role": "user", "content": f"Tell me about {t}."},
                {"role": "assistant", "content": f"{t} are great"},
            ]
        )
        for t in ("cats", "maps", "boats")
    ]
    short = RewardTrainer(
        config(tmp_path, "refs", max_steps=1, plots=False),
        copy.deepcopy(model),
        tokenizer,
        train[:8],
        references=demos,
        reference_name="demos.jsonl",
    ).train()
    scores = RewardModel.load(short.final_dir).score(demos)
    assert sum(scores) / 3 == pytest.approx(0.0, abs=1e-5)
    assert (
        json.loads((short.final_dir / "config.json").read_text())["chatforge_reward_reference"]
        == "demos.jsonl"
    )


def test_evaluation_report_and_plots(trained):
    trainer, result, _, held_out = trained
    report = json.loads((trainer.output_dir / "rm_eval.json").read_text())
    assert report == result.eval_report
    assert report["comparisons"] == 30 and report["pairs"] == 90
    assert report["accuracy"] == pytest.approx(result.eval_accuracy)
    assert set(report["by_rater"]) == {"alice", "bob", "judge-v1"}
    assert report["by_rater"]["judge-v1"]["kind"] == "simulated"
    assert sum(r["pairs"] for r in report["by_rater"].values()) == 90
    assert set(report["by_category"]) == {c.category for c in held_out}
    bins = report["calibration"]["bins"]
    assert len(bins) == 10 and sum(b["count"] for b in bins) == 2 * 90  # each pair in both orders
    assert 0 <= report["calibration"]["ece"] <= 1
    length = report["length"]
    assert length["pairs_with_different_lengths"] == 0  # the responses to a prompt are equally long
    assert length["raters_prefer_longer"] is None and -1 <= length["correlation"] <= 1
    assert report["reward"]["top_ranked_mean"] > report["reward"]["mean"]
    if HAVE_MATPLOTLIB:
        assert report["plots"] == {
            "calibration": "calibration.png",
            "reward_vs_length": "reward_vs_length.png",
        }
        for name in report["plots"].values():
            assert (trainer.output_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluation_by_hand_on_a_fixed_scorer(smol_tokenizer):
    class Fixed:
        """Scores each reply by a table: the evaluation's arithmetic, without a model."""

        def __init__(self) -> None:
            self.tokenizer = smol_tokenizer
            # reply: (reward); "one two three" is 3 tokens, "four five" 2, and so on
            self.table = {"one": 2.0, "one two": 1.0, "one two three": 0.0, "four": 0.0, "four five": 3.0}

        def score(self, items, batch_size=16):
            return [self.table[item.messages[-1].content] for item in items]

    context = [{"role": "user", "content": "q"}]
    three = [Response("one"), Response("one two"), Response("one two three")]
    comparisons = [
        Comparison("1", context, three, [1, 2, 3], rater=Rater("ann")),
        Comparison(
            "2",
            context,
            [Response("four"), Response("four five")],
            [1, 2],
            rater=Rater("ben"),
            category="hard",
        ),
    ]
    report = rm_eval.evaluate_reward_model(Fixed(), comparisons)
    # Pairs (winner - loser reward): (one, one two) 1, (one, one two three) 2, (one two, one two three) 1: all
    # right; (four, four five) -3: wrong.
    assert report["pairs"] == 4 and report["accuracy"] == 0.75
    assert report["by_rater"]["ann"] == {"comparisons": 1, "pairs": 3, "accuracy": 1.0, "kind": "human"}
    assert report["by_rater"]["ben"]["accuracy"] == 0.0
    assert report["by_category"] == {
        "(none)": {"comparisons": 1, "pairs": 3, "accuracy": 1.0},
        "hard": {"comparisons": 1, "pairs": 1, "accuracy": 0.0},
    }
    # Loss as in training: prompt 1 averages its 3 pairs, prompt 2 has its one.
    expected = (
        (2 * math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-2))) / 3 + math.log(1 + math.exp(3))
    ) / 2
    assert report["loss"] == pytest.approx(expected)

    # Calibration: each pair in both orders; p = sigmoid(gap) observed 1, and 1 - p observed 0.
    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    gaps = [1.0, 2.0, 1.0, -3.0]
    gap_sum = sum(abs(sigmoid(g) - 1) + abs(1 - sigmoid(g) - 0) for g in gaps)
    # No two predictions that share a bin have different outcomes here, so ECE is the mean gap: 0.4024
    assert report["calibration"]["ece"] == pytest.approx(gap_sum / 8)
    assert report["calibration"]["ece"] == pytest.approx(0.4024, abs=1e-4)
    counts = [b["count"] for b in report["calibration"]["bins"]]
    assert counts == [1, 1, 2, 0, 0, 0, 0, 2, 1, 1]

    # Length: raters preferred the shorter reply in all 4 pairs; the RM did in 3 of them.
    length = report["length"]
    assert (
        length["pairs_with_different_lengths"],
        length["raters_prefer_longer"],
        length["rm_prefers_longer"],
    ) == (
        4,
        0.0,
        0.25,
    )
    # lengths 1, 2, 3, 1, 2 against rewards 2, 1, 0, 0, 3: covariance sum -0.8, sums of squares 2.8 and 6.8
    assert length["correlation"] == pytest.approx(-0.8 / math.sqrt(2.8 * 6.8))
    assert length["reward_per_100_tokens"] == pytest.approx(-0.8 / 2.8 * 100)
    assert report["reward"]["mean"] == pytest.approx(1.2) and report["reward"]["top_ranked_mean"] == 1.0


def test_plots_need_matplotlib_and_say_how_to_get_it(base_rm, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(rm_eval.PlottingUnavailable, match="pip install matplotlib"):
        rm_eval.require_matplotlib()
    model, tokenizer = base_rm
    data = toy_comparisons(10, seed=3)
    # The trainer checks before training, not after.
    with pytest.raises(rm_eval.PlottingUnavailable, match="pip install matplotlib"):
        RewardTrainer(config(tmp_path, "x", plots=True), copy.deepcopy(model), tokenizer, data[:8], data[8:])


def test_lora_trains_adapters_and_the_head(base_rm, tmp_path):
    model, tokenizer = base_rm
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = RewardTrainer(
        config(tmp_path, "lora", lora=True, lora_r=4, max_steps=3, plots=False),
        copy.deepcopy(model),
        tokenizer,
        toy_comparisons(24, seed=4),
    )
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or "score" in name for name in trainable)
    assert any("score" in name for name in trainable)
    result = trainer.train()
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    scorer = RewardModel.load(result.final_dir)  # merged: a plain sequence-classification checkpoint
    assert type(scorer.model).__name__ == "LlamaForSequenceClassification"
    assert not torch.equal(scorer.model.score.weight, before["score.weight"])
    merged = dict(scorer.model.named_parameters())
    assert not torch.allclose(
        merged["model.layers.0.self_attn.q_proj.weight"], before["model.layers.0.self_attn.q_proj.weight"]
    )
    torch.testing.assert_close(merged["model.embed_tokens.weight"], before["model.embed_tokens.weight"])


@pytest.mark.parametrize("lora", [False, True])
def test_packed_training_scores_equal_the_models_own_forward(base_rm, tmp_path, lora):
    """The trainer scores a micro-batch's responses packed without padding; each must equal what the model's own
    (padded) forward gives that sequence alone, with responses of very different lengths and with LoRA."""
    model, tokenizer = base_rm
    comparisons = toy_comparisons(6, seed=7)
    long = " ".join(["tell me more about the weather today"] * 12)
    comparisons[0] = Comparison(comparisons[0].id, comparisons[0].context,
                                [*comparisons[0].responses[:3], Response(long, "toy-sampler")], comparisons[0].ranks)
    trainer = RewardTrainer(config(tmp_path, "packed", lora=lora, lora_r=4, plots=False), copy.deepcopy(model),
                            tokenizer, comparisons)
    if lora:
        with torch.no_grad():
            for name, p in trainer.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    trainer.model.eval()
    batch = reward_trainer.collate(trainer.train_encoded, range(len(trainer.train_encoded)), trainer.pad_id, trainer.device)
    sequences = [seq for item in trainer.train_encoded for seq in item.sequences]
    assert max(map(len, sequences)) > 2 * min(map(len, sequences))  # a demonstration among short samples
    assert batch.input_ids.numel() < len(sequences) * max(map(len, sequences))  # packed: less than padded
    with torch.no_grad():
        packed = batch.scores(reward_trainer.PackedScores(trainer.model))
        alone = torch.cat([reward_model.head_scores(trainer.model, torch.tensor([seq]), torch.ones(1, len(seq), dtype=torch.long))
                           for seq in sequences])
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Configuration and data
# ----------------------------------------------------------------------------------------------------------------


def test_bad_config_lists_every_problem():
    with pytest.raises(RewardConfigError) as info:
        RewardConfig(
            output_dir="",
            learning_rate=0,
            batch_prompts=0,
            margin=-1,
            eval_fraction=1.0,
            resume=True,
            overwrite=True,
        )
    message = str(info.value)
    for problem in (
        "output_dir must be a non-empty path",
        "learning_rate must be > 0.0",
        "batch_prompts must be >= 1",
        "margin must be >= 0.0",
        "eval_fraction must be below 1",
        "resume and overwrite contradict each other",
    ):
        assert problem in message


def test_config_from_dict_and_yaml(tmp_path):
    with pytest.raises(
        RewardConfigError, match=r"unknown key 'learning_rat' \(did you mean 'learning_rate'\?\)"
    ):
        RewardConfig.from_dict({"output_dir": "x", "learning_rat": 1e-5})
    with pytest.raises(RewardConfigError, match=r"batch_prompts: .*got 'many'"):
        RewardConfig.from_dict({"output_dir": "x", "batch_prompts": "many"})
    path = tmp_path / "rm.yaml"
    path.write_text("output_dir: runs/rm\nlearning_rate: 1e-5\nmargin: 0.5\nlora: true\n")
    loaded = RewardConfig.from_yaml(path, max_steps=3)
    assert (loaded.learning_rate, loaded.margin, loaded.lora, loaded.max_steps) == (1e-5, 0.5, True, 3)


def test_trainer_rejects_unusable_setups(base_rm, tmp_path):
    model, tokenizer = base_rm
    lm, _ = models.build_tiny()
    data = toy_comparisons(8, seed=5)
    with pytest.raises(
        RewardConfigError, match="one-label \\*ForSequenceClassification model, got LlamaForCausalLM"
    ):
        RewardTrainer(config(tmp_path, "a"), lm, tokenizer, data)
    with pytest.raises(RewardDataError, match="no training comparisons"):
        RewardTrainer(config(tmp_path, "b"), copy.deepcopy(model), tokenizer, [])
    with pytest.raises(RewardDataError, match="fewer micro-batches than one optimizer step"):
        RewardTrainer(config(tmp_path, "c", grad_accum=4), copy.deepcopy(model), tokenizer, data)
    RewardTrainer(
        config(tmp_path, "d", max_steps=1, plots=False), copy.deepcopy(model), tokenizer, data
    ).train()
    with pytest.raises(FileExistsError, match="already holds a reward-model run"):
        RewardTrainer(
            config(tmp_path, "d", max_steps=1, plots=False), copy.deepcopy(model), tokenizer, data
        ).train()


def test_held_out_split_keeps_each_prompt_on_one_side():
    context_a = [{"role": "user", "content": "A?"}]
    data = [
        Comparison(
            f"{i}",
            context_a if i < 6 else [{"role": "user", "content": f"Q{i}?"}],
            [Response("yes"), Response(f"no {i}")],
            [1, 2],
        )
        for i in range(20)
    ]
    train, held = reward.split_by_context(data, 0.2, seed=0)
    assert len(train) + len(held) == 20 and held
    a_sides = {("train" if c in train else "held") for c in data[:6]}
    assert len(a_sides) == 1  # all six comparisons of prompt A went the same way
    with pytest.raises(RewardDataError, match="leaves no training data"):
        reward.split_by_context(data[:6], 0.5, seed=0)


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def test_cli_trains_from_an_sft_run_directory(tmp_path, capsys):
    lm, tokenizer = models.build_tiny()
    models.save_checkpoint(lm, tokenizer, tmp_path / "sft" / "final")  # what `chatforge sft` leaves
    data = tmp_path / "cmp.jsonl"
    save_comparisons(data, toy_comparisons(20, seed=6))
    held = tmp_path / "held.jsonl"
    save_comparisons(held, toy_comparisons(4, seed=7))
    code = reward.main(
        [
            "--sft", str(tmp_path / "sft"), "--comparisons", str(data), "--eval-comparisons", str(held),
            "--out", str(tmp_path / "rm"), "--max-steps", "2", "--batch-prompts", "4", "--lr", "1e-3",
            "--no-progress", "--no-tensorboard", "--no-plots", "--bf16", "off",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "held-out pairwise accuracy" in out and "reward model:" in out
    assert RewardModel.load(tmp_path / "rm").score([("Hi", "Hello")])

    import argparse

    parser = argparse.ArgumentParser(prog="chatforge")
    reward.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "rm-eval",
            "--rm",
            str(tmp_path / "rm"),
            "--comparisons",
            str(held),
            "--out",
            str(tmp_path / "ev"),
            "--no-plots",
        ]
    )
    assert args.func(args) == 0
    assert json.loads((tmp_path / "ev" / "rm_eval.json").read_text())["pairs"] == 4 * 3


def test_cli_reports_bad_input_clearly(tmp_path, capsys):
    bad = tmp_path / "cmp.jsonl"
    bad.write_text(
        '{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"context": "q", "responses": ["a"], "ranks": [1]}\n'
    )
    code = reward.main(["--sft", "tiny", "--comparisons", str(bad), "--out", str(tmp_path / "rm")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{bad}:2:" in err and "has 1 responses" in err
    assert reward.main(["--comparisons", str(bad), "--out", str(tmp_path / "rm")]) == 2
    assert "no model to start from" in capsys.readouterr().err


def test_scores_follow_the_weights_and_equal_transformers_forward(base_rm):
    model, tokenizer = base_rm
    model = copy.deepcopy(model).eval()
    scorer = RewardModel(model, tokenizer)
    items = [("Name a colour.", "Blue."), ("What is 2 + 2?", "It is four, as two and two make four."),
             ("Hi", "Hello! How can I help you today?")]

    def transformers_scores() -> torch.Tensor:
        sequences = [scorer.encode(item) for item in items]
        with torch.no_grad():
            return torch.stack([model(input_ids=torch.tensor([s])).logits[0, 0] for s in sequences])

    before = scorer.score(items, batch_size=2, normalize=False)
    assert scorer.lean_trunk() is not None  # the tiny Llama is served by the lean trunk
    torch.testing.assert_close(torch.tensor(before), transformers_scores(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the model moves on (as during training): the scores must follow
        model.model.layers[0].mlp.down_proj.weight.mul_(3.0)
    after = scorer.score(items, batch_size=2, normalize=False)
    torch.testing.assert_close(torch.tensor(after), transformers_scores(), rtol=1e-5, atol=1e-5)
    assert after != pytest.approx(before, abs=1e-4)
