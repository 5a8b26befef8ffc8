"""`chatforge export`: turn what users said about the model into training data.

Writes into DIR:

* ``sft.jsonl`` — edited answers as SFT demonstrations, OpenAI ``{"messages": [...]}`` records (FileSource reads
  them); the original model answer is in ``meta.model_answer``.
* ``edits.jsonl`` — the same edits as ``chatforge.data.edits`` records (prompt, model_answer, edited_answer), for
  iterative SFT and (chosen, rejected) pairs.
* ``comparisons.jsonl`` — A/B choices from regenerate (source "ab") and thumbs (source "thumbs": an up and a down
  given to different answers of the same context), as ``chatforge.data.comparisons`` records.
* ``feedback.jsonl`` — every thumbs up/down with its reason, the context and the answer.
* ``redteam.jsonl`` — flagged inputs/outputs: red-team candidates for review.
* ``manifest.json`` — counts and the time window.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from chatforge.data.comparisons import Comparison, ComparisonError, Rater, Response, save_comparisons
from chatforge.store import Store
from chatforge.store import models as m


def parse_since(value: str | None) -> datetime | None:
    """ISO 8601 date/time, or a relative age like 7d / 12h / 30m."""
    if not value:
        return None
    units = {"d": 86400, "h": 3600, "m": 60}
    if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
        return datetime.fromtimestamp(datetime.now(UTC).timestamp() - float(value[:-1]) * units[value[-1]], tz=UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--since must be an ISO 8601 time (2025-05-01, 2025-05-01T12:00) or an age (7d, 12h), got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def export(store: Store, out: str | Path, since: datetime | None = None) -> dict[str, int]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def recent(model: Any) -> Any:
        q = select(model)
        if since is not None:
            q = q.where(model.created_at >= since)
        return q.order_by(model.created_at, model.id)

    with store.session() as s:
        users = {u.id: u.name for u in s.scalars(select(m.User))}
        sft, edits = [], []
        for e in s.scalars(recent(m.Edit)):
            created = _utc(e.created_at).isoformat()
            meta = {"model": e.model, "message_id": e.message_id, "store_edit_id": e.id}
            edits.append({"id": f"edit-{e.id}", "prompt": e.context, "model_answer": e.original,
                          "edited_answer": e.edited, "editor": users.get(e.user_id), "edited_at": created,
                          "meta": meta})
            sft.append({"id": f"edit-{e.id}", "messages": [*e.context, {"role": "assistant", "content": e.edited}],
                        "meta": {**meta, "model_answer": e.original, "editor": users.get(e.user_id),
                                 "edited_at": created, "source": "edit"}})

        comparisons: list[Comparison] = []
        problems: list[str] = []
        for c in s.scalars(recent(m.ComparisonChoice)):
            ranks = {"a": (1, 2), "b": (2, 1), "tie": (1, 1)}[c.choice]
            try:
                comparisons.append(Comparison(
                    id=f"ab-{c.id}", context=tuple(c.context), ranks=ranks,
                    responses=(Response(c.text_a, c.model_a), Response(c.text_b, c.model_b)),
                    rater=Rater(users.get(c.user_id, str(c.user_id)), "human"),
                    created_at=_utc(c.created_at).isoformat(), source="ab",
                    meta={"conversation_id": c.conversation_id, "message_ids": [c.message_a_id, c.message_b_id]}))
            except ComparisonError as err:  # e.g. two identical answers: no preference to learn
                problems.append(str(err))

        feedback_rows: list[dict[str, Any]] = []
        by_context: dict[Any, Any] = {}
        for f, msg in s.execute(recent(m.Feedback).add_columns(m.Message).join(m.Message,
                                                                                 m.Feedback.message_id == m.Message.id)):
            conv = s.get(m.Conversation, msg.conversation_id)
            before = s.scalars(select(m.Message).where(m.Message.conversation_id == msg.conversation_id,
                                                       m.Message.seq < msg.seq, m.Message.active.is_(True))
                               .order_by(m.Message.seq))
            context = ([{"role": "system", "content": conv.system_prompt}] if conv and conv.system_prompt else []) + [
                {"role": x.role, "content": x.content} for x in before]
            created = _utc(f.created_at).isoformat()
            feedback_rows.append({"id": f"thumb-{f.id}", "context": context, "response": msg.content,
                                  "model": msg.model, "rating": "up" if f.rating > 0 else "down", "reason": f.reason,
                                  "rater": users.get(f.user_id), "created_at": created, "message_id": msg.id})
            key = (f.user_id, msg.conversation_id, msg.seq, json.dumps(context))
            by_context.setdefault(key, []).append((f, msg, context, created))
        for (user_id, conv_id, _seq, _), items in by_context.items():
            ups = [x for x in items if x[0].rating > 0]
            downs = [x for x in items if x[0].rating < 0]
            for up in ups:
                for down in downs:
                    if up[1].content.strip() == down[1].content.strip():
                        continue
                    try:
                        comparisons.append(Comparison(
                            id=f"thumbs-{up[0].id}-{down[0].id}", context=tuple(up[2]), ranks=(1, 2),
                            responses=(Response(up[1].content, up[1].model), Response(down[1].content, down[1].model)),
                            rater=Rater(users.get(user_id, str(user_id)), "human"),
                            created_at=max(up[3], down[3]), source="thumbs",
                            meta={"conversation_id": conv_id, "reasons": [up[0].reason, down[0].reason]}))
                    except ComparisonError as err:
                        problems.append(str(err))

        redteam = [{"id": f"flag-{f.id}", "stage": f.stage, "rule": f.rule, "action": f.action, "text": f.text,
                    "context": f.context, "model": f.model, "user": users.get(f.user_id) if f.user_id else None,
                    "conversation_id": f.conversation_id, "message_id": f.message_id,
                    "created_at": _utc(f.created_at).isoformat()}
                   for f in s.scalars(recent(m.Flag))]

    _write_jsonl(out / "sft.jsonl", sft)
    _write_jsonl(out / "edits.jsonl", edits)
    save_comparisons(out / "comparisons.jsonl", comparisons)
    _write_jsonl(out / "feedback.jsonl", feedback_rows)
    _write_jsonl(out / "redteam.jsonl", redteam)
    counts = {"sft": len(sft), "edits": len(edits), "comparisons": len(comparisons), "feedback": len(feedback_rows),
              "redteam": len(redteam)}
    manifest = {"since": since.isoformat() if since else None, "exported_at": datetime.now(UTC).isoformat(),
                "counts": counts, "skipped": problems}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return counts
