"""The UI's feedback flow over HTTP (send, regenerate + choose, edit, thumbs) and `chatforge export`."""

from __future__ import annotations

import json

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from chatforge.data.comparisons import load_comparisons  # noqa: E402
from chatforge.data.edits import Edits  # noqa: E402
from chatforge.data.files import FileSource  # noqa: E402
from chatforge.serve import register_cli  # noqa: E402
from chatforge.serve.app import ServeConfig, create_app  # noqa: E402
from chatforge.serve.export import export, parse_since  # noqa: E402
from chatforge.serve.testing import running_server  # noqa: E402
from chatforge.store import Store  # noqa: E402


def sse(response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def stream(c, path, body):
    with c.stream("POST", path, json=body) as r:
        assert r.status_code == 200, r.read()
        events = sse(r)
    assert events[-1]["type"] == "done", events[-1]
    return events


def test_feedback_flow_then_export(tiny, tmp_path):
    model, tokenizer = tiny
    store = Store(f"sqlite:///{tmp_path / 'flow.db'}")
    store.create_user("dana", "dana-pw", admin=True)
    app = create_app(model, tokenizer, store, ServeConfig(model_name="tiny-r1", default_max_tokens=10))
    with running_server(app) as url:
        c = httpx.Client(base_url=url, timeout=60)
        assert c.post("/auth/login", json={"username": "dana", "password": "dana-pw"}).status_code == 200
        conv = c.post("/api/conversations", json={"system_prompt": "Be kind."}).json()
        events = stream(c, f"/api/conversations/{conv['id']}/messages", {"content": "Name a fruit."})
        assert events[0]["type"] == "start" and any(e["type"] == "delta" for e in events)
        first = events[-1]["message"]
        alt = stream(c, f"/api/messages/{first['id']}/regenerate", {})[-1]["message"]
        assert alt["seq"] == first["seq"] and not alt["active"]
        r = c.post("/api/comparisons", json={"message_a": first["id"], "message_b": alt["id"], "choice": "b"})
        assert r.status_code == 200 and r.json()["active"] == alt["id"]
        assert c.post(f"/api/messages/{alt['id']}/edit", json={"content": "An apple."}).status_code == 200
        r = c.post(f"/api/messages/{alt['id']}/feedback", json={"rating": "down", "reason": "too vague"})
        assert r.status_code == 200
        shown = c.get(f"/api/conversations/{conv['id']}").json()["messages"]
        active = [x for x in shown if x["active"]]
        assert [x["content"] for x in active] == ["Name a fruit.", "An apple."]
        stats = c.get("/api/admin/stats").json()
        assert stats["per_model"]["tiny-r1"]["thumbs_down"] == 1 and stats["per_model"]["tiny-r1"]["requests"] == 2
        assert c.get("/admin").status_code == 200 and c.get("/").status_code == 200

    counts = export(store, tmp_path / "out", parse_since("1d"))
    assert counts == {"sft": 1, "edits": 1, "comparisons": 1, "feedback": 1, "redteam": 0}
    context = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Name a fruit."}]
    (cmp,) = load_comparisons(tmp_path / "out" / "comparisons.jsonl")
    assert cmp.source == "ab" and cmp.ranks == (2, 1) and cmp.rater.id == "dana"
    assert [x.to_dict() for x in cmp.context] == context
    assert cmp.responses[0].text == first["content"] and cmp.responses[1].model == "tiny-r1"
    (edit,) = Edits(tmp_path / "out" / "edits.jsonl").records()
    assert edit.edited_answer == "An apple." and edit.model_answer == alt["content"] and edit.editor == "dana"
    (demo,) = list(FileSource(tmp_path / "out" / "sft.jsonl"))
    assert demo.to_dicts() == [*context, {"role": "assistant", "content": "An apple."}]
    (thumb,) = [json.loads(x) for x in (tmp_path / "out" / "feedback.jsonl").read_text().splitlines()]
    assert thumb["rating"] == "down" and thumb["reason"] == "too vague" and thumb["response"] == "An apple."
    # nothing newer than now
    assert export(store, tmp_path / "none", parse_since("2999-01-01"))["edits"] == 0


def test_export_cli(tmp_path, capsys):
    import argparse

    store = Store(f"sqlite:///{tmp_path / 'cli.db'}")
    store.close()
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    args = parser.parse_args(["export", "--db", f"sqlite:///{tmp_path / 'cli.db'}", "--to", str(tmp_path / "o"), "--since", "7d"])
    assert args.func(args) == 0
    assert (tmp_path / "o" / "manifest.json").is_file()
    args = parser.parse_args(["export", "--db", f"sqlite:///{tmp_path / 'cli.db'}", "--to", str(tmp_path / "o"), "--since", "yesterday"])
    assert args.func(args) == 2 and "--since" in capsys.readouterr().err


def test_thumbs_on_two_answers_make_a_thumbs_comparison(tiny, tmp_path):
    model, tokenizer = tiny
    store = Store(f"sqlite:///{tmp_path / 't.db'}")
    store.create_user("eve", "eve-pw")
    app = create_app(model, tokenizer, store, ServeConfig(model_name="tiny", default_max_tokens=6, ui_temperature=1.0))
    with running_server(app) as url:
        c = httpx.Client(base_url=url, timeout=60)
        c.post("/auth/login", json={"username": "eve", "password": "eve-pw"})
        cid = c.post("/api/conversations", json={}).json()["id"]
        a = stream(c, f"/api/conversations/{cid}/messages", {"content": "hi"})[-1]["message"]
        b = stream(c, f"/api/messages/{a['id']}/regenerate", {})[-1]["message"]
        c.post(f"/api/messages/{a['id']}/feedback", json={"rating": "up"})
        c.post(f"/api/messages/{b['id']}/feedback", json={"rating": "down", "reason": "worse"})
    export(store, tmp_path / "out")
    comps = load_comparisons(tmp_path / "out" / "comparisons.jsonl")
    if a["content"].strip() != b["content"].strip():
        (t,) = comps
        assert t.source == "thumbs" and t.responses[0].text == a["content"] and t.ranks == (1, 2)
