"""What a generating route records besides the conversation: the request log (monitoring) and moderation flags.

Moderation runs on the user's last message before generating (a "block" rule refuses the request with a 400) and on
the reply after it (output rules only flag: a streamed reply cannot be taken back). Every hit is stored as a flag.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chatforge import chat
from chatforge.serve.auth import Caller
from chatforge.serve.backend import GenResult
from chatforge.serve.errors import APIError
from chatforge.serve.state import AppState
from chatforge.store import models as m


def log_request(state: AppState, caller: Caller | None, endpoint: str, status: int, result: GenResult | None,
                prompt_tokens: int) -> None:
    c = result.completion if result else None
    with state.store.session() as s:
        s.add(m.RequestLog(user_id=caller.user_id if caller else None, endpoint=endpoint,
                           model=state.config.model_name, status=status, prompt_tokens=prompt_tokens,
                           completion_tokens=len(c.token_ids) if c else 0,
                           latency_ms=1000 * (result.latency if result else 0.0),
                           ttft_ms=1000 * result.ttft if result and result.ttft is not None else None))


def record_flags(state: AppState, hits: list[Any], caller: Caller, text: str, *, context: list[dict[str, str]] | None,
                 conversation_id: str | None = None, message_id: str | None = None) -> None:
    if not hits:
        return
    with state.store.session() as s:
        for hit in hits:
            s.add(m.Flag(user_id=caller.user_id, conversation_id=conversation_id, message_id=message_id,
                         stage=hit.stage, rule=hit.rule, action=hit.action, text=text, context=context,
                         model=state.config.model_name))


async def moderate_input(state: AppState, caller: Caller, messages: list[chat.Message],
                         conversation_id: str | None = None) -> None:
    last = messages[-1].content if messages else ""
    hits = state.config.moderation.check(last, "input")
    if hits:
        context = [x.to_dict() for x in messages[:-1]]
        await asyncio.to_thread(record_flags, state, hits, caller, last, context=context,
                                conversation_id=conversation_id)
        blocked = [h.rule for h in hits if h.action == "block"]
        if blocked:
            raise APIError(400, f"the message was blocked by moderation rule '{blocked[0]}'", param="messages",
                           code="content_policy_violation")


async def moderate_output(state: AppState, caller: Caller, messages: list[chat.Message], text: str, *,
                          conversation_id: str | None = None, message_id: str | None = None) -> None:
    hits = state.config.moderation.check(text, "output")
    if hits:
        await asyncio.to_thread(record_flags, state, hits, caller, text, context=[x.to_dict() for x in messages],
                                conversation_id=conversation_id, message_id=message_id)
