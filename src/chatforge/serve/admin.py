"""The operators' monitoring data (admin users only), shown by the ``/admin`` page: per checkpoint requests,
errors, cancellations, latency and time-to-first-token percentiles, tokens, thumbs; recent flags and feedback;
the live batch."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import func, select

from chatforge.serve.auth import UserDep
from chatforge.serve.errors import APIError
from chatforge.serve.state import StateDep, now
from chatforge.store import Store
from chatforge.store import models as m

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.get("/stats")
async def stats(request: Request, caller: UserDep, state: StateDep) -> dict[str, Any]:
    if not caller.is_admin:
        raise APIError(403, "the monitoring page is for operators (admin users)", code="forbidden")
    hours = request.query_params.get("hours", "24")
    try:
        since = now() - timedelta(hours=float(hours))
    except ValueError:
        raise APIError(400, f"'hours' must be a number, got {hours!r}", param="hours") from None
    backend = state.backend
    return await asyncio.to_thread(collect_stats, state.store, since) | {
        "live": {"running": backend.running, "batching": state.config.batching,
                 "max_batch_seen": backend.max_batch_seen, "uptime_s": round(time.time() - state.started)}}


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
