"""The job store: every job state transition, as one function each over the named queries of
`sql/queries/jobs.sql`.

This module is the only place that changes a job's state. The worker's side is here:
claim, finish, retry, hand back, lease renewal, progress, rescue and pruning (all async,
on a connection the caller holds). It runs SQL and shapes parameters; it decides nothing
about retries, backoff or timeouts (the worker's executor does), and it never opens
connections of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import psycopg

from jobqueue.db.connect import int_array, text_array
from jobqueue.db.queries import q


@dataclass(slots=True)
class Outcome:
    """What became of one execution: "finish" (state succeeded, dead or cancelled, with a
    result or an error), "retry" (after `delay` seconds) or "hand_back" (not run; shutdown)."""

    job_id: int
    execution_id: str
    action: str
    state: str | None = None
    result: str | None = None  # JSON text
    error: str | None = None  # JSON text of the attempt's error object
    delay: float = 0.0


# -- claim ------------------------------------------------------------------------------------

async def claim(conn: psycopg.AsyncConnection, queue: str, limit: int, worker: UUID,
                lease_seconds: float) -> list[tuple]:
    """Lease up to `limit` runnable jobs of `queue`. Rows: (id, kind, payload text, attempt,
    max_attempts, timeout_seconds, execution_id)."""
    cur = await conn.execute(q("claim"), {"queue": queue, "limit": limit, "worker": worker,
                                          "lease_seconds": lease_seconds})
    return await cur.fetchall()


async def next_run_at(conn: psycopg.AsyncConnection, queue: str) -> datetime | None:
    """When the earliest waiting job of `queue` is due (None: nothing waits)."""
    cur = await conn.execute(q("next_run_at"), {"queue": queue})
    row = await cur.fetchone()
    return row[0] if row else None


# -- outcomes ---------------------------------------------------------------------------------

async def record_outcomes(conn: psycopg.AsyncConnection, worker: UUID,
                          outcomes: Sequence[Outcome], resent: bool = False) -> set[int]:
    """Write a batch of outcomes, fenced by (worker, execution id); return the ids whose
    outcome is now recorded. Ids missing lost their lease (another worker may own the job).
    `resent`: the same batch was sent before and its reply lost, so outcomes that did commit
    then are recognised by their execution ids instead of being taken for lost leases."""
    finish = [o for o in outcomes if o.action == "finish"]
    retry = [o for o in outcomes if o.action == "retry"]
    back = [o.job_id for o in outcomes if o.action == "hand_back"]
    recorded: set[int] = set()
    # prepare=False: a cached generic plan of these unnest joins degrades to a nested loop
    # that rescans the arrays for every row (10x slower at 500 rows).
    if finish:
        cur = await conn.execute(q("finish_jobs"), prepare=False, params={
            "id": int_array(o.job_id for o in finish),
            "execution": text_array(o.execution_id for o in finish),
            "state": text_array(o.state for o in finish),
            "result": text_array(o.result for o in finish),
            "error": text_array(o.error for o in finish), "worker": worker})
        recorded.update(r[0] for r in await cur.fetchall())
    if retry:
        cur = await conn.execute(q("retry_jobs"), prepare=False, params={
            "id": int_array(o.job_id for o in retry),
            "execution": text_array(o.execution_id for o in retry),
            "delay": [o.delay for o in retry],
            "error": text_array(o.error for o in retry), "worker": worker})
        recorded.update(r[0] for r in await cur.fetchall())
    if back:
        await conn.execute(q("hand_back"), {"ids": back, "worker": worker})
        recorded.update(back)
    if resent:
        missing = [o for o in finish + retry if o.job_id not in recorded]
        if missing:
            cur = await conn.execute(q("outcomes_recorded"), {
                "id": int_array(o.job_id for o in missing),
                "execution": text_array(o.execution_id for o in missing)})
            recorded.update(r[0] for r in await cur.fetchall())
    return recorded


async def set_progress(conn: psycopg.AsyncConnection, worker: UUID,
                       progress: dict[int, tuple[str, str]]) -> None:
    """Record progress {job id: (execution id, JSON text)} of running executions."""
    async with conn.cursor() as cur:
        await cur.executemany(q("set_progress"), [
            {"id": job_id, "execution": execution, "progress": encoded, "worker": worker}
            for job_id, (execution, encoded) in progress.items()])


# -- leases -----------------------------------------------------------------------------------

async def renew_leases(conn: psycopg.AsyncConnection, worker: UUID, known: Sequence[int],
                       lease_seconds: float) -> tuple[dict[int, bool], list[int]]:
    """Extend the leases of the `known` jobs; hand back any other row leased to `worker`.
    Returns ({known job id still held: cancel requested}, [ids handed back])."""
    cur = await conn.execute(q("renew_leases"), {"worker": worker, "known": int_array(known),
                                                 "lease_seconds": lease_seconds})
    held: dict[int, bool] = {}
    released: list[int] = []
    for job_id, cancel, was_released in await cur.fetchall():
        if was_released:
            released.append(job_id)
        else:
            held[job_id] = cancel
    return held, released


# -- maintenance ------------------------------------------------------------------------------

async def rescue_expired(conn: psycopg.AsyncConnection) -> tuple[int, int]:
    """Jobs whose worker stopped renewing its lease: dead-letter those out of attempts, make
    the others runnable. Returns (dead-lettered, rescued). Leader-gated in SQL."""
    cur = await conn.execute(q("rescue_dead"))
    dead = len(await cur.fetchall())
    cur = await conn.execute(q("rescue_retry"))
    rescued = (await cur.fetchone())[0]
    return dead, rescued


async def prune_finished(conn: psycopg.AsyncConnection, retention_seconds: float,
                         limit: int) -> int:
    """Drop up to `limit` finished jobs older than the retention. Leader-gated in SQL."""
    cur = await conn.execute(q("prune_finished"), {"retention_seconds": retention_seconds,
                                                   "limit": limit})
    return (await cur.fetchone())[0]
