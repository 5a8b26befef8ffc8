"""What users tell us about answers, each committed before its 200: an A/B choice between two answers to the same
turn (the chosen one becomes the conversation's), an edited answer (the conversation continues from it) and a
thumbs up/down with a reason (one current opinion per user and message). `chatforge export` turns them into data.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select

from chatforge.serve.auth import UserDep
from chatforge.serve.conversations import active_messages, context_of, message_dict, own_message, text_field
from chatforge.serve.errors import APIError, read_json
from chatforge.serve.state import StateDep
from chatforge.store import models as m

router = APIRouter(prefix="/api", tags=["feedback"])


@router.post("/comparisons")
async def choose(request: Request, caller: UserDep, state: StateDep) -> dict[str, Any]:
    data = await read_json(request, state.config.max_body_bytes)
    a_id = text_field(data, "message_a", required=True)
    b_id = text_field(data, "message_b", required=True)
    choice = text_field(data, "choice", required=True)
    if choice not in ("a", "b", "tie"):
        raise APIError(400, f"'choice' must be 'a', 'b' or 'tie', got {choice!r}", param="choice",
                       code="invalid_value")

    def run() -> dict[str, Any]:
        with state.store.session() as s:
            a, conv = own_message(s, caller, a_id)  # type: ignore[arg-type]
            b, conv_b = own_message(s, caller, b_id)  # type: ignore[arg-type]
            if conv.id != conv_b.id or a.seq != b.seq or a.id == b.id:
                raise APIError(400, "the two messages must be different answers to the same turn",
                               code="invalid_comparison")
            context = [x.to_dict() for x in context_of(conv, active_messages(s, conv, before_seq=a.seq))]
            row = m.ComparisonChoice(conversation_id=conv.id, user_id=caller.user_id, context=context,
                                     message_a_id=a.id, message_b_id=b.id, text_a=a.content, text_b=b.content,
                                     model_a=a.model, model_b=b.model, choice=choice)
            s.add(row)
            chosen = b if choice == "b" else a
            for x in s.scalars(select(m.Message).where(m.Message.conversation_id == conv.id,
                                                       m.Message.seq == a.seq)):
                x.active = x.id == chosen.id
            s.flush()
            return {"id": row.id, "active": chosen.id}

    return await asyncio.to_thread(run)


@router.post("/messages/{message_id}/edit")
async def edit_message(message_id: str, request: Request, caller: UserDep, state: StateDep) -> dict[str, Any]:
    data = await read_json(request, state.config.max_body_bytes)
    content = text_field(data, "content", required=True)
    assert content is not None
    if not content.strip():
        raise APIError(400, "'content' is empty", param="content", code="invalid_value")

    def run() -> dict[str, Any]:
        with state.store.session() as s:
            msg, conv = own_message(s, caller, message_id)
            if msg.content.strip() == content.strip():
                raise APIError(400, "the edited answer is the same as the original", param="content",
                               code="unchanged")
            context = [x.to_dict() for x in context_of(conv, active_messages(s, conv, before_seq=msg.seq))]
            row = m.Edit(message_id=msg.id, user_id=caller.user_id, context=context, original=msg.content,
                         edited=content, model=msg.model)
            s.add(row)
            msg.content = content  # the conversation continues from the corrected answer
            s.flush()
            return {"id": row.id, "message": message_dict(msg)}

    return await asyncio.to_thread(run)


@router.post("/messages/{message_id}/feedback")
async def feedback(message_id: str, request: Request, caller: UserDep, state: StateDep) -> dict[str, Any]:
    data = await read_json(request, state.config.max_body_bytes)
    rating = text_field(data, "rating", required=True)
    if rating not in ("up", "down"):
        raise APIError(400, f"'rating' must be 'up' or 'down', got {rating!r}", param="rating",
                       code="invalid_value")
    reason = text_field(data, "reason", required=False, max_chars=2000)

    def run() -> dict[str, Any]:
        with state.store.session() as s:
            msg, _ = own_message(s, caller, message_id)
            for old in s.scalars(select(m.Feedback).where(m.Feedback.message_id == msg.id,
                                                          m.Feedback.user_id == caller.user_id)):
                s.delete(old)  # one current opinion per user and message
            row = m.Feedback(message_id=msg.id, user_id=caller.user_id, rating=1 if rating == "up" else -1,
                             reason=(reason or "").strip() or None)
            s.add(row)
            s.flush()
            return {"id": row.id, "rating": rating, "reason": row.reason}

    return await asyncio.to_thread(run)
