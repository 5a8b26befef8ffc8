"""Who is calling: an API key (``Authorization: Bearer cf-...``) or the web UI's session cookie.

Routes ask for a `Caller` through a dependency: `UserDep` (key or cookie), `LimitedUserDep` (the same, counted
against the per-user rate limit: it generates) and `ApiCallerDep` (an API key only, rate limited: the OpenAI API).
The router here logs people in and out of the web UI.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from chatforge.serve.errors import APIError, field_type, read_json
from chatforge.serve.state import AppState, StateDep

COOKIE = "cf_session"


@dataclass
class Caller:
    user_id: int
    name: str
    is_admin: bool
    limit_key: str


def _identify(state: AppState, request: Request, allow_cookie: bool) -> Caller:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise APIError(401, "Authorization must be 'Bearer <API key>'", code="invalid_api_key")
        found = state.store.user_for_key(key.strip())
        if found is None:
            raise APIError(401, "invalid or revoked API key", code="invalid_api_key")
        user, key_id = found
        return Caller(user.id, user.name, user.is_admin, f"key:{key_id}")
    token = request.cookies.get(COOKIE) if allow_cookie else None
    session_user = state.store.user_for_session(token) if token else None
    if session_user is None:
        raise APIError(401, "not signed in: send 'Authorization: Bearer <API key>' or log in", code="unauthenticated")
    return Caller(session_user.id, session_user.name, session_user.is_admin, f"user:{session_user.id}")


async def _caller(state: AppState, request: Request, *, allow_cookie: bool, limited: bool) -> Caller:
    caller = await asyncio.to_thread(_identify, state, request, allow_cookie)
    if limited:
        wait = state.limiter.check(caller.limit_key)
        if wait is not None:
            raise APIError(429, f"rate limit of {state.config.rate_limit_per_minute} requests per minute exceeded; "
                           f"retry in {wait:.1f}s", code="rate_limit_exceeded",
                           headers={"Retry-After": str(max(1, round(wait)))})
    return caller


async def signed_in(request: Request, state: StateDep) -> Caller:
    return await _caller(state, request, allow_cookie=True, limited=False)


async def signed_in_limited(request: Request, state: StateDep) -> Caller:
    return await _caller(state, request, allow_cookie=True, limited=True)


async def api_caller(request: Request, state: StateDep) -> Caller:
    return await _caller(state, request, allow_cookie=False, limited=True)


UserDep = Annotated[Caller, Depends(signed_in)]
LimitedUserDep = Annotated[Caller, Depends(signed_in_limited)]
ApiCallerDep = Annotated[Caller, Depends(api_caller)]

router = APIRouter(tags=["auth"])


@router.post("/auth/login")
async def login(request: Request, state: StateDep) -> Response:
    data = await read_json(request, state.config.max_body_bytes)
    name = field_type(data, "username", (str,), "a string", required=True)
    password = field_type(data, "password", (str,), "a string", required=True)
    token = await asyncio.to_thread(state.store.login, name, password)
    if token is None:
        raise APIError(401, "wrong user name or password", code="invalid_credentials")
    response = JSONResponse({"user": name})
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=state.config.secure_cookies,
                        max_age=14 * 24 * 3600)
    return response


@router.post("/auth/logout")
async def logout(request: Request, state: StateDep) -> Response:
    token = request.cookies.get(COOKIE)
    if token:
        await asyncio.to_thread(state.store.logout, token)
    response = JSONResponse({"ok": True})
    response.delete_cookie(COOKIE)
    return response


@router.get("/api/me")
async def me(caller: UserDep, state: StateDep) -> dict[str, Any]:
    return {"user": caller.name, "is_admin": caller.is_admin, "model": state.config.model_name}
