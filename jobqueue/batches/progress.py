"""A batch's progress as an operator reads it: how fast its jobs finish and when it will be
done (`jobqueue.batches.eta.recent`, the ETA `batch wait` shows too), and its answers
(prompt → answer), a page at a time.

The reads use the batch indexes (sql/queries/batch_progress.sql): a page costs the batch's
rows, never a scan of the job tables.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from jobqueue.batches import eta
from jobqueue.db.queries import q

ANSWERS_PAGE = 25
ANSWERS_SCAN = 5_000   # jobs of the batch one answers page examines at most
_LIKE_SPECIAL = re.compile(r"[\\%_]")


@dataclass(frozen=True)
class Pace:
    """A batch's pace: jobs finished per minute (smoothed, or the limiter's budget), where
    it came from ("measured" or "rate limit"), the ETA in seconds (None if unknown), and the
    platforms whose limiter paces it."""

    rate: float | None
    basis: str
    eta: float | None
    limited: list[str]


def pace(conn: psycopg.Connection, batch_id: int, platforms: dict[str, dict]) -> Pace:
    """The batch's pace and ETA from its last minutes (`eta.recent`); `platforms`: its
    counts per platform (`store.batch`'s "platforms")."""
    estimate = eta.recent(conn, batch_id, platforms, time.monotonic())
    rate, limited = estimate.rate(), estimate.limited()
    return Pace(None if rate is None else rate * 60, "rate limit" if limited else "measured",
                estimate.eta(), limited)


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere, its % _ and \\ taken literally."""
    return "%" + _LIKE_SPECIAL.sub(r"\\\g<0>", text) + "%"


def prompt_of(payload) -> str | None:
    """The prompt a person wrote: a chat payload's last user message (its text parts joined),
    or its `prompt`, or an analyze job's `text`; None for other payloads."""
    if not isinstance(payload, dict):
        return None
    messages = payload.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):  # parts: [{"type": "text", "text": ...}, ...]
                    content = " ".join(p.get("text", "") for p in content
                                       if isinstance(p, dict) and isinstance(p.get("text"), str))
                return content if isinstance(content, str) else None
        return None
    for field in ("prompt", "text"):
        if isinstance(payload.get(field), str):
            return payload[field]
    return None


def answer_of(result) -> str | None:
    """An LLM job's answer text (result["text"]), or None."""
    if isinstance(result, dict) and isinstance(result.get("text"), str):
        return result["text"]
    return None


def answers(conn: psycopg.Connection, batch_id: int, after: int = 0, text: str | None = None,
            limit: int = ANSWERS_PAGE, scan: int = ANSWERS_SCAN) -> dict:
    """A page of the batch's answers after id `after`: {"rows": [{id, queue, state, prompt,
    answer, model, fallback, error, attempts}], "next": the cursor of the next page or None,
    "scanned": jobs examined}. With `text`, only jobs whose payload or result contains it."""
    if not text:  # every job of the window is on the page: examine only a page's worth
        scan = limit
    found = conn.cursor(row_factory=dict_row).execute(q("batch_answers"), {
        "batch_id": batch_id, "after": after, "scan": scan, "limit": limit,
        "text": like_pattern(text) if text else None}).fetchall()
    rows = [r for r in found if r["id"] is not None]
    scanned = found[0]["scanned"] if found else 0
    if len(rows) == limit:
        following = rows[-1]["id"]
    elif scanned == scan:  # the window ended before the batch did
        following = found[0]["window_end"]
    else:
        following = None
    out = []
    for r in rows:
        result = r["result"] if isinstance(r["result"], dict) else {}
        error = r["last_error"] or {}
        out.append({
            "id": r["id"], "queue": r["queue"], "state": r["state"], "attempts": r["attempts"],
            "prompt": prompt_of(r["payload"]), "answer": answer_of(r["result"]),
            "model": result.get("model"), "fallback": bool(result.get("fallback")),
            "error": f"{error.get('type')}: {error.get('message')}" if error else None,
        })
    return {"rows": out, "next": following, "scanned": scanned}
