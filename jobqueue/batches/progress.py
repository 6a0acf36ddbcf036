"""A batch's progress as an operator reads it: how fast its jobs finish (a smoothed rate),
when it will be done (a stable ETA), and its answers (prompt → answer), a page at a time.

The rate is an exponentially weighted average of the jobs finished per minute over the last
minutes, so one slow or busy minute moves it a little, not wildly (`batch wait`'s ETA swung
1:09 → 3:54 → 0:45 from instantaneous rates). While every key of a platform the batch runs
on is at its limit, finishing is paced by the limiter, not by the workers: the ETA then
comes from the limiter's requests-per-minute budget of those platforms.

The reads use the batch indexes (sql/queries/batch_progress.sql): a page costs the batch's
rows, never a scan of the job tables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from jobqueue.batches.eta import platform_budgets
from jobqueue.db.queries import q

RATE_MINUTES = 15      # minutes of history the smoothed rate looks at
ALPHA = 0.3            # weight of the newest minute in the average
MIN_PARTIAL = 10.0     # seconds of the current minute before it counts (scaled to a minute)
ANSWERS_PAGE = 25
ANSWERS_SCAN = 5_000   # jobs of the batch one answers page examines at most
_LIKE_SPECIAL = re.compile(r"[\\%_]")


def smoothed_rate(per_minute: Sequence[float], alpha: float = ALPHA) -> float | None:
    """Exponentially weighted average of per-minute counts, oldest first; None when there
    is no minute to go by. Leading zero minutes (before the batch's first finish) are left
    out, so a batch that started two minutes ago is not averaged with thirteen idle ones."""
    values = list(per_minute)
    while values and values[0] == 0:
        values.pop(0)
    if not values:
        return None
    rate = values[0]
    for value in values[1:]:
        rate = alpha * value + (1 - alpha) * rate
    return rate


def eta_seconds(remaining: int, rate_per_minute: float | None) -> float | None:
    """Seconds until `remaining` jobs are done at `rate_per_minute`; 0 when none remain,
    None when no rate is known (nothing finished yet, or nothing finishing)."""
    if remaining <= 0:
        return 0.0
    if not rate_per_minute or rate_per_minute <= 0:
        return None
    return remaining * 60.0 / rate_per_minute


@dataclass(frozen=True)
class Pace:
    """A batch's pace: jobs finished per minute (smoothed), where the ETA's rate came from
    ("measured" or "rate limit"), and the ETA in seconds (None if unknown)."""

    rate: float | None
    basis: str
    eta: float | None
    per_minute: list[int]
    limited: list[str]


def pace(conn: psycopg.Connection, batch_id: int, remaining: int,
         platforms: Sequence[str]) -> Pace:
    """The batch's smoothed rate and ETA. The current minute counts once MIN_PARTIAL seconds
    of it have passed, scaled to a full minute."""
    cur = conn.cursor(row_factory=dict_row)
    rows = cur.execute(q("batch_finished_per_minute"),
                       {"batch_id": batch_id, "minutes": RATE_MINUTES}).fetchall()
    counts = [int(r["finished"]) for r in rows]
    series: list[float] = [float(c) for c in counts[:-1]]
    elapsed = rows[-1]["current_elapsed"] if rows else 0.0
    if rows and elapsed >= MIN_PARTIAL:
        series.append(counts[-1] * 60.0 / elapsed)
    rate = smoothed_rate(series)
    # The limiter's budget, as `batch wait` reads it (one query for both: eta.py).
    budgets = platform_budgets(conn, list(platforms)) if platforms else {}
    limited = [name for name, (is_limited, _) in budgets.items() if is_limited]
    if limited and remaining > 0:
        budget = sum((per_second or 0.0) * 60 for is_limited, per_second in budgets.values()
                     if is_limited)
        # The limiter's budget is shared with other work on the platform: the measured rate,
        # when lower, is the better guess.
        paced = min(budget, rate) if rate else budget
        return Pace(paced, "rate limit", eta_seconds(remaining, paced), counts, limited)
    return Pace(rate, "measured", eta_seconds(remaining, rate), counts, limited)


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
