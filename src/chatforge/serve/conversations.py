"""The web UI's conversations: list, create, read, rename, delete; send a message and stream the reply;
regenerate an answer (the new one waits inactive for the user's A/B choice, see `chatforge.serve.feedback`).

A user message is committed before the stream acknowledges it, and a stopped reply keeps what the user saw. Every
lookup goes through `own_conversation` / `own_message`: another user's ids answer 404.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select

from chatforge import chat
from chatforge.generation import SamplingParams
from chatforge.serve.auth import Caller, LimitedUserDep, UserDep
from chatforge.serve.backend import Generation, sse
from chatforge.serve.errors import APIError, field_type, read_json
from chatforge.serve.records import log_request, moderate_input, moderate_output
from chatforge.serve.state import AppState, StateDep, now
from chatforge.store import models as m

router = APIRouter(prefix="/api", tags=["conversations"])


def message_dict(msg: m.Message) -> dict[str, Any]:
    return {"id": msg.id, "seq": msg.seq, "role": msg.role, "content": msg.content, "model": msg.model,
            "active": msg.active, "finish_reason": msg.finish_reason, "created_at": msg.created_at.isoformat()}


def conversation_dict(c: m.Conversation) -> dict[str, Any]:
    return {"id": c.id, "title": c.title, "system_prompt": c.system_prompt, "created_at": c.created_at.isoformat(),
            "updated_at": c.updated_at.isoformat()}


def own_conversation(s: Any, caller: Caller, conversation_id: str) -> m.Conversation:
    conv = s.get(m.Conversation, conversation_id)
    if conv is None or conv.user_id != caller.user_id or conv.deleted:
        raise APIError(404, f"conversation {conversation_id!r} not found", code="not_found")
    return conv


def own_message(s: Any, caller: Caller, message_id: str, role: str | None = "assistant") -> tuple[m.Message, m.Conversation]:
    msg = s.get(m.Message, message_id)
    conv = s.get(m.Conversation, msg.conversation_id) if msg is not None else None
    if msg is None or conv is None or conv.user_id != caller.user_id or conv.deleted:
        raise APIError(404, f"message {message_id!r} not found", code="not_found")
    if role is not None and msg.role != role:
        raise APIError(400, f"message {message_id!r} is a {msg.role} message, not an {role} message",
                       code="invalid_message")
    return msg, conv


def active_messages(s: Any, conv: m.Conversation, before_seq: int | None = None) -> list[m.Message]:
    q = select(m.Message).where(m.Message.conversation_id == conv.id, m.Message.active.is_(True))
    if before_seq is not None:
        q = q.where(m.Message.seq < before_seq)
    return list(s.scalars(q.order_by(m.Message.seq)))


def context_of(conv: m.Conversation, msgs: list[m.Message]) -> list[chat.Message]:
    out = [chat.Message("system", conv.system_prompt)] if conv.system_prompt and conv.system_prompt.strip() else []
    return out + [chat.Message(x.role, x.content) for x in msgs]  # type: ignore[arg-type]


def text_field(data: dict[str, Any], name: str, *, required: bool, max_chars: int = 20_000) -> str | None:
    value = field_type(data, name, (str,), "a string", required=required)
    if value is not None and len(value) > max_chars:
        raise APIError(400, f"'{name}' is too long: {len(value)} characters, the limit is {max_chars}",
                       param=name, code="too_long")
    return value


@router.get("/conversations")
async def list_conversations(caller: UserDep, state: StateDep) -> dict[str, Any]:
    def run() -> list[dict[str, Any]]:
        with state.store.session() as s:
            rows = s.scalars(select(m.Conversation).where(
                m.Conversation.user_id == caller.user_id, m.Conversation.deleted.is_(False),
                m.Conversation.source == "ui").order_by(m.Conversation.updated_at.desc()))
            return [conversation_dict(c) for c in rows]

    return {"conversations": await asyncio.to_thread(run)}


@router.post("/conversations")
async def create_conversation(request: Request, caller: UserDep, state: StateDep) -> dict[str, Any]:
    data = await read_json(request, state.config.max_body_bytes)
    title = text_field(data, "title", required=False, max_chars=200) or "New chat"
    system = text_field(data, "system_prompt", required=False)

    def run() -> dict[str, Any]:
        with state.store.session() as s:
            conv = m.Conversation(id=str(uuid.uuid4()), user_id=caller.user_id, title=title, system_prompt=system)
            s.add(conv)
            s.flush()
            return conversation_dict(conv)

    return await asyncio.to_thread(run)


@router.get("/conversations/{conversation_id}")
async def get_conversation(conversation_id: str, caller: UserDep, state: StateDep) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        with state.store.session() as s:
            conv = own_conversation(s, caller, conversation_id)
            msgs = s.scalars(select(m.Message).where(m.Message.conversation_id == conv.id)
                             .order_by(m.Message.seq, m.Message.created_at))
            feedback = {f.message_id: {"rating": f.rating, "reason": f.reason} for f in s.scalars(
                select(m.Feedback).join(m.Message).where(m.Message.conversation_id == conv.id,
                                                         m.Feedback.user_id == caller.user_id))}
            out = conversation_dict(conv)
            out["messages"] = [{**message_dict(x), "feedback": feedback.get(x.id)} for x in msgs]
            return out

    return await asyncio.to_thread(run)


@router.patch("/conversations/{conversation_id}")
async def update_conversation(conversation_id: str, request: Request, caller: UserDep, state: StateDep) -> dict[str, Any]:
    data = await read_json(request, state.config.max_body_bytes)
    title = text_field(data, "title", required=False, max_chars=200)
    if title is not None and not title.strip():
        raise APIError(400, "'title' is empty", param="title", code="invalid_value")
    system = text_field(data, "system_prompt", required=False)

    def run() -> dict[str, Any]:
        with state.store.session() as s:
            conv = own_conversation(s, caller, conversation_id)
            if title is not None:
                conv.title = title.strip()
            if "system_prompt" in data:
                conv.system_prompt = system or None
            conv.updated_at = now()
            return conversation_dict(conv)

    return await asyncio.to_thread(run)


@router.delete("/conversations/{conversation_id}")
async def delete_conversation(conversation_id: str, caller: UserDep, state: StateDep) -> dict[str, Any]:
    def run() -> None:
        with state.store.session() as s:
            own_conversation(s, caller, conversation_id).deleted = True

    await asyncio.to_thread(run)
    return {"deleted": conversation_id}


@router.post("/conversations/{conversation_id}/messages")
async def send_message(conversation_id: str, request: Request, caller: LimitedUserDep, state: StateDep) -> Response:
    data = await read_json(request, state.config.max_body_bytes)
    content = text_field(data, "content", required=True)
    assert content is not None
    if not content.strip():
        raise APIError(400, "'content' is empty", param="content", code="invalid_value")

    def prepare() -> tuple[list[chat.Message], int]:
        with state.store.session() as s:
            conv = own_conversation(s, caller, conversation_id)
            msgs = active_messages(s, conv)
            return [*context_of(conv, msgs), chat.Message("user", content)], (msgs[-1].seq + 1 if msgs else 0)

    context, seq = await asyncio.to_thread(prepare)
    if seq % 2 == 1:
        raise APIError(400, "the last message has no reply yet", code="invalid_state")
    state.encode_chat(context, "content")
    await moderate_input(state, caller, context, conversation_id)

    def save_user() -> dict[str, Any]:
        with state.store.session() as s:
            conv = own_conversation(s, caller, conversation_id)
            msg = m.Message(id=str(uuid.uuid4()), conversation_id=conv.id, seq=seq, role="user", content=content)
            s.add(msg)
            if seq == 0 and conv.title == "New chat":
                conv.title = content.strip().splitlines()[0][:60]
            conv.updated_at = now()
            s.flush()
            return message_dict(msg)

    user_msg = await asyncio.to_thread(save_user)  # committed before the user sees it acknowledged
    return reply_stream(state, caller, conversation_id, context, seq + 1, True,
                        {"type": "start", "user_message": user_msg})


@router.post("/messages/{message_id}/regenerate")
async def regenerate(message_id: str, caller: LimitedUserDep, state: StateDep) -> Response:
    def prepare() -> tuple[list[chat.Message], int, str]:
        with state.store.session() as s:
            msg, conv = own_message(s, caller, message_id)
            return context_of(conv, active_messages(s, conv, before_seq=msg.seq)), msg.seq, conv.id

    context, seq, conv_id = await asyncio.to_thread(prepare)
    # The new answer stays inactive until the user picks it in the A/B choice.
    return reply_stream(state, caller, conv_id, context, seq, False, {"type": "start", "alternative_to": message_id})


def reply_stream(state: AppState, caller: Caller, conv_id: str, context: list[chat.Message], seq: int,
                 active: bool, start_event: dict[str, Any]) -> StreamingResponse:
    """Stream the assistant's reply to ``context`` as events (start, delta..., done | error), storing it as
    message ``seq`` of the conversation; a reply stopped by the user keeps the part they saw."""
    cfg = state.config
    prompt_ids = state.encode_chat(context)
    room = min(cfg.default_max_tokens, state.context_limit - len(prompt_ids))
    if room < 1:
        raise APIError(400, "the conversation fills the model's context; start a new chat",
                       code="context_length_exceeded")
    params = SamplingParams(max_new_tokens=room, temperature=cfg.ui_temperature, top_p=0.95)
    gen = Generation.one(state.backend, prompt_ids, params)
    message_id = str(uuid.uuid4())

    def save(text: str, reason: str, n_tokens: int) -> dict[str, Any]:
        with state.store.session() as s:
            msg = m.Message(id=message_id, conversation_id=conv_id, seq=seq, role="assistant", content=text,
                            model=cfg.model_name, active=active, finish_reason=reason,
                            prompt_tokens=len(prompt_ids), completion_tokens=n_tokens)
            s.add(msg)
            conv = s.get(m.Conversation, conv_id)
            if conv is not None:
                conv.updated_at = now()
            s.flush()
            return message_dict(msg)

    async def events() -> AsyncIterator[str]:
        text: list[str] = []
        saved = False
        try:
            yield sse(start_event)
            async for delta in gen.deltas():
                text.append(delta)
                yield sse({"type": "delta", "text": delta})
            c = gen.result.completion
            assert c is not None
            reply = c.text if c.text.strip() else "(empty reply)"
            msg = await asyncio.to_thread(save, reply, c.finish_reason or "stop", len(c.token_ids))
            saved = True
            await moderate_output(state, caller, context, reply, conversation_id=conv_id, message_id=message_id)
            await asyncio.to_thread(log_request, state, caller, "ui", 200, gen.results, len(prompt_ids))
            yield sse({"type": "done", "message": msg})
        except RuntimeError as err:
            yield sse({"type": "error", "message": str(err)})
        finally:
            if not saved:
                gen.cancel()
                partial = "".join(text)
                if partial.strip():  # a stopped reply keeps what the user saw
                    await asyncio.shield(asyncio.to_thread(save, partial, "cancelled", len(partial)))

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
