"""The OpenAI API's fields, through the official `openai` client against a real server on the tiny model: n choices
sampled together, logprobs and top_logprobs, /v1/completions, stop lists, penalties and logit_bias changing the
output, response_format, the refusal of unsupported fields by name; the OpenAPI schema; and an API fuzzer
(schemathesis) over that schema: no 5xx, every response as documented."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from sqlalchemy import func, select  # noqa: E402

from chatforge import chat  # noqa: E402
from chatforge.generation import SamplingParams, TorchEngine  # noqa: E402
from chatforge.serve.app import ServeConfig, create_app  # noqa: E402
from chatforge.serve.json_mode import Grammar  # noqa: E402
from chatforge.serve.testing import running_server  # noqa: E402
from chatforge.store import Store  # noqa: E402
from chatforge.store import models as m  # noqa: E402

HELLO = [{"role": "user", "content": "Hello! Tell me about the sea."}]


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    model, tokenizer = tiny
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('db') / 'openai.db'}")
    key = store.create_api_key(store.create_user("olga").id)
    config = ServeConfig(model_name="tiny", max_new_tokens=64, default_max_tokens=12, rate_limit_per_minute=0)
    app = create_app(model, tokenizer, store, config)
    with running_server(app) as url:
        yield {"url": url, "key": key, "store": store, "app": app,
               "client": openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)}


@pytest.fixture(scope="module")
def engine(tiny):
    model, tokenizer = tiny
    return TorchEngine(model, tokenizer)


def greedy_reply(engine, tokenizer, messages, n_tokens, **params):
    ids = chat.encode_prompt(tokenizer, messages)
    return engine.generate([ids], SamplingParams(max_new_tokens=n_tokens, temperature=0, **params))[0]


# ---- n ------------------------------------------------------------------------------------------------------


def test_n_choices_are_decoded_together_in_one_batch(server):
    scheduler = server["app"].state.scheduler
    steps = scheduler.steps_run
    r = server["client"].chat.completions.create(model="tiny", messages=HELLO, n=4, max_tokens=10, temperature=1.0,
                                                 seed=11)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert len({c.message.content for c in r.choices}) == 4  # each choice its own sample
    assert 4 <= r.usage.completion_tokens <= 40 and r.usage.prompt_tokens < r.usage.total_tokens
    # four choices of at most 10 tokens in at most 10 decode steps: together, not one after another
    assert scheduler.steps_run - steps <= 10
    again = server["client"].chat.completions.create(model="tiny", messages=HELLO, n=4, max_tokens=10,
                                                     temperature=1.0, seed=11)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]
    one = server["client"].chat.completions.create(model="tiny", messages=HELLO, n=1, max_tokens=10, temperature=1.0,
                                                   seed=11)
    assert one.choices[0].message.content == r.choices[0].message.content  # choice 0 is drawn with the seed itself


def test_n_choices_stream_with_their_indices(server):
    kwargs = dict(model="tiny", messages=HELLO, n=3, max_tokens=8, temperature=1.0, seed=5)
    full = server["client"].chat.completions.create(**kwargs)
    chunks = list(server["client"].chat.completions.create(**kwargs, stream=True,
                                                           stream_options={"include_usage": True}))
    texts = ["", "", ""]
    for ch in chunks:
        for c in ch.choices:
            texts[c.index] += c.delta.content or ""
    assert texts == [c.message.content for c in full.choices]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


# ---- logprobs -----------------------------------------------------------------------------------------------


def test_logprobs_and_top_logprobs(server, engine, tiny):
    r = server["client"].chat.completions.create(model="tiny", messages=HELLO, max_tokens=10, temperature=0,
                                                 logprobs=True, top_logprobs=3)
    choice = r.choices[0]
    entries = choice.logprobs.content
    reference = greedy_reply(engine, tiny[1], HELLO, 10)
    assert len(entries) == len(reference.token_ids) - (reference.finish_reason == "stop")
    for e, lp in zip(entries, reference.logprobs, strict=False):
        assert len(e.top_logprobs) == 3
        assert [t.logprob for t in e.top_logprobs] == sorted((t.logprob for t in e.top_logprobs), reverse=True)
        # greedy: the chosen token is the most likely one (bfloat16 logits tie often: any of the tied ones)
        assert e.logprob == pytest.approx(e.top_logprobs[0].logprob)
        assert e.token in [t.token for t in e.top_logprobs if t.logprob == e.top_logprobs[0].logprob]
        assert e.logprob == pytest.approx(lp, abs=1e-3) and e.logprob <= 0
    # the tokens' bytes spell the reply
    assert b"".join(bytes(e.bytes) for e in entries).decode("utf-8", errors="replace") == choice.message.content
    streamed = list(server["client"].chat.completions.create(model="tiny", messages=HELLO, max_tokens=10,
                                                             temperature=0, logprobs=True, top_logprobs=3, stream=True))
    streamed_entries = [e for ch in streamed for c in ch.choices if c.logprobs for e in c.logprobs.content]
    assert [(e.token, e.logprob) for e in streamed_entries] == [(e.token, e.logprob) for e in entries]


def test_no_logprobs_unless_asked(server):
    r = server["client"].chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, temperature=0)
    assert r.choices[0].logprobs is None


# ---- /v1/completions --------------------------------------------------------------------------------------------


def test_completions_for_plain_prompts(server, engine, tiny):
    _, tokenizer = tiny
    c = server["client"]
    prompts = ["Once upon a time", "The capital of France is"]
    r = c.completions.create(model="tiny", prompt=prompts, n=2, max_tokens=6, temperature=0)
    assert r.object == "text_completion" and [x.index for x in r.choices] == [0, 1, 2, 3]
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt)["input_ids"]
        expected = engine.generate([ids], SamplingParams(max_new_tokens=6, temperature=0))[0]
        assert r.choices[2 * i].text == r.choices[2 * i + 1].text == expected.text  # greedy: the same twice
    assert r.usage.prompt_tokens == sum(len(tokenizer(p)["input_ids"]) for p in prompts)
    by_ids = c.completions.create(model="tiny", prompt=tokenizer(prompts[0])["input_ids"], max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == r.choices[0].text
    echoed = c.completions.create(model="tiny", prompt=prompts[0], max_tokens=6, temperature=0, echo=True)
    assert echoed.choices[0].text == prompts[0] + r.choices[0].text
    with_lp = c.completions.create(model="tiny", prompt=prompts[0], max_tokens=6, temperature=0, logprobs=2)
    lp = with_lp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) >= 1
    assert all(1 <= len(top) <= 2 for top in lp.top_logprobs)
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    stream = list(c.completions.create(model="tiny", prompt=prompts[0], max_tokens=6, temperature=0, stream=True))
    assert "".join(x.choices[0].text for x in stream if x.choices) == r.choices[0].text
    assert [x.choices[0].finish_reason for x in stream if x.choices][-1] == r.choices[0].finish_reason


# ---- stop, penalties, logit_bias, seed ---------------------------------------------------------------------------


def test_a_list_of_stop_strings_cuts_at_the_first(server):
    c = server["client"]
    text = c.chat.completions.create(model="tiny", messages=HELLO, max_tokens=24, temperature=0).choices[0].message.content
    first, later = text[6:9], text[14:17]
    assert first and later
    r = c.chat.completions.create(model="tiny", messages=HELLO, max_tokens=24, temperature=0,
                                  stop=[later, first, "never-in-it-zz"])
    assert r.choices[0].message.content == text[: min(text.find(first), text.find(later))]
    assert r.choices[0].finish_reason == "stop"


def test_penalties_and_logit_bias_change_the_output(server, engine, tiny):
    c = server["client"]
    plain = c.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, temperature=0)
    first = engine.tokenizer(plain.choices[0].message.content)["input_ids"][0]
    banned = c.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, temperature=0,
                                       logit_bias={str(first): -100})
    assert not banned.choices[0].message.content.startswith(plain.choices[0].message.content[:4])
    forced = c.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, temperature=0, logprobs=True,
                                       logit_bias={"1000": 100})
    assert [e.token for e in forced.choices[0].logprobs.content] == [engine.tokenizer.decode([1000])] * 4

    # The tiny random model never repeats itself unprompted: a bias makes token 1000 its favourite, and the penalties
    # must then push it back, exactly as the engine's OpenAI formula does.
    def token_1000s(**params):
        r = c.chat.completions.create(model="tiny", messages=HELLO, max_tokens=12, temperature=0, logprobs=True,
                                      logit_bias={"1000": 6.0}, **params)
        reference = greedy_reply(engine, tiny[1], HELLO, 12, logit_bias=((1000, 6.0),), **params)
        assert r.choices[0].message.content == reference.text  # the server samples as the engine does
        return [e.token for e in r.choices[0].logprobs.content].count(engine.tokenizer.decode([1000]))

    repeated = token_1000s()
    assert repeated >= 5
    assert token_1000s(frequency_penalty=2.0) < repeated / 2
    assert token_1000s(presence_penalty=2.0) < repeated / 2
    assert token_1000s(presence_penalty=2.0, frequency_penalty=-2.0) > repeated  # a negative one rewards repeats


def test_seeded_sampling_is_reproducible(server):
    c = server["client"]
    runs = [c.chat.completions.create(model="tiny", messages=HELLO, max_tokens=12, temperature=1.0, seed=s)
            .choices[0].message.content for s in (3, 3, 4)]
    assert runs[0] == runs[1] != runs[2]


def test_store_false_keeps_no_conversation(server):
    def api_conversations():
        with server["store"].session() as s:
            return s.scalar(select(func.count()).select_from(m.Conversation).where(m.Conversation.source == "api"))

    before = api_conversations()
    server["client"].chat.completions.create(model="tiny", messages=HELLO, max_tokens=2, store=False, user="end-7")
    assert api_conversations() == before
    server["client"].chat.completions.create(model="tiny", messages=HELLO, max_tokens=2, n=2)
    assert api_conversations() == before + 1
    with server["store"].session() as s:
        conv = s.scalars(select(m.Conversation).order_by(m.Conversation.created_at.desc())).first()
        answers = list(s.scalars(select(m.Message).where(m.Message.conversation_id == conv.id,
                                                         m.Message.role == "assistant")))
    assert sorted(a.active for a in answers) == [False, True]  # the second choice is an alternative of the first


# ---- response_format ------------------------------------------------------------------------------------------


def test_json_schema_replies_parse_and_fit_the_schema(server):
    schema = {"type": "object", "additionalProperties": False, "required": ["answer", "n", "colour"],
              "properties": {"answer": {"type": "boolean"}, "n": {"type": "integer"},
                             "colour": {"enum": ["red", "green"]}}}
    r = server["client"].chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=64, temperature=1.0, seed=3, n=4,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}})
    for choice in r.choices:  # even the tiny random model: the grammar leaves it nothing else to write
        assert choice.finish_reason == "stop"
        document = json.loads(choice.message.content)
        assert list(document) == ["answer", "n", "colour"]
        assert isinstance(document["answer"], bool) and isinstance(document["n"], int)
        assert document["colour"] in ("red", "green")
    plain = server["client"].chat.completions.create(model="tiny", messages=HELLO, max_tokens=12, temperature=0,
                                                     response_format={"type": "text"})
    with pytest.raises(json.JSONDecodeError):
        json.loads(plain.choices[0].message.content)


def test_json_object_replies_are_json_all_along(server):
    r = server["client"].chat.completions.create(model="tiny", messages=HELLO, max_tokens=24, temperature=1.0,
                                                 seed=1, n=4, response_format={"type": "json_object"})
    grammar = Grammar.json_object()
    for choice in r.choices:
        state = grammar.start()
        for ch in choice.message.content:  # a prefix of a JSON object, even where max_tokens cut it
            state = grammar.feed(state, ch)
            assert state is not None, choice.message.content
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)
        assert choice.message.content.strip().startswith("{")


# ---- refused by name ---------------------------------------------------------------------------------------------

REFUSED = [
    ("tools", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "'tools' is not supported"),
    ("tool_choice", {"tool_choice": "auto"}, "'tool_choice' is not supported"),
    ("functions", {"functions": [{"name": "f"}]}, "'functions' is not supported"),
    ("parallel_tool_calls", {"parallel_tool_calls": True}, "'parallel_tool_calls' is not supported"),
    ("audio", {"audio": {"voice": "alloy", "format": "wav"}}, "'audio' is not supported"),
    ("reasoning_effort", {"reasoning_effort": "high"}, "'reasoning_effort' is not supported"),
    ("metadata", {"metadata": {"k": "v"}}, "'metadata' is not supported"),
    ("response_format", {"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {
        "type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}}}}},
     "response_format.json_schema.schema.properties.a: keyword 'pattern' is not supported"),
    ("response_format", {"response_format": {"type": "xml"}}, "response_format must be"),
    ("service_tier", {"service_tier": "priority"}, "service_tier must be"),
    ("modalities", {"modalities": ["text", "audio"]}, "modalities.1 must be"),
    ("stream_options", {"stream_options": {"include_usage": True}}, "stream_options is only allowed"),
    ("top_logprobs", {"top_logprobs": 2}, "top_logprobs needs logprobs"),
    ("logit_bias", {"logit_bias": {"abc": 1}}, "logit_bias keys must be token ids"),
    ("logit_bias", {"logit_bias": {"999999999": 1}}, "outside the vocabulary"),
    ("logit_bias", {"logit_bias": {"5": 101}}, "between -100 and 100"),
    ("frequency_penalty", {"frequency_penalty": 3}, "frequency_penalty must be <= 2"),
    ("messages", {"messages": [{"role": "user", "content": "hi", "name": "ann"}]}, "'name' is not supported"),
    ("messages", {"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "unknown role 'tool'"),
    ("bogus", {"bogus": 1}, "unknown field 'bogus'"),
]


@pytest.mark.parametrize("param,fields,needle", REFUSED, ids=[f"{r[0]}-{i}" for i, r in enumerate(REFUSED)])
def test_unsupported_fields_are_refused_by_name(server, param, fields, needle):
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 2, **fields}
    with pytest.raises(openai.BadRequestError) as err:
        server["client"].chat.completions.create(**{k: v for k, v in body.items() if k != "bogus"},
                                                 extra_body={"bogus": 1} if "bogus" in fields else None)
    assert needle in err.value.body["message"], err.value.body
    assert err.value.body["param"].split(".")[0] == param
    assert err.value.body["type"] == "invalid_request_error"


def test_neutral_values_of_unsupported_fields_are_accepted(server):
    r = server["client"].chat.completions.create(model="tiny", messages=HELLO, max_tokens=2, tool_choice="none",
                                                 extra_body={"tools": None, "functions": []})
    assert r.choices[0].message.content is not None
    assistant_echo = {"role": "assistant", "content": "Hi.", "refusal": None, "tool_calls": None, "annotations": []}
    r = server["client"].chat.completions.create(
        model="tiny", messages=[*HELLO, assistant_echo, {"role": "user", "content": "More."}], max_tokens=2)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_deep_nesting_is_a_400_not_a_crash(server):
    headers = {"Authorization": f"Bearer {server['key']}", "Content-Type": "application/json"}
    r = httpx.post(server["url"] + "/v1/chat/completions", content=b"[" * 50_000 + b"]" * 50_000, headers=headers)
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]
    schema: dict = {}
    inner = schema
    for _ in range(100):
        inner.update(type="object", properties={"a": {}})
        inner = inner["properties"]["a"]
    r = httpx.post(server["url"] + "/v1/chat/completions", headers=headers, json={
        "model": "tiny", "messages": HELLO, "response_format": {"type": "json_schema",
                                                               "json_schema": {"name": "deep", "schema": schema}}})
    assert r.status_code == 400 and "nested more than 64 levels" in r.json()["error"]["message"]


@pytest.mark.parametrize("fields,needle", [
    ({"suffix": "the end"}, "suffix is not supported"),
    ({"best_of": 3}, "best_of other than n"),
    ({"echo": True, "logprobs": 1}, "logprobs with echo"),
    ({"logprobs": 6}, "logprobs must be <= 5"),
    ({"prompt": [[1, 2], [999999999]]}, "prompt.1: token id 999999999 is outside"),
    ({"prompt": []}, "'prompt' must be a non-empty string"),
    ({"prompt": [1, -2]}, "'prompt' must be a non-empty string"),
    ({"response_format": {"type": "json_object"}}, "'response_format' is not supported"),
])
def test_completions_refuse_by_name(server, fields, needle):
    body = {"model": "tiny", "prompt": "Hi", "max_tokens": 2, **fields}
    r = httpx.post(server["url"] + "/v1/completions", json=body, headers={"Authorization": f"Bearer {server['key']}"})
    assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text


# ---- the schema, and a fuzzer over it ------------------------------------------------------------------------------


def test_openapi_schema_documents_what_is_validated(server):
    schema = httpx.get(server["url"] + "/openapi.json").json()
    assert {"/v1/models", "/v1/chat/completions", "/v1/completions"} <= set(schema["paths"])
    assert not any(p.startswith("/api/") for p in schema["paths"])  # the UI's own JSON is not the public API
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    request = schema["components"]["schemas"][body["$ref"].split("/")[-1]]
    assert request["additionalProperties"] is False and {"messages", "model"} <= set(request["required"])
    assert {"n", "logprobs", "top_logprobs", "stop", "presence_penalty", "logit_bias", "seed"} <= set(request["properties"])
    assert "tools" not in request["properties"]  # refused, so not documented as accepted
    assert "ChatCompletion" in schema["components"]["schemas"]
    assert httpx.get(server["url"] + "/docs").status_code == 200


def test_api_fuzzer_finds_no_server_error_and_no_undocumented_response(tiny, tmp_path):
    """schemathesis over /openapi.json: its coverage phase (each field's boundaries and each type a field allows)
    and its fuzzing phase, every check but "a schema-valid request is accepted" (a conversation's order and its
    length in tokens are rules JSON Schema cannot state: they get a 4xx naming them). A 5xx, a status or a body the
    schema does not document, or a streamed event that is not a documented chunk fails the test."""
    pytest.importorskip("schemathesis", reason="pip install schemathesis (the dev extra)")
    model, tokenizer = tiny
    store = Store(f"sqlite:///{tmp_path / 'fuzz.db'}")
    key = store.create_api_key(store.create_user("fuzz").id)
    config = ServeConfig(model_name="tiny", max_new_tokens=4, default_max_tokens=2, rate_limit_per_minute=0,
                         max_prompt_tokens=200)
    with running_server(create_app(model, tokenizer, store, config)) as url:
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", url + "/openapi.json", "-H", f"Authorization: Bearer {key}",
             "--phases", "coverage,fuzzing", "--max-examples", "25", "--mode", "positive", "--seed", "1",
             "--workers", "1", "--exclude-checks", "positive_data_acceptance", "--generation-database", "none",
             "--no-color", "--report-dir", str(tmp_path)],
            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout
