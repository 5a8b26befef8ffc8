"""What a generating route records besides the conversation: the request log (monitoring) and moderation flags.

Moderation runs on the user's last message before generating (a "block" rule refuses the request with a 400) and on
the reply after it (output rules only flag: a streamed reply cannot be taken back). Every hit is stored as a flag.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from chatforge import chat
from chatforge.serve.auth import Caller
from chatforge.serve.backend import GenResult
from chatforge.serve.errors import APIError
from chatforge.serve.state import AppState
from chatforge.store import models as m

log = logging.getLogger("chatforge.serve")


def log_request(state: AppState, caller: Caller | None, endpoint: str, status: int, results: list[GenResult],
                prompt_tokens: int) -> None:
    """One row per HTTP request: its tokens over every choice, the slowest choice's latency, the first token."""
    ttfts = [r.ttft for r in results if r.ttft is not None]
    with state.store.session() as s:
        s.add(m.RequestLog(user_id=caller.user_id if caller else None, endpoint=endpoint,
                           model=state.config.model_name, status=status, prompt_tokens=prompt_tokens,
                           completion_tokens=sum(len(r.completion.token_ids) for r in results if r.completion),
                           latency_ms=1000 * max((r.latency for r in results), default=0.0),
                           ttft_ms=1000 * min(ttfts) if ttfts else None))


def record_flags(state: AppState, hits: list[Any], caller: Caller, text: str, *, context: list[dict[str, str]] | None,
                 conversation_id: str | None = None, message_id: str | None = None, end_user: str | None = None) -> None:
    if not hits:
        return
    if end_user is not None:  # the API's `user` field: which of the caller's own users sent it
        for hit in hits:
            log.warning("moderation rule %r (%s, %s) hit on a request of API user %r for end user %r", hit.rule,
                        hit.stage, hit.action, caller.name, end_user)
    with state.store.session() as s:
        for hit in hits:
            s.add(m.Flag(user_id=caller.user_id, conversation_id=conversation_id, message_id=message_id,
                         stage=hit.stage, rule=hit.rule, action=hit.action, text=text, context=context,
                         model=state.config.model_name))


async def moderate_input(state: AppState, caller: Caller, messages: list[chat.Message],
                         conversation_id: str | None = None, end_user: str | None = None) -> None:
    last = messages[-1].content if messages else ""
    hits = state.config.moderation.check(last, "input")
    if hits:
        context = [x.to_dict() for x in messages[:-1]]
        await asyncio.to_thread(record_flags, state, hits, caller, last, context=context,
                                conversation_id=conversation_id, end_user=end_user)
        blocked = [h.rule for h in hits if h.action == "block"]
        if blocked:
            raise APIError(400, f"the message was blocked by moderation rule '{blocked[0]}'", param="messages",
                           code="content_policy_violation")


async def moderate_output(state: AppState, caller: Caller, messages: list[chat.Message], text: str, *,
                          conversation_id: str | None = None, message_id: str | None = None,
                          end_user: str | None = None) -> None:
    hits = state.config.moderation.check(text, "output")
    if hits:
        await asyncio.to_thread(record_flags, state, hits, caller, text, context=[x.to_dict() for x in messages],
                                conversation_id=conversation_id, message_id=message_id, end_user=end_user)
