"""The record of manual actions on jobs (retry, cancel, run now, delete): which job, what,
who (the token's owner), through which surface and when. The dashboard's and the API's
actions write it; a job's timeline reads it (jobqueue.job_actions, 0023)."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.rows import dict_row

from jobqueue.db.queries import q

VIA = ("dashboard", "api", "cli")
TIMELINE_LIMIT = 200  # actions a job's timeline shows at most (the newest)


def record(conn: psycopg.Connection, job_ids: Sequence[int], action: str, actor: str,
           via: str, detail: str | None = None) -> None:
    """Note that `actor` did `action` to each of `job_ids` (one statement however many)."""
    if not job_ids:
        return
    if via not in VIA:
        raise ValueError(f"via: one of {', '.join(VIA)}")
    conn.execute(q("job_actions_record"), {"ids": list(job_ids), "action": action,
                                           "actor": actor, "via": via, "detail": detail})


def of_job(conn: psycopg.Connection, job_id: int, limit: int = TIMELINE_LIMIT) -> list[dict]:
    """A job's recorded actions, oldest first (the newest `limit` of them)."""
    rows = conn.cursor(row_factory=dict_row).execute(
        q("job_actions_of_job"), {"job_id": job_id, "limit": limit}).fetchall()
    return rows[::-1]
