"""The chat product: an OpenAI-compatible API, the web chat UI and the operators' monitoring page, in one FastAPI app.

Generation goes through one `ContinuousBatcher` (or, as a baseline, `SerialServer`); every request is a
`GenRequest` whose events cross from the scheduler thread to the event loop through an asyncio queue. Whatever is
acknowledged to a user (a stored message id, a 200 on feedback) has been committed to the store first.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func, select
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatforge import chat
from chatforge.generation import Completion, SamplingParams
from chatforge.serve.batcher import ContinuousBatcher, GenRequest, SerialServer, context_limit
from chatforge.serve.errors import APIError, error_response, field_type, read_json
from chatforge.serve.moderation import Moderator
from chatforge.store import Store
from chatforge.store import models as m

STATIC = Path(__file__).parent / "static"
COOKIE = "cf_session"


@dataclass
class ServeConfig:
    model_name: str = "chatforge"
    max_body_bytes: int = 1_000_000
    max_prompt_tokens: int | None = None  # default: the model's context minus room for the reply
    max_new_tokens: int = 512  # the most a request may ask for
    default_max_tokens: int = 256
    rate_limit_per_minute: int = 120  # requests per minute per API key / session user; 0 = off
    max_batch: int = 32
    batching: str = "continuous"  # continuous | serial (the baseline)
    decoder: str = "auto"  # auto | lean | transformers (chatforge.generation.TorchEngine)
    ui_temperature: float = 0.7
    secure_cookies: bool = False
    moderation: Moderator = field(default_factory=Moderator)


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests a minute, bursts up to the same number."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> float | None:
        """None when allowed, else seconds until the next request would be."""
        if self.per_minute <= 0:
            return None
        now = time.monotonic()
        rate = self.per_minute / 60.0
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return (1 - tokens) / rate
            self._buckets[key] = (tokens - 1, now)
            return None


@dataclass
class Caller:
    user_id: int
    name: str
    is_admin: bool
    limit_key: str


@dataclass
class GenResult:
    completion: Completion | None = None
    ttft: float | None = None
    latency: float = 0.0


class Generation:
    """Bridges one GenRequest to the event loop: iterate for text deltas; ``result`` holds the completion."""

    def __init__(self, scheduler: Any, prompt_ids: list[int], params: SamplingParams) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.result = GenResult()
        self.start = time.perf_counter()
        self.request = GenRequest(prompt_ids, params, self._on_event, self._on_error)
        scheduler.submit(self.request)

    def _on_event(self, delta: str, finished: Completion | None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("event", (delta, finished)))

    def _on_error(self, err: BaseException) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("error", err))

    def cancel(self) -> None:
        self.request.cancel()

    async def deltas(self) -> AsyncIterator[str]:
        try:
            while True:
                kind, payload = await self.queue.get()
                if kind == "error":
                    raise RuntimeError(f"generation failed: {payload}")
                delta, finished = payload
                if self.result.ttft is None and (delta or finished is not None):
                    self.result.ttft = time.perf_counter() - self.start
                if delta:
                    yield delta
                if finished is not None:
                    self.result.completion = finished
                    self.result.latency = time.perf_counter() - self.start
                    return
        finally:
            if self.result.completion is None:
                self.request.cancel()


def _now() -> datetime:
    return datetime.now(UTC)


def _message_dict(msg: m.Message) -> dict[str, Any]:
    return {"id": msg.id, "seq": msg.seq, "role": msg.role, "content": msg.content, "model": msg.model,
            "active": msg.active, "finish_reason": msg.finish_reason, "created_at": msg.created_at.isoformat()}


def _conversation_dict(c: m.Conversation) -> dict[str, Any]:
    return {"id": c.id, "title": c.title, "system_prompt": c.system_prompt, "created_at": c.created_at.isoformat(),
            "updated_at": c.updated_at.isoformat()}


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(model: Any, tokenizer: Any, store: Store, config: ServeConfig | None = None) -> FastAPI:
    cfg = config or ServeConfig()
    limit = context_limit(model)
    max_prompt = cfg.max_prompt_tokens or max(1, limit - cfg.max_new_tokens)
    if cfg.batching == "continuous":
        scheduler: Any = ContinuousBatcher(model, tokenizer, max_batch=cfg.max_batch, decoder=cfg.decoder)  # type: ignore[arg-type]
    elif cfg.batching == "serial":
        scheduler = SerialServer(model, tokenizer, decoder=cfg.decoder)  # type: ignore[arg-type]
    else:
        raise ValueError(f"batching must be 'continuous' or 'serial', got {cfg.batching!r}")
    limiter = RateLimiter(cfg.rate_limit_per_minute)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()

    app = FastAPI(title="chatforge", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.scheduler, app.state.store, app.state.config = scheduler, store, cfg
    started = time.time()

    # ---- errors: always JSON, never a bare 500 ---------------------------------------------------------------

    @app.exception_handler(APIError)
    async def _api_error(_: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        message = {404: "not found", 405: "method not allowed"}.get(err.status_code, str(err.detail))
        return error_response(err.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error_response(400, f"{where or 'request'}: {first.get('msg', 'invalid request')}", param=where or None)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(err).__name__}", code="internal_error")

    # ---- auth ----------------------------------------------------------------------------------------------

    def _caller(request: Request, *, allow_cookie: bool = True) -> Caller:
        auth = request.headers.get("authorization")
        if auth:
            scheme, _, key = auth.partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                raise APIError(401, "Authorization must be 'Bearer <API key>'", code="invalid_api_key")
            found = store.user_for_key(key.strip())
            if found is None:
                raise APIError(401, "invalid or revoked API key", code="invalid_api_key")
            user, key_id = found
            caller = Caller(user.id, user.name, user.is_admin, f"key:{key_id}")
        else:
            token = request.cookies.get(COOKIE) if allow_cookie else None
            session_user = store.user_for_session(token) if token else None
            if session_user is None:
                raise APIError(401, "not signed in: send 'Authorization: Bearer <API key>' or log in",
                               code="unauthenticated")
            caller = Caller(session_user.id, session_user.name, session_user.is_admin, f"user:{session_user.id}")
        return caller

    async def caller_for(request: Request, *, allow_cookie: bool = True, limited: bool = False) -> Caller:
        caller = await asyncio.to_thread(_caller, request, allow_cookie=allow_cookie)
        if limited:
            wait = limiter.check(caller.limit_key)
            if wait is not None:
                raise APIError(429, f"rate limit of {cfg.rate_limit_per_minute} requests per minute exceeded; "
                               f"retry in {wait:.1f}s", code="rate_limit_exceeded",
                               headers={"Retry-After": str(max(1, round(wait)))})
        return caller

    @app.post("/auth/login")
    async def login(request: Request) -> Response:
        data = await read_json(request, cfg.max_body_bytes)
        name = field_type(data, "username", (str,), "a string", required=True)
        password = field_type(data, "password", (str,), "a string", required=True)
        token = await asyncio.to_thread(store.login, name, password)
        if token is None:
            raise APIError(401, "wrong user name or password", code="invalid_credentials")
        response = JSONResponse({"user": name})
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=cfg.secure_cookies,
                            max_age=14 * 24 * 3600)
        return response

    @app.post("/auth/logout")
    async def logout(request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        if token:
            await asyncio.to_thread(store.logout, token)
        response = JSONResponse({"ok": True})
        response.delete_cookie(COOKIE)
        return response

    @app.get("/api/me")
    async def me(request: Request) -> dict[str, Any]:
        caller = await caller_for(request)
        return {"user": caller.name, "is_admin": caller.is_admin, "model": cfg.model_name}

    # ---- generation helpers ----------------------------------------------------------------------------------

    def encode(messages: list[chat.Message], param: str = "messages") -> list[int]:
        try:
            chat.validate_messages(messages, last="user")
        except chat.ConversationError as err:
            raise APIError(400, str(err), param=param, code="invalid_messages") from None
        ids = chat.encode_prompt(tokenizer, messages)
        if len(ids) > max_prompt:
            raise APIError(400, f"the prompt is {len(ids)} tokens; the limit is {max_prompt}", param=param,
                           code="context_length_exceeded")
        return ids

    def log_request(caller: Caller | None, endpoint: str, status: int, result: GenResult | None, prompt_tokens: int) -> None:
        c = result.completion if result else None
        with store.session() as s:
            s.add(m.RequestLog(user_id=caller.user_id if caller else None, endpoint=endpoint, model=cfg.model_name,
                               status=status, prompt_tokens=prompt_tokens,
                               completion_tokens=len(c.token_ids) if c else 0,
                               latency_ms=1000 * (result.latency if result else 0.0),
                               ttft_ms=1000 * result.ttft if result and result.ttft is not None else None))

    def record_flags(hits: list[Any], caller: Caller, text: str, *, context: list[dict[str, str]] | None,
                     conversation_id: str | None = None, message_id: str | None = None) -> None:
        if not hits:
            return
        with store.session() as s:
            for hit in hits:
                s.add(m.Flag(user_id=caller.user_id, conversation_id=conversation_id, message_id=message_id,
                             stage=hit.stage, rule=hit.rule, action=hit.action, text=text, context=context,
                             model=cfg.model_name))

    async def moderate_input(caller: Caller, messages: list[chat.Message], conversation_id: str | None = None) -> None:
        last = messages[-1].content if messages else ""
        hits = cfg.moderation.check(last, "input")
        if hits:
            context = [x.to_dict() for x in messages[:-1]]
            await asyncio.to_thread(record_flags, hits, caller, last, context=context, conversation_id=conversation_id)
            blocked = [h.rule for h in hits if h.action == "block"]
            if blocked:
                raise APIError(400, f"the message was blocked by moderation rule '{blocked[0]}'", param="messages",
                               code="content_policy_violation")

    async def moderate_output(caller: Caller, messages: list[chat.Message], text: str, *,
                              conversation_id: str | None = None, message_id: str | None = None) -> None:
        hits = cfg.moderation.check(text, "output")
        if hits:
            await asyncio.to_thread(record_flags, hits, caller, text, context=[x.to_dict() for x in messages],
                                    conversation_id=conversation_id, message_id=message_id)

    # ---- OpenAI-compatible API -------------------------------------------------------------------------------

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        await caller_for(request)
        return {"object": "list", "data": [{"id": cfg.model_name, "object": "model", "created": int(started),
                                            "owned_by": "chatforge"}]}

    def parse_completion_request(data: dict[str, Any]) -> tuple[list[chat.Message], SamplingParams, bool, bool]:
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

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        caller = await caller_for(request, allow_cookie=False, limited=True)
        data = await read_json(request, cfg.max_body_bytes)
        messages, params, stream, include_usage = parse_completion_request(data)
        prompt_ids = encode(messages)
        if len(prompt_ids) + params.max_new_tokens > limit:
            raise APIError(400, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({params.max_new_tokens}) exceeds "
                           f"the model's context of {limit} tokens", param="max_tokens", code="context_length_exceeded")
        await moderate_input(caller, messages)
        gen = Generation(scheduler, prompt_ids, params)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def usage() -> dict[str, int]:
            c = gen.result.completion
            n_out = len(c.token_ids) if c else 0
            return {"prompt_tokens": len(prompt_ids), "completion_tokens": n_out,
                    "total_tokens": len(prompt_ids) + n_out}

        async def finish(status: int) -> None:
            c = gen.result.completion
            await asyncio.to_thread(log_request, caller, "api", status, gen.result, len(prompt_ids))
            if c is not None and c.finish_reason != "cancelled":
                await asyncio.to_thread(save_api_conversation, caller, messages, c)
                await moderate_output(caller, messages, c.text)

        if not stream:
            text = []
            try:
                async for delta in _until_disconnect(request, gen):
                    text.append(delta)
            except RuntimeError as err:
                raise APIError(500, str(err), code="generation_failed") from None
            c = gen.result.completion
            if c is None:  # client went away
                await asyncio.to_thread(log_request, caller, "api", 499, gen.result, len(prompt_ids))
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
            yield _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                             "finish_reason": None}]})
            try:
                async for delta in gen.deltas():
                    yield _sse({**base, "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": None}]})
            except RuntimeError as err:
                yield _sse({"error": {"message": str(err), "type": "server_error", "param": None, "code": None}})
                return
            finally:
                if gen.result.completion is None or gen.result.completion.finish_reason == "cancelled":
                    gen.cancel()
                    await asyncio.shield(asyncio.to_thread(log_request, caller, "api", 499, gen.result, len(prompt_ids)))
            c = gen.result.completion
            assert c is not None
            chunk: dict[str, Any] = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": c.finish_reason}]}
            yield _sse(chunk)
            if include_usage:
                yield _sse({**base, "choices": [], "usage": usage()})
            yield "data: [DONE]\n\n"
            await finish(200)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def save_api_conversation(caller: Caller, messages: list[chat.Message], c: Completion) -> None:
        with store.session() as s:
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
                            content=c.text, model=cfg.model_name, finish_reason=c.finish_reason,
                            prompt_tokens=len(c.prompt_ids), completion_tokens=len(c.token_ids)))

    # ---- the UI's API: conversations, messages, feedback -----------------------------------------------------

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

    @app.get("/api/conversations")
    async def list_conversations(request: Request) -> dict[str, Any]:
        caller = await caller_for(request)

        def run() -> list[dict[str, Any]]:
            with store.session() as s:
                rows = s.scalars(select(m.Conversation).where(
                    m.Conversation.user_id == caller.user_id, m.Conversation.deleted.is_(False),
                    m.Conversation.source == "ui").order_by(m.Conversation.updated_at.desc()))
                return [_conversation_dict(c) for c in rows]

        return {"conversations": await asyncio.to_thread(run)}

    @app.post("/api/conversations")
    async def create_conversation(request: Request) -> dict[str, Any]:
        caller = await caller_for(request)
        data = await read_json(request, cfg.max_body_bytes)
        title = text_field(data, "title", required=False, max_chars=200) or "New chat"
        system = text_field(data, "system_prompt", required=False)

        def run() -> dict[str, Any]:
            with store.session() as s:
                conv = m.Conversation(id=str(uuid.uuid4()), user_id=caller.user_id, title=title, system_prompt=system)
                s.add(conv)
                s.flush()
                return _conversation_dict(conv)

        return await asyncio.to_thread(run)

    @app.get("/api/conversations/{conversation_id}")
    async def get_conversation(conversation_id: str, request: Request) -> dict[str, Any]:
        caller = await caller_for(request)

        def run() -> dict[str, Any]:
            with store.session() as s:
                conv = own_conversation(s, caller, conversation_id)
                msgs = s.scalars(select(m.Message).where(m.Message.conversation_id == conv.id)
                                 .order_by(m.Message.seq, m.Message.created_at))
                feedback = {f.message_id: {"rating": f.rating, "reason": f.reason} for f in s.scalars(
                    select(m.Feedback).join(m.Message).where(m.Message.conversation_id == conv.id,
                                                             m.Feedback.user_id == caller.user_id))}
                out = _conversation_dict(conv)
                out["messages"] = [{**_message_dict(x), "feedback": feedback.get(x.id)} for x in msgs]
                return out

        return await asyncio.to_thread(run)

    @app.patch("/api/conversations/{conversation_id}")
    async def update_conversation(conversation_id: str, request: Request) -> dict[str, Any]:
        caller = await caller_for(request)
        data = await read_json(request, cfg.max_body_bytes)
        title = text_field(data, "title", required=False, max_chars=200)
        if title is not None and not title.strip():
            raise APIError(400, "'title' is empty", param="title", code="invalid_value")
        system = text_field(data, "system_prompt", required=False)

        def run() -> dict[str, Any]:
            with store.session() as s:
                conv = own_conversation(s, caller, conversation_id)
                if title is not None:
                    conv.title = title.strip()
                if "system_prompt" in data:
                    conv.system_prompt = system or None
                conv.updated_at = _now()
                return _conversation_dict(conv)

        return await asyncio.to_thread(run)

    @app.delete("/api/conversations/{conversation_id}")
    async def delete_conversation(conversation_id: str, request: Request) -> dict[str, Any]:
        caller = await caller_for(request)

        def run() -> None:
            with store.session() as s:
                own_conversation(s, caller, conversation_id).deleted = True

        await asyncio.to_thread(run)
        return {"deleted": conversation_id}

    def ui_stream(request: Request, caller: Caller, conv_id: str, context: list[chat.Message], seq: int,
                  active: bool, start_event: dict[str, Any]) -> StreamingResponse:
        prompt_ids = encode(context)
        room = min(cfg.default_max_tokens, limit - len(prompt_ids))
        if room < 1:
            raise APIError(400, "the conversation fills the model's context; start a new chat",
                           code="context_length_exceeded")
        params = SamplingParams(max_new_tokens=room, temperature=cfg.ui_temperature, top_p=0.95)
        gen = Generation(scheduler, prompt_ids, params)
        message_id = str(uuid.uuid4())

        def save(text: str, reason: str, n_tokens: int) -> dict[str, Any]:
            with store.session() as s:
                msg = m.Message(id=message_id, conversation_id=conv_id, seq=seq, role="assistant", content=text,
                                model=cfg.model_name, active=active, finish_reason=reason,
                                prompt_tokens=len(prompt_ids), completion_tokens=n_tokens)
                s.add(msg)
                conv = s.get(m.Conversation, conv_id)
                if conv is not None:
                    conv.updated_at = _now()
                s.flush()
                return _message_dict(msg)

        async def events() -> AsyncIterator[str]:
            yield _sse(start_event)
            text: list[str] = []
            saved = False
            try:
                async for delta in gen.deltas():
                    text.append(delta)
                    yield _sse({"type": "delta", "text": delta})
                c = gen.result.completion
                assert c is not None
                reply = c.text if c.text.strip() else "(empty reply)"
                msg = await asyncio.to_thread(save, reply, c.finish_reason or "stop", len(c.token_ids))
                saved = True
                await moderate_output(caller, context, reply, conversation_id=conv_id, message_id=message_id)
                await asyncio.to_thread(log_request, caller, "ui", 200, gen.result, len(prompt_ids))
                yield _sse({"type": "done", "message": msg})
            except RuntimeError as err:
                yield _sse({"type": "error", "message": str(err)})
            finally:
                if not saved:
                    gen.cancel()
                    partial = "".join(text)
                    if partial.strip():  # a stopped reply keeps what the user saw
                        await asyncio.shield(asyncio.to_thread(save, partial, "cancelled", len(partial)))

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/api/conversations/{conversation_id}/messages")
    async def send_message(conversation_id: str, request: Request) -> Response:
        caller = await caller_for(request, limited=True)
        data = await read_json(request, cfg.max_body_bytes)
        content = text_field(data, "content", required=True)
        assert content is not None
        if not content.strip():
            raise APIError(400, "'content' is empty", param="content", code="invalid_value")

        def prepare() -> tuple[list[chat.Message], int]:
            with store.session() as s:
                conv = own_conversation(s, caller, conversation_id)
                msgs = active_messages(s, conv)
                return [*context_of(conv, msgs), chat.Message("user", content)], (msgs[-1].seq + 1 if msgs else 0)

        context, seq = await asyncio.to_thread(prepare)
        if seq % 2 == 1:
            raise APIError(400, "the last message has no reply yet", code="invalid_state")
        encode(context, "content")
        await moderate_input(caller, context, conversation_id)

        def save_user() -> dict[str, Any]:
            with store.session() as s:
                conv = own_conversation(s, caller, conversation_id)
                msg = m.Message(id=str(uuid.uuid4()), conversation_id=conv.id, seq=seq, role="user", content=content)
                s.add(msg)
                if seq == 0 and conv.title == "New chat":
                    conv.title = content.strip().splitlines()[0][:60]
                conv.updated_at = _now()
                s.flush()
                return _message_dict(msg)

        user_msg = await asyncio.to_thread(save_user)  # committed before the user sees it acknowledged
        return ui_stream(request, caller, conversation_id, context, seq + 1, True,
                         {"type": "start", "user_message": user_msg})

    @app.post("/api/messages/{message_id}/regenerate")
    async def regenerate(message_id: str, request: Request) -> Response:
        caller = await caller_for(request, limited=True)

        def prepare() -> tuple[list[chat.Message], int, str]:
            with store.session() as s:
                msg, conv = own_message(s, caller, message_id)
                return context_of(conv, active_messages(s, conv, before_seq=msg.seq)), msg.seq, conv.id

        context, seq, conv_id = await asyncio.to_thread(prepare)
        # The new answer stays inactive until the user picks it in the A/B choice.
        return ui_stream(request, caller, conv_id, context, seq, False, {"type": "start", "alternative_to": message_id})

    @app.post("/api/comparisons")
    async def choose(request: Request) -> dict[str, Any]:
        caller = await caller_for(request)
        data = await read_json(request, cfg.max_body_bytes)
        a_id = text_field(data, "message_a", required=True)
        b_id = text_field(data, "message_b", required=True)
        choice = text_field(data, "choice", required=True)
        if choice not in ("a", "b", "tie"):
            raise APIError(400, f"'choice' must be 'a', 'b' or 'tie', got {choice!r}", param="choice",
                           code="invalid_value")

        def run() -> dict[str, Any]:
            with store.session() as s:
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

    @app.post("/api/messages/{message_id}/edit")
    async def edit_message(message_id: str, request: Request) -> dict[str, Any]:
        caller = await caller_for(request)
        data = await read_json(request, cfg.max_body_bytes)
        content = text_field(data, "content", required=True)
        assert content is not None
        if not content.strip():
            raise APIError(400, "'content' is empty", param="content", code="invalid_value")

        def run() -> dict[str, Any]:
            with store.session() as s:
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
                return {"id": row.id, "message": _message_dict(msg)}

        return await asyncio.to_thread(run)

    @app.post("/api/messages/{message_id}/feedback")
    async def feedback(message_id: str, request: Request) -> dict[str, Any]:
        caller = await caller_for(request)
        data = await read_json(request, cfg.max_body_bytes)
        rating = text_field(data, "rating", required=True)
        if rating not in ("up", "down"):
            raise APIError(400, f"'rating' must be 'up' or 'down', got {rating!r}", param="rating",
                           code="invalid_value")
        reason = text_field(data, "reason", required=False, max_chars=2000)

        def run() -> dict[str, Any]:
            with store.session() as s:
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

    # ---- monitoring ------------------------------------------------------------------------------------------

    @app.get("/api/admin/stats")
    async def stats(request: Request) -> dict[str, Any]:
        caller = await caller_for(request)
        if not caller.is_admin:
            raise APIError(403, "the monitoring page is for operators (admin users)", code="forbidden")
        hours = request.query_params.get("hours", "24")
        try:
            since = _now() - timedelta(hours=float(hours))
        except ValueError:
            raise APIError(400, f"'hours' must be a number, got {hours!r}", param="hours") from None
        return await asyncio.to_thread(collect_stats, store, since) | {
            "live": {"running": getattr(scheduler, "running", 0), "batching": cfg.batching,
                     "max_batch_seen": getattr(scheduler, "max_batch_seen", None),
                     "uptime_s": round(time.time() - started)}}

    # ---- pages -----------------------------------------------------------------------------------------------

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/admin")
    async def admin_page() -> FileResponse:
        return FileResponse(STATIC / "admin.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    async def health() -> dict[str, Any]:
        return {"ok": True, "model": cfg.model_name}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def _until_disconnect(request: Request, gen: Generation) -> AsyncIterator[str]:
    """The deltas of a non-streaming request, cancelling generation when the client goes away."""
    it = gen.deltas().__aiter__()
    while True:
        task = asyncio.ensure_future(it.__anext__())
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                break
            if await request.is_disconnected():
                gen.cancel()
                task.cancel()
                return
        try:
            yield task.result()
        except StopAsyncIteration:
            return


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 1)


def collect_stats(store: Store, since: datetime) -> dict[str, Any]:
    """Per checkpoint: requests, errors, latency and TTFT percentiles, tokens, thumbs; flags and recent feedback."""
    with store.session() as s:
        per: dict[str, dict[str, Any]] = {}
        logs = list(s.scalars(select(m.RequestLog).where(m.RequestLog.created_at >= since)))
        for row in logs:
            d = per.setdefault(row.model or "?", {"requests": 0, "errors": 0, "cancelled": 0, "prompt_tokens": 0,
                                                  "completion_tokens": 0, "_lat": [], "_ttft": []})
            d["requests"] += 1
            d["errors"] += row.status >= 500
            d["cancelled"] += row.status == 499
            d["prompt_tokens"] += row.prompt_tokens
            d["completion_tokens"] += row.completion_tokens
            if row.status == 200:
                d["_lat"].append(row.latency_ms)
                if row.ttft_ms is not None:
                    d["_ttft"].append(row.ttft_ms)
        thumbs = s.execute(select(m.Message.model, m.Feedback.rating, func.count()).join(m.Message)
                           .where(m.Feedback.created_at >= since).group_by(m.Message.model, m.Feedback.rating))
        for model, rating, count in thumbs:
            d = per.setdefault(model or "?", {"requests": 0, "errors": 0, "cancelled": 0, "prompt_tokens": 0,
                                              "completion_tokens": 0, "_lat": [], "_ttft": []})
            d["thumbs_up" if rating > 0 else "thumbs_down"] = count
        for d in per.values():
            lat, ttft = d.pop("_lat"), d.pop("_ttft")
            d["latency_ms_p50"], d["latency_ms_p95"] = _percentile(lat, 50), _percentile(lat, 95)
            d["ttft_ms_p50"], d["ttft_ms_p95"] = _percentile(ttft, 50), _percentile(ttft, 95)
            up, down = d.setdefault("thumbs_up", 0), d.setdefault("thumbs_down", 0)
            d["thumbs_up_ratio"] = round(up / (up + down), 3) if up + down else None
        flags = [{"id": f.id, "stage": f.stage, "rule": f.rule, "action": f.action, "text": f.text[:500],
                  "conversation_id": f.conversation_id, "model": f.model, "created_at": f.created_at.isoformat()}
                 for f in s.scalars(select(m.Flag).where(m.Flag.created_at >= since)
                                    .order_by(m.Flag.created_at.desc()).limit(50))]
        recent = [{"id": f.id, "rating": "up" if f.rating > 0 else "down", "reason": f.reason,
                   "answer": msg.content[:300], "model": msg.model, "created_at": f.created_at.isoformat()}
                  for f, msg in s.execute(select(m.Feedback, m.Message).join(m.Message)
                                          .where(m.Feedback.created_at >= since)
                                          .order_by(m.Feedback.created_at.desc()).limit(50))]
        counts = {"comparisons": s.scalar(select(func.count()).select_from(m.ComparisonChoice)
                                          .where(m.ComparisonChoice.created_at >= since)),
                  "edits": s.scalar(select(func.count()).select_from(m.Edit).where(m.Edit.created_at >= since))}
    return {"since": since.isoformat(), "per_model": per, "flags": flags, "recent_feedback": recent, "counts": counts}
