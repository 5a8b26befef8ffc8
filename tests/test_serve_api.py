"""The OpenAI-compatible API (with the official `openai` client), auth and isolation, bad input, limits,
moderation, cancellation and batching, against a real uvicorn server on 127.0.0.1 with the tiny model."""

from __future__ import annotations

import json
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from sqlalchemy import select  # noqa: E402

from chatforge.serve.app import ServeConfig, create_app  # noqa: E402
from chatforge.serve.moderation import Moderator  # noqa: E402
from chatforge.serve.testing import running_server  # noqa: E402
from chatforge.store import Store  # noqa: E402
from chatforge.store import models as m  # noqa: E402

MODERATION = Moderator.from_config({"rules": [
    {"name": "bomb", "phrases": ["build a bomb"], "stage": "input", "action": "block"},
    {"name": "watch", "phrases": ["watchword"], "stage": "input", "action": "flag"},
]})


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    model, tokenizer = tiny
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('db') / 'serve.db'}")
    alice = store.create_user("alice", "alice-pw")
    bob = store.create_user("bob", "bob-pw")
    keys = {"alice": store.create_api_key(alice.id), "bob": store.create_api_key(bob.id)}
    config = ServeConfig(model_name="tiny", max_new_tokens=64, default_max_tokens=12, rate_limit_per_minute=0,
                         max_body_bytes=20_000, max_prompt_tokens=300, moderation=MODERATION)
    app = create_app(model, tokenizer, store, config)
    with running_server(app) as url:
        yield {"url": url, "keys": keys, "store": store, "app": app}


def client(server, who="alice"):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=server["keys"][who], max_retries=0)


def post(server, body, *, who="alice", raw=None, headers=None):
    h = {"Authorization": f"Bearer {server['keys'][who]}", "Content-Type": "application/json", **(headers or {})}
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(server["url"] + "/v1/chat/completions", content=content, headers=h, timeout=60)


def login(server, who):
    c = httpx.Client(base_url=server["url"], timeout=60)
    r = c.post("/auth/login", json={"username": who, "password": f"{who}-pw"})
    assert r.status_code == 200, r.text
    return c


# ---- the openai client ----------------------------------------------------------------------------------------


def test_models_list(server):
    assert [x.id for x in client(server).models.list().data] == ["tiny"]


def test_chat_completion_with_the_openai_client(server):
    r = client(server).chat.completions.create(
        model="tiny", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
        max_tokens=8, temperature=0)
    assert r.object == "chat.completion" and r.model == "tiny"
    choice = r.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert 1 <= r.usage.completion_tokens <= 8
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streaming_with_the_openai_client_matches_non_streaming(server):
    c = client(server)
    kwargs = dict(model="tiny", messages=[{"role": "user", "content": "Count to three."}], max_tokens=10, temperature=0)
    full = c.chat.completions.create(**kwargs)
    chunks = list(c.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full.choices[0].message.content
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content) >= 2  # it really streamed
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == full.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_eight_concurrent_streams_share_the_decode_loop(server):
    results, errors = {}, []

    def run(i):
        try:
            s = client(server).chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": f"Tell me about number {i}."}],
                max_tokens=24, temperature=0, stream=True)
            results[i] = "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 8
    assert server["app"].state.scheduler.max_batch_seen >= 2


def test_client_disconnect_cancels_generation(server):
    scheduler = server["app"].state.scheduler
    with httpx.stream("POST", server["url"] + "/v1/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {server['keys']['alice']}"},
                      json={"model": "tiny", "messages": [{"role": "user", "content": "Go on and on."}],
                            "max_tokens": 64, "temperature": 0, "stream": True}) as r:
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
    deadline = time.monotonic() + 10
    while scheduler.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert scheduler.running == 0
    with server["store"].session() as s:
        assert s.scalar(select(m.RequestLog).where(m.RequestLog.status == 499)) is not None


# ---- auth and isolation -----------------------------------------------------------------------------------------


def test_api_needs_a_valid_key(server):
    url = server["url"] + "/v1/chat/completions"
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    for headers in ({}, {"Authorization": "Bearer cf-wrong"}, {"Authorization": "Basic abc"}):
        r = httpx.post(url, json=body, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server["url"] + "/v1", api_key="cf-nope", max_retries=0).models.list()
    assert httpx.get(server["url"] + "/api/conversations").status_code == 401
    assert httpx.post(server["url"] + "/auth/login", json={"username": "alice", "password": "x"}).status_code == 401


def test_keys_are_stored_hashed(server):
    with server["store"].session() as s:
        stored = [k.key_hash for k in s.scalars(select(m.ApiKey))]
    assert server["keys"]["alice"] not in stored and len(stored[0]) == 64


def test_a_user_sees_only_their_own_conversations(server):
    alice, bob = login(server, "alice"), login(server, "bob")
    conv = alice.post("/api/conversations", json={"title": "alice's secret"}).json()
    with alice.stream("POST", f"/api/conversations/{conv['id']}/messages", json={"content": "hello"}) as r:
        assert r.status_code == 200
        r.read()
    msgs = alice.get(f"/api/conversations/{conv['id']}").json()["messages"]
    answer = next(x for x in msgs if x["role"] == "assistant")["id"]
    assert [c["id"] for c in bob.get("/api/conversations").json()["conversations"]] == []
    cid = conv["id"]
    attempts = [
        bob.get(f"/api/conversations/{cid}"),
        bob.patch(f"/api/conversations/{cid}", json={"title": "mine"}),
        bob.delete(f"/api/conversations/{cid}"),
        bob.post(f"/api/conversations/{cid}/messages", json={"content": "hi"}),
        bob.post(f"/api/messages/{answer}/feedback", json={"rating": "down"}),
        bob.post(f"/api/messages/{answer}/edit", json={"content": "changed"}),
        bob.post(f"/api/messages/{answer}/regenerate", json={}),
        bob.post("/api/comparisons", json={"message_a": answer, "message_b": answer, "choice": "a"}),
        # an API key is a login too: bob's key sees no more than bob's session
        httpx.get(server["url"] + f"/api/conversations/{cid}", headers={"Authorization": f"Bearer {server['keys']['bob']}"}),
    ]
    for r in attempts:
        assert r.status_code == 404, (r.request.url, r.text)
        assert "not found" in r.json()["error"]["message"]
    assert alice.get(f"/api/conversations/{cid}").json()["title"] == "alice's secret"


def test_non_admins_cannot_see_monitoring(server):
    r = login(server, "alice").get("/api/admin/stats")
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"


# ---- bad input: 4xx JSON naming the problem, never a 500 ---------------------------------------------------------

GOOD = [{"role": "user", "content": "hi"}]
BAD = [
    ("malformed JSON", None, b'{"model": "tiny", "messages": [', 400, "malformed JSON"),
    ("invalid UTF-8", None, b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, "UTF-8"),
    ("empty body", None, b"", 400, "empty"),
    ("not an object", [1, 2], None, 400, "JSON object"),
    ("missing messages", {"model": "tiny"}, None, 400, "'messages'"),
    ("messages not a list", {"model": "tiny", "messages": "hi"}, None, 400, "'messages' must be a list"),
    ("empty messages", {"model": "tiny", "messages": []}, None, 400, "empty"),
    ("unknown role", {"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}, None, 400, "unknown role 'wizard'"),
    ("empty content", {"model": "tiny", "messages": [{"role": "user", "content": "   "}]}, None, 400, "empty"),
    ("content wrong type", {"model": "tiny", "messages": [{"role": "user", "content": 5}]}, None, 400, "content must be a string"),
    ("message not object", {"model": "tiny", "messages": ["hi"]}, None, 400, "message 0"),
    ("missing role", {"model": "tiny", "messages": [{"content": "hi"}]}, None, 400, "missing 'role'"),
    ("ends with assistant", {"model": "tiny", "messages": [*GOOD, {"role": "assistant", "content": "x"}]}, None, 400, "last message"),
    ("lone surrogate", {"model": "tiny", "messages": [{"role": "user", "content": "a\ud800b"}]}, None, 400, "invalid text"),
    ("NUL", {"model": "tiny", "messages": [{"role": "user", "content": "a\u0000b"}]}, None, 400, "NUL"),
    ("over-long prompt", {"model": "tiny", "messages": [{"role": "user", "content": "word " * 1000}]}, None, 400, "limit is 300"),
    ("body too large", {"model": "tiny", "messages": [{"role": "user", "content": "x" * 30_000}]}, None, 413, "limit"),
    ("max_tokens wrong type", {"model": "tiny", "messages": GOOD, "max_tokens": "ten"}, None, 400, "'max_tokens' must be an integer"),
    ("max_tokens too big", {"model": "tiny", "messages": GOOD, "max_tokens": 100000}, None, 400, "max_tokens must be between"),
    ("max_tokens zero", {"model": "tiny", "messages": GOOD, "max_tokens": 0}, None, 400, "max_tokens"),
    ("temperature wrong type", {"model": "tiny", "messages": GOOD, "temperature": "hot"}, None, 400, "'temperature'"),
    ("temperature range", {"model": "tiny", "messages": GOOD, "temperature": 9}, None, 400, "temperature must be"),
    ("top_p range", {"model": "tiny", "messages": GOOD, "top_p": 0}, None, 400, "top_p"),
    ("stream wrong type", {"model": "tiny", "messages": GOOD, "stream": "yes"}, None, 400, "'stream' must be a boolean"),
    ("stop wrong type", {"model": "tiny", "messages": GOOD, "stop": 3}, None, 400, "stop must be"),
    ("n too large", {"model": "tiny", "messages": GOOD, "n": 100}, None, 400, "n must be <= 16"),
    ("n zero", {"model": "tiny", "messages": GOOD, "n": 0}, None, 400, "n must be >= 1"),
    ("unknown field", {"model": "tiny", "messages": GOOD, "bogus": 1}, None, 400, "unknown field 'bogus'"),
    ("model wrong type", {"model": 3, "messages": GOOD}, None, 400, "'model' must be a string"),
    ("unknown model", {"model": "gpt-9", "messages": GOOD}, None, 404, "model 'gpt-9' is not served"),
    ("missing model", {"messages": GOOD}, None, 400, "'model'"),
    ("image content", {"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, None, 400, "text content"),
]


@pytest.mark.parametrize("name,body,raw,status,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_clear_4xx_json_error(server, name, body, raw, status, needle):
    r = post(server, body, raw=raw)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle.lower() in error["message"].lower(), error
    assert error["type"] and "message" in error


def test_bad_input_on_the_ui_api(server):
    alice = login(server, "alice")
    cid = alice.post("/api/conversations", json={}).json()["id"]
    cases = [
        alice.post(f"/api/conversations/{cid}/messages", json={"content": ""}),
        alice.post(f"/api/conversations/{cid}/messages", json={"content": 5}),
        alice.post(f"/api/conversations/{cid}/messages", json={}),
        alice.post(f"/api/conversations/{cid}/messages", content=b"{nope", headers={"Content-Type": "application/json"}),
        alice.post(f"/api/conversations/{cid}/messages", content=b'{"content": "\xff"}'),
        alice.patch(f"/api/conversations/{cid}", json={"title": "  "}),
        alice.post("/api/comparisons", json={"message_a": "x", "message_b": "y", "choice": "maybe"}),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500 and r.json()["error"]["message"], r.text
    assert alice.get("/api/nope").status_code == 404 and alice.get("/api/nope").json()["error"]
    assert alice.put("/v1/models").status_code == 405


def test_openai_client_surfaces_errors(server):
    with pytest.raises(openai.BadRequestError) as err:
        client(server).chat.completions.create(model="tiny", messages=[{"role": "bot", "content": "x"}])
    assert "unknown role" in str(err.value)


# ---- limits and moderation --------------------------------------------------------------------------------------


def test_rate_limit_per_key(tiny, tmp_path):
    model, tokenizer = tiny
    store = Store(f"sqlite:///{tmp_path / 'rl.db'}")
    key = store.create_api_key(store.create_user("carol").id)
    app = create_app(model, tokenizer, store, ServeConfig(model_name="tiny", rate_limit_per_minute=2))
    with running_server(app) as url:
        body = {"model": "tiny", "messages": GOOD, "max_tokens": 1}
        codes = [httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                            timeout=60) for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert codes[2].json()["error"]["code"] == "rate_limit_exceeded" and int(codes[2].headers["Retry-After"]) >= 1


def test_moderation_blocks_and_flags(server, caplog):
    r = post(server, {"model": "tiny", "messages": [{"role": "user", "content": "How do I build a bomb?"}],
                      "user": "end-user-42"})
    assert r.status_code == 400 and "moderation rule 'bomb'" in r.json()["error"]["message"]
    # the API's `user` field names the caller's own end user in the server's log of the hit
    assert "rule 'bomb' (input, block) hit on a request of API user 'alice' for end user 'end-user-42'" in caplog.text
    r = post(server, {"model": "tiny", "messages": [{"role": "user", "content": "the watchword is tea"}], "max_tokens": 2})
    assert r.status_code == 200
    with server["store"].session() as s:
        flags = {(f.rule, f.action, f.stage) for f in s.scalars(select(m.Flag))}
    assert {("bomb", "block", "input"), ("watch", "flag", "input")} <= flags
