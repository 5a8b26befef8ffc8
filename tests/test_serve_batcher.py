"""The continuous batcher: requests that join a running batch get exactly what they would get alone."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from chatforge import chat
from chatforge.generation import SamplingParams, TorchEngine
from chatforge.serve.batcher import ContinuousBatcher, GenRequest

PROMPTS = ["hi", "tell me a long story about cats and dogs", "2+2?", "What's the capital of France, and why?", "ok"]


class Collector:
    """A client. ``delay`` seconds per streamed delta make it a slow reader: the scheduler calls it between steps, so
    a running request then stays in the batch long enough for later ones to join, however fast the model is."""

    def __init__(self, delay: float = 0.0) -> None:
        self.text = ""
        self.done = threading.Event()
        self.completion = None
        self.delay = delay

    def __call__(self, delta, finished):
        time.sleep(self.delay)
        self.text += delta
        if finished is not None:
            self.completion = finished
            self.done.set()


# The model's own forward with a transformers cache, and the lean decoder (the default) with its KVCache.
DECODERS = {"transformers": {"decoder": "transformers"}, "lean": {"decoder": "lean"}}


@pytest.fixture(scope="module", params=list(DECODERS))
def decoder(request):
    return DECODERS[request.param]


@pytest.fixture(scope="module")
def batcher(tiny, decoder):
    model, tokenizer = tiny
    b = ContinuousBatcher(model, tokenizer, max_batch=8, **decoder).start()
    yield b
    b.stop()


def test_staggered_requests_match_solo_greedy_generation(tiny, batcher, decoder):
    model, tokenizer = tiny
    engine = TorchEngine(model, tokenizer, **decoder)
    prompts = [chat.encode_prompt(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS]
    lengths = [12, 20, 4, 16, 9]
    expected = [engine.generate([p], SamplingParams(max_new_tokens=n, temperature=0))[0] for p, n in zip(prompts, lengths, strict=True)]
    collectors = []
    for p, n in zip(prompts, lengths, strict=True):
        c = Collector(delay=0.005)
        batcher.submit(GenRequest(p, SamplingParams(max_new_tokens=n, temperature=0), c))
        collectors.append(c)
        time.sleep(0.02)  # later requests join a batch that is already decoding
    for c, exp in zip(collectors, expected, strict=True):
        assert c.done.wait(60)
        assert c.completion.token_ids == exp.token_ids
        assert c.completion.text == exp.text == c.text
        assert c.completion.finish_reason == exp.finish_reason
    assert batcher.max_batch_seen > 1  # they really shared decode steps
    assert batcher.running == 0


def test_per_request_sampling_params_and_seeds(tiny, batcher):
    _, tokenizer = tiny
    prompt = chat.encode_prompt(tokenizer, [{"role": "user", "content": "Name a colour."}])
    runs = []
    for _ in range(2):
        greedy, seeded = Collector(), Collector()
        batcher.submit(GenRequest(prompt, SamplingParams(max_new_tokens=10, temperature=0), greedy))
        batcher.submit(GenRequest(prompt, SamplingParams(max_new_tokens=10, temperature=1.0, seed=7), seeded))
        assert greedy.done.wait(60) and seeded.done.wait(60)
        runs.append((greedy.completion.token_ids, seeded.completion.token_ids))
    assert runs[0] == runs[1]  # greedy is deterministic and a seed reproduces a sampled reply, batched or not


def test_a_group_shares_one_prefill_and_each_request_gets_its_solo_reply(tiny, batcher, decoder):
    """The n choices of an API request: one group, prefilled once and copied; greedy, seeded and penalized rows each
    decode as they would alone, with their logprobs and top alternatives."""
    model, tokenizer = tiny
    engine = TorchEngine(model, tokenizer, **decoder)
    prompt = chat.encode_prompt(tokenizer, [{"role": "user", "content": "Name a fruit and a colour."}])
    kinds = [SamplingParams(max_new_tokens=10, temperature=0, top_logprobs=3),
             SamplingParams(max_new_tokens=10, temperature=0),
             SamplingParams(max_new_tokens=10, temperature=1.0, seed=1),
             SamplingParams(max_new_tokens=10, temperature=1.0, seed=2),
             SamplingParams(max_new_tokens=10, temperature=0, frequency_penalty=2.0, logit_bias=((1000, 6.0),))]
    expected = [engine.generate([prompt], p)[0] for p in kinds]
    collectors = [Collector() for _ in kinds]
    steps = batcher.steps_run
    batcher.submit_group([GenRequest(prompt, p, c) for p, c in zip(kinds, collectors, strict=True)])
    for c, exp in zip(collectors, expected, strict=True):
        assert c.done.wait(60)
        assert c.completion.token_ids == exp.token_ids
        assert c.completion.logprobs == pytest.approx(exp.logprobs, abs=1e-3)
        assert c.completion.top_logprobs == exp.top_logprobs or [
            [t for t, _ in step] for step in c.completion.top_logprobs] == [[t for t, _ in s] for s in exp.top_logprobs]
    assert len(collectors[0].completion.top_logprobs) == len(collectors[0].completion.token_ids)
    assert collectors[1].completion.top_logprobs == []
    assert collectors[2].completion.token_ids != collectors[3].completion.token_ids
    assert batcher.steps_run - steps <= 10  # together: five replies of 10 tokens in 10 steps


def test_serial_admits_one_group_at_a_time(tiny):
    model, tokenizer = tiny
    serial = ContinuousBatcher(model, tokenizer, serial=True).start()
    try:
        prompt = chat.encode_prompt(tokenizer, [{"role": "user", "content": "hi"}])
        greedy = SamplingParams(max_new_tokens=6, temperature=0)
        singles = [Collector(delay=0.005) for _ in range(3)]
        for c in singles:
            serial.submit(GenRequest(prompt, greedy, c))
        assert all(c.done.wait(60) for c in singles)
        assert serial.max_batch_seen == 1
        pair = [Collector(), Collector()]
        serial.submit_group([GenRequest(prompt, greedy, c) for c in pair])
        assert all(c.done.wait(60) for c in pair) and serial.max_batch_seen == 2
        assert pair[0].completion.token_ids == singles[0].completion.token_ids
    finally:
        serial.stop()


def test_cancel_leaves_the_batch(tiny, batcher):
    _, tokenizer = tiny
    prompt = chat.encode_prompt(tokenizer, [{"role": "user", "content": "Write a lot."}])
    c = Collector()
    req = batcher.submit(GenRequest(prompt, SamplingParams(max_new_tokens=2000, temperature=0), c))
    deadline = time.monotonic() + 30
    while not c.text and time.monotonic() < deadline:
        time.sleep(0.01)
    req.cancel()
    assert c.done.wait(30)
    assert c.completion.finish_reason == "cancelled"
    assert len(c.completion.token_ids) < 2000
    deadline = time.monotonic() + 5
    while batcher.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batcher.running == 0


def test_a_sliding_window_model_batches_without_splicing(tiny):
    """Sliding-window cache layers cannot take rows prefilled apart: new requests wait for the running batch to
    finish (and are batched with each other), and every reply still equals its solo generation."""
    from transformers import MistralConfig, MistralForCausalLM

    _, tokenizer = tiny
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=6, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(2)
    model = MistralForCausalLM(config).eval()
    engine = TorchEngine(model, tokenizer)
    assert engine.lean is None  # the lean decoder has no sliding windows
    prompts = [chat.encode_prompt(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS[:3]]
    greedy = SamplingParams(max_new_tokens=10, temperature=0)
    expected = [engine.generate([p], greedy)[0] for p in prompts]
    forward = engine.forward_pass(32)
    ids = torch.tensor([prompts[0]])
    forward.prefill(ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None])
    assert not forward.can_extend
    batcher = ContinuousBatcher(model, tokenizer, max_batch=8).start()
    try:
        collectors = []
        for p in prompts:
            c = Collector()
            batcher.submit(GenRequest(p, greedy, c))
            collectors.append(c)
            time.sleep(0.05)
        for c, exp in zip(collectors, expected, strict=True):
            assert c.done.wait(60)
            assert c.completion.token_ids == exp.token_ids
    finally:
        batcher.stop()
