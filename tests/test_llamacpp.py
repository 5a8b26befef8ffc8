"""The exported GGUF in llama.cpp: it loads, llama.cpp applies the chat template inside it, its greedy replies agree
with chatforge's own on the same checkpoint, the quantizer's types are in the file, and chatforge's llama.cpp
engine batches several requests as one would run them alone.

The tiny random model makes the fast tests; the greedy agreement that matters is on the real packaged SmolLM2
(smoke). Everything here needs llama-cpp-python (the ``llamacpp`` extra) and skips, saying so, without it."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip(
    "llama_cpp", reason='llama-cpp-python is not installed (the llamacpp extra: pip install -e ".[llamacpp]")')

import gguf
from llama_cpp import Llama, llama_chat_format

from chatforge import chat, models
from chatforge.generation import SamplingParams, TorchEngine
from chatforge.gguf_export import export_gguf
from chatforge.llamacpp import LlamaCppEngine

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You answer in one sentence."},
     {"role": "user", "content": "Why is the sky blue?"}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Name three fruits, 1 2 3."}],
]


@pytest.fixture(scope="module")
def tiny_files(tiny, tmp_path_factory):
    model, tokenizer = tiny
    root = tmp_path_factory.mktemp("llamacpp")
    checkpoint = models.save_checkpoint(model, tokenizer, root / "tiny")
    return {quant: export_gguf(checkpoint, root / f"tiny-{quant}.gguf", quant=quant).gguf
            for quant in ("f16", "q8_0", "q4_k_m")}


def llama(path, **kwargs):
    return Llama(model_path=str(path), n_ctx=1024, n_threads=torch.get_num_threads(), verbose=False, seed=0,
                 **kwargs)


def llama_cpp_greedy(llm: Llama, prompt_ids: list[int], n: int) -> list[int]:
    """llama.cpp's own sampling loop at temperature 0 (its greedy sampler), up to ``n`` tokens."""
    out: list[int] = []
    for token in llm.generate(prompt_ids, temp=0.0, reset=True):
        out.append(token)
        if len(out) == n or llm.token_eos() == token:
            break
    return out


def chatforge_greedy(model, tokenizer, prompt_ids: list[int], n: int) -> list[int]:
    """chatforge's own greedy reply on the checkpoint, in float32 through the model's own forward pass."""
    engine = TorchEngine(model, tokenizer, decoder="transformers")
    return engine.generate([prompt_ids], SamplingParams(max_new_tokens=n, temperature=0))[0].token_ids


# ---- the file in llama.cpp -----------------------------------------------------------------------------------


def test_quantized_files_carry_llama_cpp_types(tiny_files):
    sizes = {}
    for quant, ftype in (("f16", 1), ("q8_0", 7), ("q4_k_m", 15)):
        reader = gguf.GGUFReader(tiny_files[quant])
        assert reader.fields["general.file_type"].contents() == ftype
        assert reader.fields["tokenizer.chat_template"].contents()  # the quantizer keeps the metadata
        sizes[quant] = tiny_files[quant].stat().st_size
    assert sizes["f16"] > sizes["q8_0"] > sizes["q4_k_m"]


def test_llama_cpp_applies_the_chat_template_inside_the_file(tiny, tiny_files):
    _, tokenizer = tiny
    llm = llama(tiny_files["q8_0"])
    assert llm.metadata["tokenizer.chat_template"] == tokenizer.chat_template
    assert llm.chat_format == "chat_template.default"  # create_chat_completion formats with the file's template
    formatter = llama_chat_format.Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"], eos_token=llm.detokenize([llm.token_eos()]).decode(),
        bos_token=llm.detokenize([llm.token_bos()], special=True).decode())
    for messages in CONVERSATIONS:
        prompt = formatter(messages=messages).prompt
        assert prompt == chat.render(tokenizer, messages, add_generation_prompt=True)
        # and llama.cpp's tokenizer turns it into the ids chatforge prompts with
        assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == chat.encode_prompt(tokenizer, messages)


def test_llama_cpp_builtin_template_matches_for_conversations_with_a_system_prompt(tiny, tiny_files):
    """llama.cpp's C API (llama_chat_apply_template, what its own tools use without Jinja) recognises the template
    as ChatML; SmolLM2's default system prompt is Jinja-only, so the check uses conversations that set one."""
    import ctypes

    import llama_cpp

    _, tokenizer = tiny
    template = tokenizer.chat_template.encode()
    for messages in CONVERSATIONS[1:2]:
        array = (llama_cpp.llama_chat_message * len(messages))(
            *[llama_cpp.llama_chat_message(m["role"].encode(), m["content"].encode()) for m in messages])
        buf = ctypes.create_string_buffer(4096)
        n = llama_cpp.llama_chat_apply_template(template, array, len(messages), True, buf, len(buf))
        assert buf.raw[:n].decode() == chat.render(tokenizer, messages, add_generation_prompt=True)


def test_tiny_f16_greedy_reply_matches_chatforge(tiny, tiny_files):
    model, tokenizer = tiny
    llm = llama(tiny_files["f16"])
    for messages in CONVERSATIONS:
        prompt = chat.encode_prompt(tokenizer, messages)
        assert llama_cpp_greedy(llm, prompt, 16) == chatforge_greedy(model, tokenizer, prompt, 16)


# ---- chatforge's llama.cpp engine ----------------------------------------------------------------------------


def test_engine_batched_logits_are_the_checkpoints(tiny, tiny_files):
    """Three prompts of different lengths prefilled and decoded together, each its own llama.cpp sequence in one
    shared cache: every row's logits are the checkpoint's for that prompt alone (float16 weights: within 0.05; rows
    leaking into each other would be off by whole units)."""
    from chatforge.generation import left_padded

    model, tokenizer = tiny
    engine = LlamaCppEngine(tiny_files["f16"], models.load_tokenizer(tiny_files["f16"]), max_sequences=4)
    try:
        prompts = [chat.encode_prompt(tokenizer, m) for m in CONVERSATIONS]
        assert prompts == [engine.encode_chat(m) for m in CONVERSATIONS]  # the tokenizer read from the GGUF
        ids, valid, positions = left_padded(prompts, engine.pad_token_id)
        forward = engine.forward_pass(ids.shape[1] + 1)
        first = forward.prefill(ids, valid, positions)
        nxt = first.argmax(-1)
        second = forward.decode(nxt, positions[:, -1:] + 1)
        for row, prompt in enumerate(prompts):
            with torch.no_grad():
                want = model(torch.tensor([[*prompt, int(nxt[row])]])).logits[0, -2:]
            assert (first[row] - want[0]).abs().max() < 0.05
            assert (second[row] - want[1]).abs().max() < 0.05
        forward.select(torch.tensor([1, 1, 2]))  # row 0 finished; row 1 answered twice (n=2 shares its prompt)
        assert len(set(forward.seqs)) == 3 and sorted(engine.llama.seq_lengths) == sorted(forward.seqs)
        again = forward.decode(torch.stack([nxt[1], nxt[1], nxt[2]]), positions[[1, 1, 2], -1:] + 2)
        assert torch.allclose(again[0], again[1]) and not torch.allclose(again[0], again[2])
        forward.select(torch.tensor([2]))  # finished rows give their sequences and cache cells back
        assert sorted(engine.llama.seq_lengths) == [forward.seqs[0]]
        del forward
        assert engine.llama.seq_lengths == {}  # and so does a dropped batch
    finally:
        engine.close()


def test_engine_generates_and_streams_like_the_decode_loop_promises(tiny, tiny_files):
    _, tokenizer = tiny
    engine = LlamaCppEngine(tiny_files["q8_0"], tokenizer, max_sequences=4)
    try:
        prompts = [chat.encode_prompt(tokenizer, m) for m in CONVERSATIONS]
        done = engine.generate(prompts, SamplingParams(max_new_tokens=10, temperature=0))
        assert all(c.finish_reason in ("stop", "length") and 1 <= len(c.token_ids) <= 10 for c in done)
        alone = engine.generate(prompts[:1], SamplingParams(max_new_tokens=10, temperature=0))[0]
        streamed = "".join(engine.stream(prompts[0], SamplingParams(max_new_tokens=10, temperature=0)))
        assert streamed == alone.text == tokenizer.decode(alone.token_ids, skip_special_tokens=True)
        seeded = SamplingParams(max_new_tokens=8, temperature=1.0, seed=7)
        assert engine.generate(prompts[:1], seeded)[0].token_ids == engine.generate(prompts[:1], seeded)[0].token_ids
        assert engine.llama.seq_lengths == {}
    finally:
        engine.close()


def test_engine_refuses_a_full_cache_by_name(tiny, tiny_files):
    _, tokenizer = tiny
    engine = LlamaCppEngine(tiny_files["q8_0"], tokenizer, context_tokens=256, max_sequences=2)
    try:
        long_prompt = chat.encode_prompt(tokenizer, [{"role": "user", "content": "word " * 300}])
        with pytest.raises(RuntimeError, match="KV cache is full"):
            engine.generate([long_prompt], SamplingParams(max_new_tokens=4, temperature=0))
        assert engine.llama.seq_lengths == {}
        short = chat.encode_prompt(tokenizer, CONVERSATIONS[0])  # and the engine still works afterwards
        assert len(engine.generate([short], SamplingParams(max_new_tokens=4, temperature=0))[0].token_ids) >= 1
    finally:
        engine.close()


# ---- the real model (smoke) ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("smol-gguf")
    return {quant: export_gguf("smollm2-135m-instruct", root / f"smol-{quant}.gguf", quant=quant).gguf
            for quant in ("f16", "q8_0", "q4_k_m")}


SMOKE_CONVERSATIONS = [*CONVERSATIONS,
                       [{"role": "user", "content": "Write a haiku about the sea."}],
                       [{"role": "user", "content": "How do I boil an egg?"}],
                       [{"role": "user", "content": "Tell me a joke about computers."}]]

# A reply may leave chatforge's only where chatforge's own top choice and llama.cpp's are this close (logits): a
# near tie that rounding decides. Measured on SmolLM2 (2026-12-02): f16 agrees on all six conversations for 16
# tokens; q8_0 on four, and leaves at "Why is the sky blue?" token 3 (" blue" 0.31 below " appears") and at the
# joke's token 13; q4_k_m agrees for [0, 2, 3, 1, 6, 10] tokens (llama.cpp answers the capital question in French
# even from the Q4_1 file SmolLM2 ships in).
NEAR_TIE = 0.5


def leading_agreement(ours: list[int], theirs: list[int]) -> int:
    """How many leading tokens agree; a reply chatforge ended (stop token) counts as agreeing to its end."""
    return next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), len(ours))


@pytest.mark.smoke
def test_smollm2_greedy_replies_match_chatforge(smol_files):
    model, tokenizer = models.load_model("smollm2-135m-instruct")
    prompts = [chat.encode_prompt(tokenizer, m) for m in SMOKE_CONVERSATIONS]
    ours = [chatforge_greedy(model, tokenizer, p, 16) for p in prompts]
    agreement: dict[str, list[int]] = {}
    for quant, path in smol_files.items():
        llm = llama(path)
        engine = LlamaCppEngine(path, tokenizer, max_sequences=2)  # what `serve --backend llama.cpp` decodes with
        agreement[quant] = []
        for prompt, mine in zip(prompts, ours, strict=True):
            theirs = llama_cpp_greedy(llm, prompt, 16)
            served = engine.generate([prompt], SamplingParams(max_new_tokens=16, temperature=0))[0].token_ids
            assert served == theirs[: len(served)], f"{quant}: the engine left llama.cpp's own greedy reply"
            same = leading_agreement(mine, theirs)
            agreement[quant].append(same)
            if quant != "q4_k_m" and same < len(mine):
                with torch.no_grad():
                    logits = model(torch.tensor([prompt + mine[:same]])).logits[0, -1]
                gap = float(logits.max() - logits[theirs[same]])
                assert gap < NEAR_TIE, f"{quant} left chatforge's reply at token {same} by {gap:.2f} logits: " \
                                       f"{tokenizer.decode(theirs)!r} vs {tokenizer.decode(mine)!r}"
        engine.close()
        del llm
    print(f"leading greedy tokens in agreement with chatforge (of 16 or to its stop): {agreement}")
    full = {q: sum(a == len(m) for a, m in zip(agreement[q], ours, strict=True)) for q in agreement}
    assert full["f16"] == len(prompts), agreement
    assert full["q8_0"] >= len(prompts) - 2, agreement


@pytest.mark.smoke
def test_smollm2_chat_completion_in_llama_cpp_uses_the_template(smol_files):
    model, tokenizer = models.load_model("smollm2-135m-instruct")
    llm = llama(smol_files["q8_0"])
    messages = SMOKE_CONVERSATIONS[3]  # a reply q8_0 gives as chatforge does
    reply = llm.create_chat_completion(messages=messages, temperature=0.0, max_tokens=16)
    ours = chatforge_greedy(model, tokenizer, chat.encode_prompt(tokenizer, messages), 16)
    text = reply["choices"][0]["message"]["content"]
    assert text.strip() == tokenizer.decode(ours, skip_special_tokens=True).strip()


@pytest.mark.smoke
def test_gemma3_exports_tokenizes_and_answers_as_chatforge_does(tmp_path):
    """Gemma 3: SentencePiece-style vocabulary with scores from the merge order, ``1 + w`` norms, sliding-window
    layers. llama.cpp must cut text into chatforge's tokens (runs of spaces, tabs, accents, CJK, emoji, digits,
    control tokens) and continue a prompt greedily as chatforge does (float16: 16 of 16 tokens, measured)."""
    model, tokenizer = models.load_model("gemma-3-270m")
    path = export_gguf("gemma-3-270m", tmp_path / "gemma.gguf", quant="f16").gguf
    llm = llama(path)
    for text in ["Hello world", "  two  spaces and\ttabs\n\nnewlines", "naïve café 東京 🚀 1234567 3.14",
                 "<start_of_turn>user\nHi<end_of_turn>\n", "    indented code():\n        return x**2"]:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer.encode(text, add_special_tokens=False)
    prompt = chat.encode_prompt(tokenizer, [{"role": "user", "content": "The capital of France is"}])
    assert prompt[0] == tokenizer.bos_token_id
    ours = chatforge_greedy(model, tokenizer, prompt, 16)
    assert llama_cpp_greedy(llm, prompt, 16)[: len(ours)] == ours


# ---- the server with llama.cpp doing the decoding ------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_server(tiny_files, tmp_path_factory):
    openai = pytest.importorskip("openai")
    from chatforge.serve.app import ServeConfig, create_app
    from chatforge.serve.backend import LlamaCppBackend
    from chatforge.serve.testing import running_server
    from chatforge.store import Store

    tokenizer = models.load_tokenizer(tiny_files["f16"])
    engine = LlamaCppEngine(tiny_files["f16"], tokenizer, context_tokens=4096, max_sequences=8)
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('db') / 'serve.db'}")
    key = store.create_api_key(store.create_user("alice", "alice-pw").id)
    config = ServeConfig(model_name="tiny-gguf", max_new_tokens=64, default_max_tokens=12, rate_limit_per_minute=0)
    app = create_app(None, tokenizer, store, config, backend=LlamaCppBackend(engine, max_batch=8))
    with running_server(app) as url:
        yield {"client": openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0), "engine": engine,
               "store": store, "url": url}
    engine.close()


def test_served_chat_completion_and_stream_through_llama_cpp(llama_server):
    client, engine = llama_server["client"], llama_server["engine"]
    messages = CONVERSATIONS[1]
    reply = client.chat.completions.create(model="tiny-gguf", messages=messages, max_tokens=10, temperature=0)
    alone = engine.generate([engine.encode_chat(messages)], SamplingParams(max_new_tokens=10, temperature=0))[0]
    assert reply.choices[0].message.content == alone.text
    assert reply.usage.completion_tokens == len(alone.token_ids)
    assert reply.usage.prompt_tokens == len(engine.encode_chat(messages))
    chunks = list(client.chat.completions.create(model="tiny-gguf", messages=messages, max_tokens=10, temperature=0,
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == alone.text
    assert chunks[-1].choices[0].finish_reason == reply.choices[0].finish_reason
    assert engine.llama.seq_lengths == {}  # finished requests gave their llama.cpp sequences back


def test_served_requests_land_in_the_store_and_n_choices_share_a_prompt(llama_server):
    from sqlalchemy import select

    from chatforge.store import models as m

    client = llama_server["client"]
    reply = client.chat.completions.create(model="tiny-gguf", messages=CONVERSATIONS[0], max_tokens=6, n=3,
                                           temperature=1.0, seed=3, logprobs=True)
    assert len(reply.choices) == 3 and all(len(c.logprobs.content) >= 1 for c in reply.choices)
    with llama_server["store"].session() as s:
        texts = [x.content for x in s.scalars(select(m.Message).where(m.Message.role == "assistant"))]
    assert reply.choices[0].message.content in texts  # the feedback loop sees API conversations


def test_serve_cli_refuses_a_non_gguf_model_for_llama_cpp(tmp_path, capsys):
    from chatforge.cli import main as cli_main

    code = cli_main(["serve", "--backend", "llama.cpp", "--model", "smollm2-135m-instruct",
                     "--db", f"sqlite:///{tmp_path / 'db.sqlite'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--backend llama.cpp serves a .gguf file" in err and "chatforge export-model smollm2-135m-instruct" in err


def test_served_json_mode_through_llama_cpp(llama_server):
    """JSON mode constrains sampling over llama.cpp's logits as over the torch model's: every reply is a prefix of
    a JSON object, and a finished one parses."""
    import json

    from chatforge.serve.json_mode import Grammar

    reply = llama_server["client"].chat.completions.create(
        model="tiny-gguf", messages=[{"role": "user", "content": "Give me a JSON object."}], max_tokens=24,
        temperature=1.0, seed=1, n=3, response_format={"type": "json_object"})
    grammar = Grammar.json_object()
    for choice in reply.choices:
        state = grammar.start()
        for ch in choice.message.content:
            state = grammar.feed(state, ch) if state is not None else None
        assert state is not None and choice.message.content.strip().startswith("{"), choice.message.content
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)
