"""Schedules in Postgres: save, remove, pause, resume, read, and list runs, as one function
each over the named queries of sql/queries/schedules.sql. Functions run on a connection the
caller holds (the caller chooses the transaction); rows come back as dicts. `owner`, where
taken, limits the change or read to that owner's schedules (None: any, for admins).
"""

from __future__ import annotations

from datetime import datetime
from itertools import islice

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from jobqueue.db.queries import q
from jobqueue.schedules import cron
from jobqueue.schedules.spec import ScheduleSpec

NEXT_FIRES_SHOWN = 5


def _execute(conn: psycopg.Connection, name: str, params: dict) -> psycopg.Cursor:
    return conn.cursor(row_factory=dict_row).execute(q(name), params)


def save(conn: psycopg.Connection, spec: ScheduleSpec, now: datetime, *,
         replace: bool = False, only_if_changed: bool = False,
         only_owner: str | None = None) -> str:
    """Store a definition: 'created', 'updated', or 'kept' (it exists and `replace` is false,
    or `only_if_changed` and nothing changed, or it is not `only_owner`'s when one is given).
    A new or changed definition starts at its first fire after `now`."""
    row = _execute(conn, "schedule_upsert", {
        "name": spec.name, "cron": spec.cron, "timezone": spec.timezone,
        "target": Jsonb(spec.target), "batch_content": spec.batch_content,
        "misfire": spec.misfire, "max_lateness": spec.max_lateness, "paused": spec.paused,
        "owner": spec.owner, "origin": spec.origin,
        "next_fire_at": spec.parsed_cron().after(now),
        "replace": replace, "only_if_changed": only_if_changed,
        "only_owner": only_owner}).fetchone()
    if row is None:
        return "kept"
    return "created" if row["created"] else "updated"


def remove(conn: psycopg.Connection, name: str, owner: str | None = None) -> bool:
    """Delete a schedule and its runs (their jobs and batches stay)."""
    return _execute(conn, "schedule_remove", {"name": name, "owner": owner}).fetchone() \
        is not None


def remove_stale(conn: psycopg.Connection, origin: str, keep: list[str]) -> list[str]:
    """Delete the schedules of `origin` not named in `keep`; returns their names."""
    rows = _execute(conn, "schedule_remove_stale", {"origin": origin, "keep": keep})
    return [r["name"] for r in rows.fetchall()]


def set_paused(conn: psycopg.Connection, name: str, paused: bool, now: datetime,
               owner: str | None = None) -> dict | None:
    """Pause or resume; None if there is no such schedule (of `owner`). Resuming starts at
    the first fire after `now`: nothing of the pause is caught up."""
    found = get(conn, name)
    if found is None or (owner is not None and found["owner"] != owner):
        return None
    after = cron.parse(found["cron"], found["timezone"]).after(now)
    return _execute(conn, "schedule_set_paused", {"name": name, "paused": paused,
                                                  "next_fire_at": after, "owner": owner}
                    ).fetchone()


def get(conn: psycopg.Connection, name: str) -> dict | None:
    """One schedule as stored, batch text included."""
    return _execute(conn, "schedule_get", {"name": name}).fetchone()


def listing(conn: psycopg.Connection, owner: str | None = None, name: str | None = None,
            limit: int = 1000) -> list[dict]:
    """Schedules with their last run and its outcome, and their next fires (`next_fires`,
    NEXT_FIRES_SHOWN of them; none while paused)."""
    rows = _execute(conn, "schedules_list", {"owner": owner, "name": name,
                                             "limit": limit}).fetchall()
    for row in rows:
        row["next_fires"] = [] if row["paused"] else next_fires(row, NEXT_FIRES_SHOWN)
    return rows


def next_fires(row: dict, count: int) -> list[datetime]:
    """The schedule's next `count` fires from its stored next fire on."""
    parsed = cron.parse(row["cron"], row["timezone"])
    first = row["next_fire_at"]
    return [first, *islice(parsed.fires_after(first), count - 1)]


def runs(conn: psycopg.Connection, name: str, before: int | None = None,
         limit: int = 50) -> list[dict]:
    """A page of the schedule's runs, newest first, with their jobs' or batches' outcome."""
    return _execute(conn, "schedule_runs", {"name": name, "before": before or 2 ** 62,
                                            "limit": limit}).fetchall()
