"""The chat product in one FastAPI app: the OpenAI-compatible API, the web chat UI and its conversations and
feedback, and the operators' monitoring, each a router (`chatforge.serve.openai_api`, `.auth`, `.conversations`,
`.feedback`, `.admin`, `.pages`) over one shared `AppState` (`chatforge.serve.state`).

Generation goes through one `GenerationBackend` (`chatforge.serve.backend`): chatforge's continuous batcher by
default. Whatever is acknowledged to a user (a stored message id, a 200 on feedback) has been committed to the store
first. Every error is JSON in OpenAI's shape, never a bare 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatforge.serve import admin, auth, conversations, feedback, openai_api, pages
from chatforge.serve.backend import GenerationBackend, TorchBackend
from chatforge.serve.errors import APIError, error_response
from chatforge.serve.state import AppState, RateLimiter, ServeConfig
from chatforge.store import Store

__all__ = ["ServeConfig", "create_app"]


def create_app(model: Any, tokenizer: Any, store: Store, config: ServeConfig | None = None, *,
               backend: GenerationBackend | None = None) -> FastAPI:
    """The app serving ``model`` (through chatforge's own backend unless ``backend`` is given) from ``store``."""
    cfg = config or ServeConfig()
    if backend is None:
        backend = TorchBackend(model, tokenizer, batching=cfg.batching, max_batch=cfg.max_batch, decoder=cfg.decoder)
    state = AppState(config=cfg, store=store, backend=backend, limiter=RateLimiter(cfg.rate_limit_per_minute))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        backend.start()
        try:
            yield
        finally:
            backend.stop()

    app = FastAPI(title="chatforge", summary="An OpenAI-compatible API for a chatforge model",
                  version=_version(), docs_url="/docs", redoc_url=None, openapi_url="/openapi.json", lifespan=lifespan)
    app.state.serve = state
    app.state.store, app.state.config = store, cfg
    app.state.scheduler = getattr(backend, "scheduler", backend)
    _install_error_handlers(app)
    app.include_router(openai_api.router)
    app.include_router(pages.router)
    # the web UI's own JSON (cookie sessions) is not part of the published API
    for module in (auth, conversations, feedback, admin):
        app.include_router(module.router, include_in_schema=False)
    app.mount("/static", pages.static_files(), name="static")
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request bodies, which the routes validate themselves against the same models, and
    the API-key scheme."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (*openai_api.REQUEST_MODELS, *openai_api.RESPONSE_MODELS):
            spec = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(spec.pop("$defs", {}))
            components[model.__name__] = spec
        config = app.state.serve.config
        for model in openai_api.REQUEST_MODELS:  # this server's limits, and the one model served here
            properties = components[model.__name__]["properties"]
            properties["model"]["enum"] = [config.model_name]  # any other name answers 404
            for name in ("max_tokens", "max_completion_tokens"):
                for branch in properties.get(name, {}).get("anyOf", []):
                    if branch.get("type") == "integer":
                        branch["maximum"] = config.max_new_tokens
        schema["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer",
                                                              "description": "chatforge serve --add-user NAME"}}
        for path, operations in schema["paths"].items():
            if path.startswith("/v1/"):
                for operation in operations.values():
                    operation["security"] = [{"apiKey": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chatforge")
    except PackageNotFoundError:
        return "0"


def _install_error_handlers(app: FastAPI) -> None:
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
