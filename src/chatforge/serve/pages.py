"""The static web UI (plain HTML/CSS/JS in ``static/``, no build step): the chat page at ``/``, the monitoring
page at ``/admin``, their assets under ``/static``; and ``/healthz`` for load balancers and scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from chatforge.serve.state import StateDep

STATIC = Path(__file__).parent / "static"

router = APIRouter(tags=["pages"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/admin", include_in_schema=False)
async def admin_page() -> FileResponse:
    return FileResponse(STATIC / "admin.html", headers={"Cache-Control": "no-cache"})


@router.get("/healthz")
async def health(state: StateDep) -> dict[str, Any]:
    return {"ok": True, "model": state.config.model_name}


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC)
