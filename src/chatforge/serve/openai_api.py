"""The OpenAI-compatible API: ``GET /v1/models`` and ``POST /v1/chat/completions`` (streamed as server-sent events
or not), authenticated by API key. Works unchanged with the official ``openai`` client.

A completed API exchange is stored as a conversation (source "api") after the reply, and logged for monitoring.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from chatforge import chat
from chatforge.generation import Completion, SamplingParams
from chatforge.serve.auth import ApiCallerDep, Caller
from chatforge.serve.backend import Generation, sse, until_disconnect
from chatforge.serve.errors import APIError, field_type, read_json
from chatforge.serve.records import log_request, moderate_input, moderate_output
from chatforge.serve.state import AppState, StateDep
from chatforge.store import models as m

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models")
async def list_models(_: ApiCallerDep, state: StateDep) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": state.config.model_name, "object": "model",
                                        "created": int(state.started), "owned_by": "chatforge"}]}


def parse_completion_request(state: AppState, data: dict[str, Any]) -> tuple[list[chat.Message], SamplingParams, bool, bool]:
    cfg = state.config
    known = {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
             "top_p", "top_k", "stop", "seed", "n", "user", "frequency_penalty", "presence_penalty", "logprobs",
             "metadata", "store", "response_format", "tools", "tool_choice", "parallel_tool_calls"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise APIError(400, f"unknown field '{unknown[0]}'", param=unknown[0], code="unknown_field")
    model_name = field_type(data, "model", (str,), "a string", required=True)
    if model_name != cfg.model_name:
        raise APIError(404, f"model '{model_name}' is not served here; available: {cfg.model_name}",
                       param="model", code="model_not_found")
    if data.get("tools"):
        raise APIError(400, "tool calls are not supported", param="tools", code="unsupported")
    raw = field_type(data, "messages", (list,), "a list of {role, content} objects", required=True)
    if not raw:
        raise APIError(400, "'messages' is empty: it needs at least one user message", param="messages",
                       code="invalid_messages")
    normalized = []
    for i, item in enumerate(raw):
        if isinstance(item, dict):
            item = dict(item)
            if item.get("role") == "developer":
                item["role"] = "system"
            content = item.get("content")
            if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
                parts = []
                for part in content:
                    if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                        raise APIError(400, f"message {i}: only text content parts are supported",
                                       param=f"messages.{i}.content", code="invalid_messages")
                    parts.append(part["text"])
                item["content"] = "".join(parts)
            extra = sorted(set(item) - {"role", "content", "name"})
            if extra:
                raise APIError(400, f"message {i}: unsupported field '{extra[0]}'", param=f"messages.{i}",
                               code="invalid_messages")
        normalized.append(item)
    try:
        messages = chat.parse_messages(normalized)
    except chat.ConversationError as err:
        raise APIError(400, str(err), param="messages", code="invalid_messages") from None
    n = field_type(data, "n", (int,), "an integer")
    if n not in (None, 1):
        raise APIError(400, "only n=1 is supported", param="n", code="unsupported")
    stream = field_type(data, "stream", (bool,), "a boolean") or False
    options = field_type(data, "stream_options", (dict,), "an object") or {}
    include_usage = bool(options.get("include_usage", False))
    max_tokens = field_type(data, "max_completion_tokens", (int,), "an integer")
    if max_tokens is None:
        max_tokens = field_type(data, "max_tokens", (int,), "an integer")
    if max_tokens is None:
        max_tokens = cfg.default_max_tokens
    if not 1 <= max_tokens <= cfg.max_new_tokens:
        raise APIError(400, f"max_tokens must be between 1 and {cfg.max_new_tokens}, got {max_tokens}",
                       param="max_tokens", code="invalid_value")
    temperature = field_type(data, "temperature", (int, float), "a number")
    temperature = 1.0 if temperature is None else float(temperature)
    if not 0 <= temperature <= 2:
        raise APIError(400, f"temperature must be between 0 and 2, got {temperature}", param="temperature",
                       code="invalid_value")
    top_p = field_type(data, "top_p", (int, float), "a number")
    top_p = 1.0 if top_p is None else float(top_p)
    if not 0 < top_p <= 1:
        raise APIError(400, f"top_p must be in (0, 1], got {top_p}", param="top_p", code="invalid_value")
    top_k = field_type(data, "top_k", (int,), "an integer") or 0
    if top_k < 0:
        raise APIError(400, "top_k must be >= 0", param="top_k", code="invalid_value")
    stop = data.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,) if stop else ()
    elif isinstance(stop, list) and all(isinstance(s, str) and s for s in stop) and len(stop) <= 4:
        stops = tuple(stop)
    else:
        raise APIError(400, "stop must be a non-empty string or a list of up to 4 non-empty strings",
                       param="stop", code="invalid_type")
    seed = field_type(data, "seed", (int,), "an integer")
    params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                            stop=stops, seed=seed)
    return messages, params, stream, include_usage


@router.post("/chat/completions")
async def chat_completions(request: Request, caller: ApiCallerDep, state: StateDep) -> Response:
    cfg = state.config
    data = await read_json(request, cfg.max_body_bytes)
    messages, params, stream, include_usage = parse_completion_request(state, data)
    prompt_ids = state.encode_chat(messages)
    if len(prompt_ids) + params.max_new_tokens > state.context_limit:
        raise APIError(400, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({params.max_new_tokens}) exceeds "
                       f"the model's context of {state.context_limit} tokens", param="max_tokens",
                       code="context_length_exceeded")
    await moderate_input(state, caller, messages)
    gen = Generation(state.backend, prompt_ids, params)
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())

    def usage() -> dict[str, int]:
        c = gen.result.completion
        n_out = len(c.token_ids) if c else 0
        return {"prompt_tokens": len(prompt_ids), "completion_tokens": n_out,
                "total_tokens": len(prompt_ids) + n_out}

    async def finish(status: int) -> None:
        c = gen.result.completion
        await asyncio.to_thread(log_request, state, caller, "api", status, gen.result, len(prompt_ids))
        if c is not None and c.finish_reason != "cancelled":
            await asyncio.to_thread(save_api_conversation, state, caller, messages, c)
            await moderate_output(state, caller, messages, c.text)

    if not stream:
        text = []
        try:
            async for delta in until_disconnect(request, gen):
                text.append(delta)
        except RuntimeError as err:
            raise APIError(500, str(err), code="generation_failed") from None
        c = gen.result.completion
        if c is None:  # client went away
            await asyncio.to_thread(log_request, state, caller, "api", 499, gen.result, len(prompt_ids))
            return Response(status_code=499)
        await finish(200)
        return JSONResponse({
            "id": rid, "object": "chat.completion", "created": created, "model": cfg.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                         "finish_reason": c.finish_reason, "logprobs": None}],
            "usage": usage(),
        })

    async def events() -> AsyncIterator[str]:
        base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": cfg.model_name}
        yield sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "finish_reason": None}]})
        try:
            async for delta in gen.deltas():
                yield sse({**base, "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": None}]})
        except RuntimeError as err:
            yield sse({"error": {"message": str(err), "type": "server_error", "param": None, "code": None}})
            return
        finally:
            if gen.result.completion is None or gen.result.completion.finish_reason == "cancelled":
                gen.cancel()
                await asyncio.shield(asyncio.to_thread(log_request, state, caller, "api", 499, gen.result,
                                                       len(prompt_ids)))
        c = gen.result.completion
        assert c is not None
        chunk: dict[str, Any] = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": c.finish_reason}]}
        yield sse(chunk)
        if include_usage:
            yield sse({**base, "choices": [], "usage": usage()})
        yield "data: [DONE]\n\n"
        await finish(200)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def save_api_conversation(state: AppState, caller: Caller, messages: list[chat.Message], c: Completion) -> None:
    with state.store.session() as s:
        conv = m.Conversation(id=str(uuid.uuid4()), user_id=caller.user_id, source="api",
                              title=messages[-1].content[:80].strip() or "API chat",
                              system_prompt=messages[0].content if messages[0].role == "system" else None)
        s.add(conv)
        s.flush()
        turns = [x for x in messages if x.role != "system"]
        for i, msg in enumerate(turns):
            s.add(m.Message(id=str(uuid.uuid4()), conversation_id=conv.id, seq=i, role=msg.role,
                            content=msg.content))
        s.add(m.Message(id=str(uuid.uuid4()), conversation_id=conv.id, seq=len(turns), role="assistant",
                        content=c.text, model=state.config.model_name, finish_reason=c.finish_reason,
                        prompt_tokens=len(c.prompt_ids), completion_tokens=len(c.token_ids)))
