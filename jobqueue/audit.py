"""The record of manual actions on jobs (retry, cancel, run now, delete): which job, what,
who (the token's owner), through which surface and when. The dashboard's and the API's
actions write it; a job's timeline reads it (jobqueue.job_actions, 0023).

The record is written by the statement that acts (jobqueue/db/store.py's cancel, revive,
delete and run_now, given an `Audit`; the SQL part job_actions_noted of
sql/queries/audit.sql), never after it: an action and its record commit together or not at
all, and only the jobs the action reached are recorded."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from jobqueue.db.queries import q

VIA = ("dashboard", "api", "cli")
TIMELINE_LIMIT = 200  # actions a job's timeline shows at most (the newest)


@dataclass(frozen=True, slots=True)
class Audit:
    """Who makes a manual action (`actor`: the token's owner), through which surface
    (`via`: one of VIA) and, optionally, in what context (`detail`: "batch 7: cancel")."""

    actor: str
    via: str
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.via not in VIA:
            raise ValueError(f"via: one of {', '.join(VIA)}")


def noted(audit: Audit | None, action: str) -> dict:
    """The parameters of job_actions_noted for `action` made by `audit`; all NULL without an
    audit (nothing is recorded)."""
    if audit is None:
        return {"action": None, "actor": None, "via": None, "detail": None}
    return {"action": action, "actor": audit.actor, "via": audit.via, "detail": audit.detail}


def of_job(conn: psycopg.Connection, job_id: int, limit: int = TIMELINE_LIMIT) -> list[dict]:
    """A job's recorded actions, oldest first (the newest `limit` of them)."""
    rows = conn.cursor(row_factory=dict_row).execute(
        q("job_actions_of_job"), {"job_id": job_id, "limit": limit}).fetchall()
    return rows[::-1]
