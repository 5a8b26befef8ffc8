"""The store: migrations match the models, SQLite runs in WAL mode, the same tests pass on a real PostgreSQL
server (started here when its binaries are installed, or CHATFORGE_TEST_POSTGRES_URL), and a hard-killed server
loses nothing it acknowledged."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from sqlalchemy import select, text

from chatforge.store import Store, StoreError
from chatforge.store import models as m


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    url = os.environ.get("CHATFORGE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg: pip install 'psycopg[binary]'")
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL tests skipped: no initdb/pg_ctl (apt-get install postgresql) and no CHATFORGE_TEST_POSTGRES_URL")
    run_as: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="chatforge-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("PostgreSQL tests skipped: running as root and there is no 'postgres' user")
        os.chown(workdir, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = workdir / "data", _free_port()
    try:
        subprocess.run([*run_as, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], check=True,
                       capture_output=True, timeout=120)
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-l", str(workdir / "log"), "-w", "-t", "60", "-o",
                        f"-h 127.0.0.1 -p {port} -k {workdir}", "start"], check=True, capture_output=True, timeout=90)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.skip(f"PostgreSQL tests skipped: could not start a local server ({err})")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'store.db'}")
        yield s
        s.close()
        return
    url = request.getfixturevalue("postgres_url")
    s = Store(url)
    yield s
    s.close()
    _wipe_postgres(url)


def _wipe_postgres(url: str) -> None:
    from sqlalchemy import create_engine

    from chatforge.store.db import normalize_url

    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:  # a clean database for the next test
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


def test_migrations_match_the_models(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), m.Base.metadata)
    assert diff == []
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"


def test_reopening_is_idempotent(store):
    again = Store(store.url)
    again.close()


def test_users_keys_sessions(store):
    user = store.create_user("alice", "s3cret", admin=True)
    with pytest.raises(StoreError, match="already exists"):
        store.create_user("alice")
    key = store.create_api_key(user.id)
    assert store.user_for_key(key)[0].name == "alice" and store.user_for_key(key + "x") is None
    token = store.login("alice", "s3cret")
    assert token and store.login("alice", "wrong") is None and store.login("nobody", "x") is None
    assert store.user_for_session(token).is_admin
    store.logout(token)
    assert store.user_for_session(token) is None
    with store.session() as s:
        row = s.scalar(select(m.User))
        assert "s3cret" not in row.password_hash and row.password_hash.startswith("scrypt$")


def test_conversation_records_round_trip(store):
    user = store.create_user("bob")
    with store.session() as s:
        s.add(m.Conversation(id="c1", user_id=user.id, title="t"))
        s.flush()
        s.add(m.Message(id="u1", conversation_id="c1", seq=0, role="user", content="hi ✓"))
        s.add(m.Message(id="a1", conversation_id="c1", seq=1, role="assistant", content="hello", model="sft-r1"))
        s.flush()
        s.add(m.Feedback(message_id="a1", user_id=user.id, rating=-1, reason="meh"))
        s.add(m.Edit(message_id="a1", user_id=user.id, context=[{"role": "user", "content": "hi ✓"}], original="hello",
                     edited="Hello!", model="sft-r1"))
        s.add(m.Flag(user_id=user.id, conversation_id="c1", stage="input", rule="r", action="flag", text="hi"))
    with store.session() as s:
        assert s.get(m.Message, "u1").content == "hi ✓"
        assert s.scalar(select(m.Edit)).context == [{"role": "user", "content": "hi ✓"}]
        assert s.scalar(select(m.Feedback)).reason == "meh"


def test_sqlite_is_in_wal_mode(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'wal.db'}")
    with s.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL


def test_default_location_is_under_chatforge_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATFORGE_HOME", str(tmp_path / "home"))
    s = Store()
    assert s.url.endswith(str(tmp_path / "home" / "chatforge.db"))
    s.close()


def test_bad_url_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="(?i)could not|can't load|nosuchdb"):
        Store("nosuchdb://x/y")


SERVER = """
import sys, torch
torch.set_num_threads(1)
import uvicorn
from chatforge import models
from chatforge.serve.app import ServeConfig, create_app
from chatforge.store import Store
model, tok = models.build_tiny()
app = create_app(model, tok, Store(sys.argv[1]), ServeConfig(model_name="tiny", default_max_tokens=4, rate_limit_per_minute=0))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_hard_killed_server_loses_nothing_acknowledged(backend, tmp_path, request):
    httpx = pytest.importorskip("httpx")
    url = f"sqlite:///{tmp_path / 'kill.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    store = Store(url)
    store.create_user(f"kim-{backend}", "pw")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, url, str(port)], env={**os.environ, "CHATFORGE_THREADS": "1"})
    try:
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.monotonic() + 120
        while True:
            try:
                if c.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        assert c.post("/auth/login", json={"username": f"kim-{backend}", "password": "pw"}).status_code == 200
        cid = c.post("/api/conversations", json={}).json()["id"]
        acked_messages, acked_feedback = [], []
        for i in range(5):
            with c.stream("POST", f"/api/conversations/{cid}/messages", json={"content": f"message {i}"}) as r:
                for line in r.iter_lines():
                    if '"type": "start"' in line:
                        acked_messages.append(f"message {i}")
                    if '"type": "done"' in line:
                        import json as _json

                        answer = _json.loads(line[6:])["message"]["id"]
                        break
            fb = c.post(f"/api/messages/{answer}/feedback", json={"rating": "up", "reason": f"r{i}"})
            assert fb.status_code == 200
            acked_feedback.append(f"r{i}")
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown handlers, no flush: a hard kill
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    with store.session() as s:
        stored = {x.content for x in s.scalars(select(m.Message).where(m.Message.role == "user"))}
        reasons = {f.reason for f in s.scalars(select(m.Feedback))}
    assert set(acked_messages) <= stored and len(acked_messages) == 5
    assert set(acked_feedback) <= reasons
    store.close()
    if backend == "postgresql":
        _wipe_postgres(url)
