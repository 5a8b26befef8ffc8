"""`chatforge chat`: a streaming chat in the terminal with any model chatforge can load.

Interactive on a terminal; with input piped in, each line is one user message (handy for scripts and tests).
Commands: /reset, /save [PATH], /system TEXT, /help, /quit. Ctrl-C stops a reply mid-way (the partial reply
stays in the conversation, as in ChatGPT); Ctrl-C or Ctrl-D at the prompt leaves.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from chatforge import chat
from chatforge.chat import ConversationError, Message
from chatforge.generation import SamplingParams, TorchEngine

HELP = """commands:
  /reset          start a new conversation (keeps the system prompt)
  /save [PATH]    save the conversation as JSON (default: chat-YYYYmmdd-HHMMSS.json)
  /system TEXT    set the system prompt and start a new conversation
  /help           this help
  /quit           leave (Ctrl-D works too)
end a line with \\ to continue the message on the next line"""


@dataclass
class ChatSession:
    """The conversation state, independent of any terminal: what /save writes and /reset clears."""

    engine: TorchEngine
    params: SamplingParams
    model_name: str
    system: str | None = None
    turns: list[Message] = field(default_factory=list)
    max_context_tokens: int = 4096

    def messages(self) -> list[Message]:
        head = [Message("system", self.system)] if self.system else []
        return head + self.turns

    def reset(self) -> None:
        self.turns = []

    def prompt_ids(self) -> tuple[list[int], int]:
        """Token ids for the next reply, dropping the oldest exchanges if the context would overflow.
        Returns (ids, number of messages dropped)."""
        dropped = 0
        while True:
            ids = self.engine.encode_chat(self.messages())
            if len(ids) + self.params.max_new_tokens <= self.max_context_tokens or len(self.turns) <= 1:
                return ids, dropped
            self.turns = self.turns[2:]  # forget the oldest user/assistant exchange
            dropped += 2

    def save(self, path: Path) -> Path:
        record = {
            "model": self.model_name,
            "sampling": asdict(self.params),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "messages": [m.to_dict() for m in self.messages()],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


def _read_message(stdin: TextIO, out: TextIO, interactive: bool) -> str | None:
    lines: list[str] = []
    while True:
        prompt = "you> " if not lines else "...> "
        if interactive and stdin is sys.stdin:
            try:
                line = input(prompt)  # readline gives line editing and history
            except EOFError:
                return "\n".join(lines) if lines else None
        else:
            if interactive:
                out.write(prompt)
                out.flush()
            line = stdin.readline()
            if not line:
                return "\n".join(lines) if lines else None
            line = line.rstrip("\n")
        if line.endswith("\\"):
            lines.append(line[:-1])
            continue
        lines.append(line)
        return "\n".join(lines)


def _reply(session: ChatSession, out: TextIO, interactive: bool) -> None:
    ids, dropped = session.prompt_ids()
    if dropped:
        out.write(f"[the conversation was too long: forgot the oldest {dropped} messages]\n")
    if interactive:
        out.write("assistant> ")
    out.flush()
    parts: list[str] = []
    try:
        for delta in session.engine.stream(ids, session.params):
            parts.append(delta)
            out.write(delta)
            out.flush()
    except KeyboardInterrupt:
        out.write(" [stopped]")
    reply = "".join(parts).strip()
    out.write("\n")
    out.flush()
    # An empty reply cannot enter the history (conversations reject empty messages); keep the turn order intact.
    session.turns.append(Message("assistant", reply or "(no reply)"))


def run_chat(
    session: ChatSession,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    interactive: bool | None = None,
) -> int:
    """The read-reply loop. Returns a process exit code."""
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    if interactive is None:
        interactive = stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (importing it is what turns on line editing for input())
        out.write(f"chatforge chat with {session.model_name}. /help for commands, Ctrl-D to leave.\n")
    while True:
        try:
            text = _read_message(stdin, out, interactive)
        except KeyboardInterrupt:
            out.write("\n")
            return 0
        if text is None:
            if interactive:
                out.write("\n")
            return 0
        command, _, argument = text.strip().partition(" ")
        if command in ("/quit", "/exit"):
            return 0
        if command == "/help":
            out.write(HELP + "\n")
            continue
        if command == "/reset":
            session.reset()
            out.write("[new conversation]\n")
            continue
        if command == "/system":
            session.system = argument.strip() or None
            session.reset()
            out.write("[system prompt set; new conversation]\n" if session.system else "[system prompt cleared]\n")
            continue
        if command == "/save":
            path = Path(argument.strip() or time.strftime("chat-%Y%m%d-%H%M%S.json"))
            try:
                out.write(f"[saved to {session.save(path)}]\n")
            except OSError as err:
                out.write(f"[could not save to {path}: {err}]\n")
            continue
        if command.startswith("/") and " " not in command and len(command) > 1 and not command[1:2].isspace():
            out.write(f"[unknown command {command}; /help lists them]\n")
            continue
        try:
            chat.validate_messages([*session.messages(), Message("user", text)])
        except ConversationError as err:
            out.write(f"[{err}]\n")
            continue
        session.turns.append(Message("user", text))
        _reply(session, out, interactive)


def context_limit(model: Any, fallback: int = 4096) -> int:
    """The model's context window, capped so a CPU chat stays responsive."""
    limit = getattr(model.config, "max_position_embeddings", None) or fallback
    return int(min(limit, 8192))
