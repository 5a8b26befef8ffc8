"""The generation engine on the tiny model: batching, stops, streaming, logprobs, sampling."""

from __future__ import annotations

import pytest
import torch

from chatforge import chat
from chatforge.generation import (
    IncrementalDetokenizer,
    SamplingParams,
    TorchEngine,
    adjust_logits,
    create_engine,
    draw,
    sample_tokens,
)

GREEDY = SamplingParams(max_new_tokens=24, temperature=0)
QUESTIONS = ["Hi!", "Tell me a long story about a cat and a dog.", "2+2?", "Write a poem about the sea, please."]


# Every engine test runs on each decoder: the model's own forward pass, and the lean decoder in float32 (equal to
# it within float rounding) and in bfloat16 (the CPU default; logprobs within bf16 rounding).
DECODERS = {
    "transformers": ({"decoder": "transformers"}, {"abs": 1e-4}),
    "lean-float32": ({"decoder": "lean", "decode_dtype": "float32"}, {"abs": 1e-4}),
    "lean-bfloat16": ({"decoder": "lean", "decode_dtype": "bfloat16"}, {"abs": 0.05, "rel": 0.05}),
}


@pytest.fixture(scope="module", params=list(DECODERS))
def decoder(request):
    return DECODERS[request.param]


@pytest.fixture(scope="module")
def engine(tiny, decoder):
    model, tokenizer = tiny
    return TorchEngine(model, tokenizer, **decoder[0])


@pytest.fixture(scope="module")
def tolerance(decoder):
    return decoder[1]


@pytest.fixture(scope="module")
def prompts(tiny):
    return [chat.encode_prompt(tiny[1], [{"role": "user", "content": q}]) for q in QUESTIONS]


def test_batched_equals_unbatched_under_greedy(engine, prompts, tolerance):
    assert len({len(p) for p in prompts}) > 1  # the batch really needs left padding
    batched = engine.generate(prompts, GREEDY)
    for prompt, together in zip(prompts, batched, strict=True):
        alone = engine.generate([prompt], GREEDY)[0]
        assert together.token_ids == alone.token_ids
        assert together.text == alone.text
        assert together.logprobs == pytest.approx(alone.logprobs, **tolerance)


def test_logprobs_match_a_forward_pass(engine, prompts, tolerance):
    model = engine.model
    for params in (GREEDY, SamplingParams(max_new_tokens=16, temperature=0.7, top_k=40, top_p=0.9, seed=3)):
        completion = engine.generate(prompts[1:2], params)[0]
        ids = torch.tensor([completion.prompt_ids + completion.token_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(completion.prompt_ids) - 1 : -1].float()
        temperature = params.temperature or 1.0
        expected = torch.log_softmax(logits / temperature, -1).gather(-1, torch.tensor(completion.token_ids)[:, None])
        assert completion.logprobs == pytest.approx(expected[:, 0].tolist(), **tolerance)


def test_streaming_joins_to_the_full_text(engine, prompts):
    params = SamplingParams(max_new_tokens=40, temperature=1.0, seed=7)
    full = engine.generate(prompts[3:4], params)[0]
    deltas = list(engine.stream(prompts[3], params))
    assert "".join(deltas) == full.text
    assert len(deltas) > 1


def test_streaming_never_splits_a_multibyte_character(smol_tokenizer):
    text = "naïve café 你好世界 🙂👍🏽 ok"
    ids = smol_tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) > len(text.split())  # some characters span several byte tokens
    detok = IncrementalDetokenizer(smol_tokenizer)
    deltas = [detok.push(i) for i in ids]
    deltas.append(detok.flush())
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)


def test_stop_strings_cut_the_text_and_are_never_streamed(engine, prompts):
    sampled = SamplingParams(max_new_tokens=32, temperature=1.0, seed=5)
    free = engine.generate(prompts[1:2], sampled)[0]
    middle = len(free.text) // 2
    start = next(i for i in range(middle, len(free.text) - 3) if not any(c.isspace() for c in free.text[i : i + 3]))
    stop = free.text[start : start + 3]
    cut = free.text.index(stop)
    params = SamplingParams(max_new_tokens=32, temperature=1.0, seed=5, stop=(stop,))
    stopped = engine.generate(prompts[1:2], params)[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[:cut]
    assert stopped.token_ids == free.token_ids[: len(stopped.token_ids)]
    assert stop in engine.tokenizer.decode(stopped.token_ids)  # the tokens keep what the model produced
    assert "".join(engine.stream(prompts[1], params)) == stopped.text


def test_stop_token_ends_a_row_and_the_rest_continue_unchanged(tiny, prompts, decoder):
    model, tokenizer = tiny
    plain = TorchEngine(model, tokenizer, **decoder[0])
    alone = [plain.generate([p], GREEDY)[0] for p in prompts]
    # Declare a token that only row 0 produces a stop token: row 0 ends there, the others keep going.
    others = {t for a in alone[1:] for t in a.token_ids}
    k, stop_token = next((k, t) for k, t in enumerate(alone[0].token_ids) if t not in others)
    engine = TorchEngine(model, tokenizer, stop_token_ids=[stop_token], **decoder[0])
    steps = list(engine.steps(prompts, GREEDY))
    assert [e.index for e in steps[k] if e.finished] == [0]
    assert all(e.index != 0 for events in steps[k + 1 :] for e in events)
    finished = {e.index: e.finished for events in steps for e in events if e.finished}
    assert finished[0].token_ids == alone[0].token_ids[: k + 1] and finished[0].finish_reason == "stop"
    # the KV cache rows that stayed are still the right ones: outputs equal the unbatched ones
    for i in range(1, len(prompts)):
        assert finished[i].token_ids == alone[i].token_ids


def test_length_finish(engine, prompts):
    c = engine.generate(prompts[:1], SamplingParams(max_new_tokens=5, temperature=0))[0]
    assert c.finish_reason in ("length", "stop")
    assert len(c.token_ids) <= 5


def test_seeded_sampling_is_reproducible_and_varies_with_seed(engine, prompts):
    a = engine.generate(prompts, SamplingParams(max_new_tokens=16, temperature=1.0, seed=1))
    b = engine.generate(prompts, SamplingParams(max_new_tokens=16, temperature=1.0, seed=1))
    c = engine.generate(prompts, SamplingParams(max_new_tokens=16, temperature=1.0, seed=2))
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]


def test_sampling_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        tokens, _ = sample_tokens(logits, SamplingParams(temperature=1.0, top_k=1), g)
        assert tokens.tolist() == [3, 0]
        tokens, _ = sample_tokens(logits, SamplingParams(temperature=1.0, top_k=2), g)
        assert tokens[0].item() in (2, 3) and tokens[1].item() in (0, 1)
        # probabilities are ~[.03,.09,.24,.64]: top_p=0.6 keeps only the top token, 0.7 the top two
        tokens, _ = sample_tokens(logits, SamplingParams(temperature=1.0, top_p=0.6), g)
        assert tokens.tolist() == [3, 0]
        tokens, _ = sample_tokens(logits, SamplingParams(temperature=1.0, top_p=0.7), g)
        assert tokens[0].item() in (2, 3)
    tokens, logprobs = sample_tokens(logits, SamplingParams(temperature=0), None)
    assert tokens.tolist() == [3, 0]
    assert logprobs.tolist() == pytest.approx(torch.log_softmax(logits, -1).max(-1).values.tolist())


def test_a_temperature_or_top_p_below_float32_is_greedy():
    """The API fuzzer's finds: temperature 1e-100 became 0 in float32 (NaN probabilities) and top_p 5e-324 dropped
    every token; both are the greedy limit."""
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.5]])
    g = torch.Generator().manual_seed(0)
    for params in (SamplingParams(temperature=1e-100), SamplingParams(temperature=1.0, top_p=5e-324)):
        tokens, logprobs = sample_tokens(logits, params, g)
        assert tokens.tolist() == [3, 0] and bool(torch.isfinite(logprobs).all())


def test_adjust_logits_follows_openais_formula():
    # mu[j] - c[j] * frequency_penalty - (c[j] > 0) * presence_penalty + logit_bias[j], by hand
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    counts = torch.tensor([[0.0, 2.0, 1.0, 0.0]])
    params = SamplingParams(frequency_penalty=0.5, presence_penalty=1.0, logit_bias=((3, -2.0), (0, 0.25)))
    assert adjust_logits(logits, params, counts).tolist() == [[1.25, 0.0, 1.5, 2.0]]
    assert logits.tolist() == [[1.0, 2.0, 3.0, 4.0]]  # a new tensor
    with pytest.raises(ValueError, match="vocabulary has 4 tokens"):
        adjust_logits(logits, SamplingParams(logit_bias=((4, 1.0),)))


def test_penalties_and_bias_decode_as_a_plain_loop_does(tiny, prompts):
    """Greedy with penalties and a bias, against the formula applied by hand to full forward passes."""
    model, tokenizer = tiny
    engine = TorchEngine(model, tokenizer, decoder="transformers")
    params = SamplingParams(max_new_tokens=12, temperature=0, presence_penalty=0.7, frequency_penalty=1.3,
                            logit_bias=((1000, 8.0), (17, -100.0)), top_logprobs=2)
    got = engine.generate(prompts[:2], params)
    for prompt, c in zip(prompts[:2], got, strict=True):
        ids, counts = list(prompt), torch.zeros(model.config.vocab_size)
        expected = []
        for _ in range(len(c.token_ids)):
            with torch.no_grad():
                mu = model(torch.tensor([ids])).logits[0, -1].float()
            mu = mu - counts * 1.3 - (counts > 0).float() * 0.7
            mu[1000] += 8.0
            mu[17] -= 100.0
            token = int(mu.argmax())
            expected.append(token)
            ids.append(token)
            counts[token] += 1
        assert c.token_ids == expected
        assert 2 <= c.token_ids.count(1000) < 12  # the bias is felt, and so are the penalties
        assert len(c.top_logprobs) == len(c.token_ids)
        for lp, top in zip(c.logprobs, c.top_logprobs, strict=True):
            assert len(top) == 2 and top[0][1] == pytest.approx(lp) and top[0][1] >= top[1][1]


@pytest.mark.parametrize("vocab", [7, 256, 1000])
def test_draw_follows_the_distribution_and_never_picks_an_impossible_token(vocab):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(vocab, generator=g) * 2
    logits[vocab // 3 : vocab // 2] = float("-inf")  # a run of impossible tokens, straddling a block edge at 1000
    logits[-1] = float("-inf")
    probs = torch.softmax(logits, -1)
    n = 100_000
    drawn = draw(probs.repeat(n, 1), g)
    counts = torch.bincount(drawn, minlength=vocab).double()
    assert int(counts[probs == 0].sum()) == 0
    # every frequency within 5 standard errors of its probability (a wrong inversion is off by whole tokens)
    stderr = (probs.double() * (1 - probs.double()) / n).sqrt()
    assert bool(((counts / n - probs.double()).abs() <= 5 * stderr + 1e-9).all())
    assert draw(probs[None], torch.Generator().manual_seed(3)).tolist() == draw(probs[None], torch.Generator().manual_seed(3)).tolist()


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"stop": "x"}, "stop"),
        ({"stop": ("",)}, "stop"),
        ({"presence_penalty": float("nan")}, "presence_penalty"),
        ({"logit_bias": ((-1, 1.0),)}, "logit_bias"),
        ({"top_logprobs": -1}, "top_logprobs"),
    ],
)
def test_bad_sampling_params(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        SamplingParams(**kwargs)


def test_empty_prompt_rejected(engine):
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        engine.generate([[]], GREEDY)


def test_backends(tiny):
    model, tokenizer = tiny
    assert isinstance(create_engine(model, tokenizer), TorchEngine)
    with pytest.raises(ValueError, match="unknown generation backend"):
        create_engine(model, tokenizer, backend="tgi")


def test_chat_prompt_ends_with_generation_prompt(engine):
    ids = engine.encode_chat([{"role": "user", "content": "hi"}])
    assert engine.tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    with pytest.raises(chat.ConversationError, match="last message must be from the user"):
        engine.encode_chat([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])


def _tiny_gemma3(tokenizer):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=6,  # shorter than the prompts, so the sliding-window layers really slide
        layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
        initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return Gemma3ForCausalLM(config).eval()


@pytest.mark.parametrize(
    ("architecture", "decoder_kwargs"),
    [
        ("llama", {"decoder": "transformers", "cache": "static"}),
        ("llama", {"decoder": "transformers", "cache": "dynamic"}),
        ("llama", {"decoder": "lean", "decode_dtype": "float32"}),
        ("gemma3-sliding-window", {"decoder": "transformers", "cache": "static"}),
        ("gemma3-sliding-window", {"decoder": "auto"}),  # no lean decoder for Gemma 3: its own forward, dynamic cache
    ],
)
def test_greedy_output_equals_transformers_generate(tiny, prompts, architecture, decoder_kwargs):
    """The reference: transformers' own generate() on the same left-padded batch."""
    model, tokenizer = tiny
    if architecture != "llama":
        model = _tiny_gemma3(tokenizer)
    engine = TorchEngine(model, tokenizer, stop_token_ids=[], **decoder_kwargs)
    ours = engine.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0))
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    with torch.no_grad():
        reference = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12, min_new_tokens=12, pad_token_id=pad
        )
    assert [c.token_ids for c in ours] == reference[:, width:].tolist()


def test_bad_cache_kind(tiny):
    with pytest.raises(ValueError, match="cache must be 'static' or 'dynamic'"):
        TorchEngine(*tiny, cache="paged")  # type: ignore[arg-type]


def test_decoder_choice(tiny):
    model, tokenizer = tiny
    assert TorchEngine(model, tokenizer, decode_dtype="float32").decoder_name == "lean (float32)"
    assert TorchEngine(model, tokenizer, decoder="transformers").decoder_name == "transformers (float32)"
    gemma = _tiny_gemma3(tokenizer)
    assert TorchEngine(gemma, tokenizer).decoder_name == "transformers (float32)"
    with pytest.raises(ValueError, match="model type 'gemma3_text' has no lean decoder"):
        TorchEngine(gemma, tokenizer, decoder="lean")
    with pytest.raises(ValueError, match="decoder must be"):
        TorchEngine(model, tokenizer, decoder="vllm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="decode_dtype: unknown dtype 'fp8'"):
        TorchEngine(model, tokenizer, decode_dtype="fp8")
