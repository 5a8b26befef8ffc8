"""The OpenAI-compatible API: ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` (plain
prompts), streamed as server-sent events or not, authenticated by API key. Works unchanged with the official
``openai`` client. Requests are validated against the models in `chatforge.serve.openai_schema` (which also make
``/openapi.json``); what is honoured and what is refused is listed there and in docs/serve.md.

The n choices of a prompt are submitted as one group and sampled together in the batch. A completed chat exchange is
stored as a conversation (source "api"; the other choices as alternatives of the first) unless ``store`` is false;
every request is logged for monitoring.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from chatforge import chat
from chatforge.generation import Completion, SamplingParams
from chatforge.serve import openai_schema as api
from chatforge.serve.auth import ApiCallerDep, Caller
from chatforge.serve.backend import ChoiceEvent, Generation, GenerationBackend, sse, until_disconnect
from chatforge.serve.errors import APIError, read_json
from chatforge.serve.json_mode import UnsupportedSchema
from chatforge.serve.records import log_request, moderate_input, moderate_output
from chatforge.serve.state import AppState, StateDep
from chatforge.store import models as m

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": api.ErrorResponse, "description": what} for code, what in (
        (400, "Invalid request: the message names the field and the problem"), (401, "Missing or wrong API key"),
        (404, "Unknown model"), (413, "Request body too large"), (429, "Rate limit exceeded"),
        (500, "Generation failed"))}


def body(model: type[api.Request]) -> dict[str, Any]:
    """``openapi_extra`` documenting a route's JSON body as ``model`` (the route validates it with `parse_request`
    after reading the body itself, so that every malformed body gets chatforge's own error message)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def streamed(model: type[api.Response], chunk: type[api.Response]) -> dict[int | str, dict[str, Any]]:
    """A 200 that is ``model`` as JSON, or with stream: true server-sent events, each one's data a ``chunk`` (or an
    error, should generation fail mid-stream) as JSON, the last one ``[DONE]`` (``itemSchema``: one event)."""
    data = {"type": "string", "contentMediaType": "application/json", "contentSchema": {"anyOf": [
        {"$ref": f"#/components/schemas/{chunk.__name__}"}, {"$ref": "#/components/schemas/ErrorResponse"}]}}
    event = {"type": "object", "required": ["data"], "properties": {"data": {"anyOf": [{"const": "[DONE]"}, data]}}}
    return {200: {"model": model, "description": f"{model.__name__}; with stream: true, server-sent events each "
                  f"carrying a {chunk.__name__} as JSON, ending with [DONE]",
                  "content": {"text/event-stream": {"itemSchema": event}}}, **ERRORS}


REQUEST_MODELS: list[type[api.Request]] = [api.ChatCompletionRequest, api.CompletionRequest]
RESPONSE_MODELS: list[type[api.Response]] = [api.ChatCompletionChunk, api.ErrorResponse]  # in event streams

router = APIRouter(prefix="/v1", tags=["OpenAI API"])


@router.get("/models", response_model=api.ModelList, responses=ERRORS)
async def list_models(_: ApiCallerDep, state: StateDep) -> api.ModelList:
    return api.ModelList(data=[api.Model(id=state.config.model_name, created=int(state.started), owned_by="chatforge")])


@router.post("/chat/completions", responses=streamed(api.ChatCompletion, api.ChatCompletionChunk),
             openapi_extra=body(api.ChatCompletionRequest))
async def chat_completions(request: Request, caller: ApiCallerDep, state: StateDep) -> Response:
    req = await _read(request, state, api.ChatCompletionRequest, api.REFUSED_CHAT)
    constraint = await _json_mode(state, req.response_format)
    if req.stream_options is not None and req.stream_options.include_obfuscation:
        raise APIError(400, "stream_options.include_obfuscation is not supported: chunks carry no obfuscation",
                       param="stream_options.include_obfuscation", code="unsupported_parameter")
    messages = [chat.Message("system" if x.role == "developer" else x.role, x.text())
                for x in req.messages]
    max_tokens, which = ((req.max_completion_tokens, "max_completion_tokens") if req.max_completion_tokens
                         else (req.max_tokens, "max_tokens"))
    params = _choice_params(state, req, max_tokens, which, req.top_logprobs)
    prompt_ids = state.encode_chat(messages)
    _check_room(state, prompt_ids, params[0].max_new_tokens, which)
    end_user = req.user or req.safety_identifier
    await moderate_input(state, caller, messages, end_user=end_user)
    gen = Generation(state.backend, [(prompt_ids, params)], constraint)
    rid, created, name = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), state.config.model_name
    stop_ids = state.backend.stop_token_ids

    def logprobs(c: Completion, start: int, end: int) -> api.ChoiceLogprobs | None:
        return api.ChoiceLogprobs(content=_token_logprobs(state.backend, c, start, end)) if req.logprobs else None

    async def finish() -> None:
        await asyncio.to_thread(log_request, state, caller, "api", 200, gen.results, len(prompt_ids))
        completions = [r.completion for r in gen.results if r.completion is not None]
        if req.store:
            await asyncio.to_thread(save_api_conversation, state, caller, messages, completions)
        for c in completions:
            await moderate_output(state, caller, messages, c.text, end_user=end_user)

    if not req.stream:
        completions = await _collect(request, state, caller, gen, len(prompt_ids))
        if completions is None:
            return Response(status_code=499)
        await finish()
        return JSONResponse(api.ChatCompletion(
            id=rid, created=created, model=name, usage=_usage(len(prompt_ids), completions),
            choices=[api.ChatChoice(index=i, message=api.AssistantMessage(content=c.text), finish_reason=_reason(c),
                                    logprobs=logprobs(c, 0, _reply_tokens(c, stop_ids)))
                     for i, c in enumerate(completions)]).model_dump())

    def chunk(choices: list[api.ChunkChoice], usage: api.Usage | None = None) -> str:
        return sse(api.ChatCompletionChunk(id=rid, created=created, model=name, choices=choices, usage=usage)
                   .model_dump())

    def on_event(event: ChoiceEvent, c: Completion | None, start: int, end: int) -> list[str]:
        out = []
        if event.delta or (req.logprobs and end > start):
            lp = logprobs(c, start, end) if c is not None else None
            out.append(chunk([api.ChunkChoice(index=event.index, delta=api.ChunkDelta(content=event.delta),
                                              logprobs=lp)]))
        if event.finished is not None:
            out.append(chunk([api.ChunkChoice(index=event.index, delta=api.ChunkDelta(),
                                              finish_reason=_reason(event.finished))]))
        return out

    first = [chunk([api.ChunkChoice(index=i, delta=api.ChunkDelta(role="assistant", content=""))])
             for i in range(len(params))]
    last = (lambda: [chunk([], _usage(len(prompt_ids), _done(gen)))]) if req.stream_options and \
        req.stream_options.include_usage else (lambda: [])
    return _stream(state, caller, gen, len(prompt_ids), first, on_event, last, finish)


@router.post("/completions", responses=streamed(api.Completion, api.Completion),
             openapi_extra=body(api.CompletionRequest))
async def completions(request: Request, caller: ApiCallerDep, state: StateDep) -> Response:
    req = await _read(request, state, api.CompletionRequest, api.REFUSED_COMPLETIONS)
    backend = state.backend
    top = req.logprobs or 0
    max_tokens = req.max_tokens if req.max_tokens is not None else min(16, state.config.max_new_tokens)
    params = _choice_params(state, req, max_tokens, "max_tokens", top)
    prompts: list[list[int]] = []
    texts: list[str] = []
    for i, prompt in enumerate(req.prompts()):
        where = "prompt" if len(req.prompts()) == 1 else f"prompt.{i}"
        if isinstance(prompt, str):
            ids, text = backend.encode_text(prompt), prompt
        else:
            bad = [t for t in prompt if not 0 <= t < backend.vocab_size]
            if bad:
                raise APIError(400, f"{where}: token id {bad[0]} is outside the vocabulary (0..{backend.vocab_size - 1})",
                               param=where, code="invalid_value")
            ids, text = prompt, backend.decode(prompt)
        if not ids:
            raise APIError(400, f"{where} is empty", param=where, code="invalid_value")
        if len(ids) > state.max_prompt_tokens:
            raise APIError(400, f"{where} is {len(ids)} tokens; the limit is {state.max_prompt_tokens}", param=where,
                           code="context_length_exceeded")
        _check_room(state, ids, max_tokens, "max_tokens")
        await moderate_input(state, caller, [chat.Message("user", text)], end_user=req.user)
        prompts.append(ids)
        texts.append(text)
    gen = Generation(backend, [(ids, params) for ids in prompts])
    rid, created, name = f"cmpl-{uuid.uuid4().hex}", int(time.time()), state.config.model_name
    prompt_tokens = sum(len(ids) for ids in prompts)
    echo = [texts[i // req.n] if req.echo else "" for i in range(len(prompts) * req.n)]
    offsets = [len(e) for e in echo]  # text_offset of the next token of each choice

    def logprobs(i: int, c: Completion, start: int, end: int) -> api.CompletionLogprobs | None:
        if req.logprobs is None:
            return None
        entries = _token_logprobs(backend, c, start, end)
        text_offset = []
        for e in entries:
            text_offset.append(offsets[i])
            offsets[i] += len(e.token)
        return api.CompletionLogprobs(
            tokens=[e.token for e in entries], token_logprobs=[e.logprob for e in entries], text_offset=text_offset,
            top_logprobs=[{t.token: t.logprob for t in e.top_logprobs} for e in entries] if top else None)

    async def finish() -> None:
        await asyncio.to_thread(log_request, state, caller, "api", 200, gen.results, prompt_tokens)
        for r in gen.results:
            if r.completion is not None:
                await moderate_output(state, caller, [], r.completion.text, end_user=req.user)

    if not req.stream:
        done = await _collect(request, state, caller, gen, prompt_tokens)
        if done is None:
            return Response(status_code=499)
        await finish()
        return JSONResponse(api.Completion(
            id=rid, created=created, model=name, usage=_usage(prompt_tokens, done),
            choices=[api.CompletionChoice(index=i, text=echo[i] + c.text, finish_reason=_reason(c),
                                          logprobs=logprobs(i, c, 0, _reply_tokens(c, backend.stop_token_ids)))
                     for i, c in enumerate(done)]).model_dump())

    def chunk(choices: list[api.CompletionChoice], usage: api.Usage | None = None) -> str:
        return sse(api.Completion(id=rid, created=created, model=name, choices=choices, usage=usage).model_dump())

    def on_event(event: ChoiceEvent, c: Completion | None, start: int, end: int) -> list[str]:
        out = []
        if event.delta or (req.logprobs is not None and end > start):
            lp = logprobs(event.index, c, start, end) if c is not None else None
            out.append(chunk([api.CompletionChoice(index=event.index, text=event.delta, logprobs=lp,
                                                   finish_reason=None)]))
        if event.finished is not None:
            out.append(chunk([api.CompletionChoice(index=event.index, text="", logprobs=None,
                                                   finish_reason=_reason(event.finished))]))
        return out

    first = [chunk([api.CompletionChoice(index=i, text=e, logprobs=None, finish_reason=None)])
             for i, e in enumerate(echo) if e]
    last = (lambda: [chunk([], _usage(prompt_tokens, _done(gen)))]) if req.stream_options and \
        req.stream_options.include_usage else (lambda: [])
    return _stream(state, caller, gen, prompt_tokens, first, on_event, last, finish)


# ---- shared by both endpoints ---------------------------------------------------------------------------------


async def _json_mode(state: AppState, response_format: Any) -> Callable[[], Any] | None:
    """What makes each choice's JSON-mode constraint, or None for plain text; a schema that constrained decoding
    cannot enforce is refused, naming the keyword."""
    if response_format is None or response_format.type == "text":
        return None
    schema = None
    if response_format.type == "json_schema":
        schema = response_format.json_schema.schema_
        if schema is None:
            raise APIError(400, "response_format.json_schema.schema is required", code="invalid_value",
                           param="response_format.json_schema.schema")
    try:
        await asyncio.to_thread(state.backend.json_constraint, schema)  # compiles (and caches) it, or refuses
    except UnsupportedSchema as err:
        where = "response_format" if schema is None else "response_format.json_schema." + err.where
        raise APIError(400, f"{where}{str(err).removeprefix(err.where)}", param=where,
                       code="unsupported_parameter") from None
    return lambda: state.backend.json_constraint(schema)


async def _read(request: Request, state: AppState, model: type[api.R],
                refused: dict[str, tuple[str, tuple[Any, ...]]]) -> api.R:
    """The request body validated as ``model``, for the model this server serves (another name: 404)."""
    req = api.parse_request(model, await read_json(request, state.config.max_body_bytes), refused)
    if req.model != state.config.model_name:
        raise APIError(404, f"model '{req.model}' is not served here; available: {state.config.model_name}",
                       param="model", code="model_not_found")
    return req


def _choice_params(state: AppState, req: api.SamplingFields, max_tokens: int | None, which: str,
                   top_logprobs: int) -> list[SamplingParams]:
    """The sampling parameters of each of the n choices; choice j of a seeded request is drawn with seed + j."""
    cfg = state.config
    max_tokens = cfg.default_max_tokens if max_tokens is None else max_tokens
    if not 1 <= max_tokens <= cfg.max_new_tokens:
        raise APIError(400, f"{which} must be between 1 and {cfg.max_new_tokens}, got {max_tokens}", param=which,
                       code="invalid_value")
    bias = req.bias()
    too_big = [t for t, _ in bias if t >= state.backend.vocab_size]
    if too_big:
        raise APIError(400, f"logit_bias: token id {too_big[0]} is outside the vocabulary "
                       f"(0..{state.backend.vocab_size - 1})", param="logit_bias", code="invalid_value")
    return [SamplingParams(max_new_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                           stop=tuple(s for s in req.stops() if s), seed=None if req.seed is None else req.seed + j,
                           presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
                           logit_bias=bias, top_logprobs=top_logprobs)
            for j in range(req.n)]


def _check_room(state: AppState, prompt_ids: list[int], max_tokens: int, which: str) -> None:
    if len(prompt_ids) + max_tokens > state.context_limit:
        raise APIError(400, f"prompt ({len(prompt_ids)} tokens) + {which} ({max_tokens}) exceeds the model's context "
                       f"of {state.context_limit} tokens", param=which, code="context_length_exceeded")


def _reason(c: Completion) -> Any:
    return "length" if c.finish_reason == "length" else "stop"


def _reply_tokens(c: Completion, stop_ids: frozenset[int]) -> int:
    """The tokens that make the reply: all but a closing stop token."""
    n = len(c.token_ids)
    return n - 1 if n and c.token_ids[-1] in stop_ids else n


def _logprob(value: float) -> float:
    # JSON has no -inf; OpenAI documents -9999.0 for "very unlikely"
    return value if math.isfinite(value) and value > -9999.0 else -9999.0


def _token_logprobs(backend: GenerationBackend, c: Completion, start: int, end: int) -> list[api.TokenLogprob]:
    out = []
    for i in range(start, end):
        token, raw = backend.token_piece(c.token_ids[i])
        tops = []
        for t, lp in c.top_logprobs[i] if i < len(c.top_logprobs) else []:
            alt, alt_raw = backend.token_piece(t)
            tops.append(api.TopLogprob(token=alt, logprob=_logprob(lp), bytes=alt_raw))
        out.append(api.TokenLogprob(token=token, logprob=_logprob(c.logprobs[i]), bytes=raw, top_logprobs=tops))
    return out


def _usage(prompt_tokens: int, completions: list[Completion]) -> api.Usage:
    out = sum(len(c.token_ids) for c in completions)
    return api.Usage(prompt_tokens=prompt_tokens, completion_tokens=out, total_tokens=prompt_tokens + out)


def _done(gen: Generation) -> list[Completion]:
    return [r.completion for r in gen.results if r.completion is not None]


async def _collect(request: Request, state: AppState, caller: Caller, gen: Generation,
                   prompt_tokens: int) -> list[Completion] | None:
    """Every choice's completion, or None when the client went away (logged as 499)."""
    try:
        async for _ in until_disconnect(request, gen.events(), gen.cancel):
            pass
    except RuntimeError as err:
        raise APIError(500, str(err), code="generation_failed") from None
    done = _done(gen)
    if len(done) < len(gen.results) or any(c.finish_reason == "cancelled" for c in done):
        await asyncio.to_thread(log_request, state, caller, "api", 499, gen.results, prompt_tokens)
        return None
    return done


def _stream(state: AppState, caller: Caller, gen: Generation, prompt_tokens: int, first: list[str],
            on_event: Callable[[ChoiceEvent, Completion | None, int, int], list[str]],
            last: Callable[[], list[str]], finish: Callable[[], Any]) -> StreamingResponse:
    """Server-sent events: ``first``, then ``on_event(event, completion, first token, end token)`` for every
    choice's progress (the tokens in [first, end) are new since its last event), ``last()``, [DONE]."""
    stop_ids = state.backend.stop_token_ids

    async def events() -> AsyncIterator[str]:
        sent = [0] * len(gen.choices)  # tokens of each choice already reported
        try:
            for item in first:  # a client gone by now still cancels its choices (finally)
                yield item
            async for event in gen.events():
                c = gen.choices[event.index].request.completion
                end = _reply_tokens(event.finished, stop_ids) if event.finished is not None else event.tokens
                for item in on_event(event, c, sent[event.index], end):
                    yield item
                sent[event.index] = max(sent[event.index], end)
        except RuntimeError as err:
            yield sse({"error": {"message": str(err), "type": "server_error", "param": None, "code": None}})
            return
        finally:
            if len(_done(gen)) < len(gen.choices) or any(c.finish_reason == "cancelled" for c in _done(gen)):
                gen.cancel()
                await asyncio.shield(asyncio.to_thread(log_request, state, caller, "api", 499, gen.results,
                                                       prompt_tokens))
        for item in last():
            yield item
        yield "data: [DONE]\n\n"
        await finish()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def save_api_conversation(state: AppState, caller: Caller, messages: list[chat.Message],
                          completions: list[Completion]) -> None:
    """The exchange as a conversation; with n > 1, the other choices are stored as alternatives of the first."""
    finished = [c for c in completions if c.finish_reason != "cancelled"]
    if not finished:
        return
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
        for j, c in enumerate(finished):
            s.add(m.Message(id=str(uuid.uuid4()), conversation_id=conv.id, seq=len(turns), role="assistant",
                            content=c.text, model=state.config.model_name, finish_reason=c.finish_reason,
                            active=j == 0, prompt_tokens=len(c.prompt_ids), completion_tokens=len(c.token_ids)))
