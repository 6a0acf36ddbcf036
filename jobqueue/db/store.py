"""The job store: every job state transition and every read of a job's state, as one function
each over the named queries of `sql/queries/jobs.sql`.

This module is the only place that changes a job's state or says what it is. Two sections:
- the worker's side (async): claim, finish, retry, hand back, lease renewal, progress,
  rescue and pruning;
- everyone else's (synchronous): enqueue, read one job, lists and counts by state, cancel,
  revive, delete; for the Client, the CLI, the web API, the dashboard, batch export and
  /metrics.
A job's visible state (blocked, waiting, scheduled, retrying, running, succeeded, dead,
cancelled) is derived in SQL only, by jobqueue.job_state (sql/migrations/0007_job_state.sql)
and the view jobqueue.all_jobs (blocked jobs: 0015), so no two surfaces can disagree about
it. Jobs that wait for other jobs live in jobqueue.blocked until the transaction that ends
their last parent releases them (jobqueue.release_children, run by every path that ends
jobs). Functions run on a connection the caller holds (so callers
choose the transaction); they run SQL and shape parameters, decide nothing about retries,
backoff or timeouts (the worker's executor does), and never open connections of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from operator import itemgetter
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from jobqueue.audit import Audit, noted
from jobqueue.db.connect import int_array, text_array, word_array
from jobqueue.db.queries import q
from jobqueue.jobs import DEFAULT_MAX_ATTEMPTS, id_from_text


@dataclass(slots=True)
class Outcome:
    """What became of one execution: "finish" (state succeeded, dead or cancelled, with a
    result or an error), "retry" (after `delay` seconds) or "hand_back" (not run: shutdown,
    or the handler gave it back; with `progress`, due again after `delay` seconds)."""

    job_id: int
    execution_id: str
    action: str
    state: str | None = None
    result: str | None = None  # JSON text
    error: str | None = None  # JSON text of the attempt's error object
    delay: float = 0.0
    progress: str | None = None  # JSON text: why a job handed back until later waits


# -- claim ------------------------------------------------------------------------------------

# The claim statements of sql/queries/jobs.sql, one per kind of queue: plain, fair between
# owners, capped (0012_fair_caps.sql). Each refuses a queue whose settings need another and
# names that one; claim_capped serves any queue.
CLAIM_STATEMENTS = ("claim", "claim_fair", "claim_capped")


class Claimed(list):
    """The rows a claim leased: (id, kind, payload text, attempt, max_attempts,
    timeout_seconds, execution_id). `statement`: the claim statement the queue needs (pass it
    to the next claim). `held_back`: the queue's caps (fleet-wide or per owner) left runnable
    work unclaimed, which no notification will announce when places free up."""

    statement: str = "claim"
    held_back: bool = False


async def claim(conn: psycopg.AsyncConnection, queue: str, limit: int, worker: UUID,
                lease_seconds: float, statement: str = "claim") -> Claimed:
    """Lease up to `limit` runnable jobs of `queue`, in its order (plain, or fair between
    owners) and within its caps. `statement` is the one the queue needed last time (the
    Claimed of the previous claim says); if the queue's settings changed since, the statement
    refuses and this runs the one it names, so the claim is right either way."""
    params = {"queue": queue, "limit": limit, "worker": worker,
              "lease_seconds": lease_seconds}
    for _ in CLAIM_STATEMENTS:  # at most one refusal per statement
        cur = await conn.execute(q(statement), params)
        claimed = Claimed()
        claimed.statement = statement
        for row in await cur.fetchall():
            if row[0] is not None:
                claimed.append(row)
            elif row[1] == "held_back":
                claimed.held_back = True
            else:
                claimed.statement = row[1]
        if claimed.statement == statement or statement == "claim_capped":
            return claimed  # claim_capped serves any queue: its rows stand
        statement = claimed.statement
    return claimed
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
    back = [o.job_id for o in outcomes if o.action == "hand_back" and o.progress is None]
    later = [o for o in outcomes if o.action == "hand_back" and o.progress is not None]
    recorded: set[int] = set()
    # prepare=False: a cached generic plan of these unnest joins degrades to a nested loop
    # that rescans the arrays for every row (10x slower at 500 rows).
    if finish:
        cur = await conn.execute(q("finish_jobs"), prepare=False, params={
            "id": int_array(o.job_id for o in finish),
            "execution": word_array(o.execution_id for o in finish),
            "state": word_array(o.state for o in finish),
            "result": text_array(o.result for o in finish),
            "error": text_array(o.error for o in finish), "worker": worker})
        recorded.update(r[0] for r in await cur.fetchall())
    if retry:
        cur = await conn.execute(q("retry_jobs"), prepare=False, params={
            "id": int_array(o.job_id for o in retry),
            "execution": word_array(o.execution_id for o in retry),
            "delay": [o.delay for o in retry],
            "error": text_array(o.error for o in retry), "worker": worker})
        recorded.update(r[0] for r in await cur.fetchall())
    if back:
        await conn.execute(q("hand_back"), {"ids": back, "worker": worker})
        recorded.update(back)
    if later:
        await conn.execute(q("hand_back_later"), {
            "ids": int_array(o.job_id for o in later), "delays": [o.delay for o in later],
            "progress": text_array(o.progress for o in later), "worker": worker})
        recorded.update(o.job_id for o in later)
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
                       lease_seconds: float, renew_after: float = 0.0
                       ) -> tuple[dict[int, bool], list[int]]:
    """Extend to `lease_seconds` the leases of the `known` jobs that were set at least
    `renew_after` seconds ago; hand back any other row leased to `worker`.
    Returns ({known job id still held: cancel requested}, [ids handed back])."""
    cur = await conn.execute(q("renew_leases"), {"worker": worker, "known": int_array(known),
                                                 "lease_seconds": lease_seconds,
                                                 "renew_after": renew_after})
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


async def promote_retries(conn: psycopg.AsyncConnection, limit: int = 10000) -> int:
    """Move up to `limit` parked retries whose backoff has ended ahead of the new work of
    their priority (lane 2 -> 0, 0030_parked_retries.sql). Leader-gated in SQL."""
    cur = await conn.execute(q("promote_retries"), {"limit": limit})
    return cur.rowcount


async def prune_finished(conn: psycopg.AsyncConnection, retention_seconds: float,
                         limit: int) -> int:
    """Drop up to `limit` finished jobs older than the retention. Leader-gated in SQL."""
    cur = await conn.execute(q("prune_finished"), {"retention_seconds": retention_seconds,
                                                   "limit": limit})
    return (await cur.fetchone())[0]


# =============================================================================================
# Synchronous: the Client, the CLI, the web API, the dashboard, batch export and /metrics.
# Rows come back as dicts whatever the connection's row factory.
# =============================================================================================

def _execute(conn: psycopg.Connection, name: str, params: dict | None = None,
             prepare: bool | None = None) -> psycopg.Cursor:
    return conn.cursor(row_factory=dict_row).execute(q(name), params or {}, prepare=prepare)


@dataclass(slots=True)
class JobFilter:
    """Which jobs a list, count or bulk action is about (jobqueue.dashboard_match); None means
    any. `ids`: these jobs only; `upto`: no job newer than this id (a confirmed bulk action
    leaves later arrivals alone); `text`: an ILIKE pattern over payload, metadata and errors
    (the caller escapes % and _)."""

    ids: list[int] | None = None
    upto: int | None = None
    queue: str | None = None
    kind: str | None = None
    owner: str | None = None
    batch_id: int | None = None
    state: str | None = None
    text: str | None = None

    def params(self) -> dict:
        return asdict(self)


# Filter queries always run unprepared: planned with their actual values, the filter's
# `NULL IS NULL OR ...` folds away and the indexes apply. A generic plan of a prepared
# statement (psycopg prepares after a few runs) would scan whole tables.
_UNPREPARED = False


# -- enqueue ----------------------------------------------------------------------------------

# From this many rows (without idempotency keys) COPY beats INSERT ... unnest: measured
# ~110k vs ~70k jobs/s for 20,000 rows, at the price of one more round trip for the ids.
COPY_FROM = 1000

# The insert row's columns, in JobSpec.validated_row's order.
_COLUMNS = ("queue", "kind", "payload", "priority", "run_at", "max_attempts",
            "timeout_seconds", "owner", "batch_id", "metadata", "idempotency_key")
_TEXT_COLUMNS = frozenset({"queue", "kind", "payload", "owner", "metadata"})
# Row positions and table defaults of the columns COPY leaves out when every row holds the
# default. run_at's default is now(), the transaction's time, which is what a row without
# run_at gets anyway.
_COPY_OPTIONAL = (("priority", 3, 0), ("run_at", 4, None),
                  ("max_attempts", 5, DEFAULT_MAX_ATTEMPTS), ("timeout_seconds", 6, None),
                  ("owner", 7, None), ("batch_id", 8, None), ("metadata", 9, "{}"))


def copyable(rows: list[tuple]) -> bool:
    """Whether `rows` load with COPY (copy_rows): enough of them, and no idempotency key
    (a key must be claimed before its row is written, which COPY cannot do)."""
    return len(rows) >= COPY_FROM and not any(r[10] for r in rows)


def insert_rows(conn: psycopg.Connection, rows: list[tuple]) -> list[tuple[int, bool]]:
    """Insert validated rows (JobSpec.validated_row) in the caller's transaction; returns
    (id, created) in order. `created` is False where an idempotency key matched an existing
    job, whose id is returned. Chunking is the caller's."""
    if copyable(rows):
        return [(job_id, True) for job_id in copy_rows(conn, rows)]
    return [(job_id, created) for job_id, created, _ in insert_rows_placed(conn, rows)]


def insert_rows_placed(conn: psycopg.Connection,
                       rows: list[tuple]) -> list[tuple[int, bool, int]]:
    """insert_rows, also returning the id drawn for each row (its place in a batch: a row
    whose key matched an existing job keeps it, see record_batch_duplicates)."""
    if copyable(rows):
        return [(job_id, True, job_id) for job_id in copy_rows(conn, rows)]
    if len(rows) == 1 and not rows[0][10]:
        row = _execute(conn, "insert_job", dict(zip(_COLUMNS[:10], rows[0], strict=False)))
        job_id = row.fetchone()["id"]
        return [(job_id, True, job_id)]
    columns = {name: list(values)
               for name, values in zip(_COLUMNS, zip(*rows, strict=True), strict=True)}
    if not any(columns["idempotency_key"]):
        del columns["idempotency_key"]
        params: dict = {}
        for name, values in columns.items():
            first = values[0]
            if name != "payload" and values.count(first) == len(values):
                params[name], params[f"{name}_all"] = [], first
            elif name in _TEXT_COLUMNS:  # a literal: psycopg's list dumper is slow per item
                params[name], params[f"{name}_all"] = text_array(values), None
            else:
                params[name], params[f"{name}_all"] = values, None
        return [(r["id"], True, r["id"])
                for r in _execute(conn, "insert_jobs", params).fetchall()]
    return _keyed(conn, _execute(conn, "insert_jobs_idempotent", columns).fetchall(), rows)


def _keyed(conn: psycopg.Connection, result: list[dict],
           rows: list[tuple]) -> list[tuple[int, bool, int]]:
    """(id, created, place) from an insert that claims idempotency keys."""
    out = []
    for row, values in zip(result, rows, strict=True):
        job_id = row["id"]
        if job_id is None:  # the key was taken by a transaction that committed meanwhile
            job_id = _execute(conn, "find_idempotent", {
                "owner": values[7] or "", "queue": values[0],
                "key": values[10]}).fetchone()["job_id"]
        out.append((job_id, row["created"], row["new_id"]))
    return out


def copy_rows(conn: psycopg.Connection, rows: list[tuple]) -> list[int]:
    """Load rows without idempotency keys with COPY, in the caller's transaction; returns their
    ids, drawn first, in input order (all are created: no key can match)."""
    by_column = list(zip(*rows, strict=True))
    found = _execute(conn, "reserve_job_ids", {"n": len(rows)} | _fair_keys(by_column)).fetchone()
    now, ids, rounds = found["now"], found["ids"], found["rounds"]
    positions = [0, 1, 2]
    columns = ["id", "queue", "kind", "payload"]
    for name, position, default in _COPY_OPTIONAL:
        if by_column[position].count(default) != len(rows):
            positions.append(position)
            columns.append(name)
    if 4 in positions:  # some rows give run_at: the others get the transaction's time
        rows = [r if r[4] is not None else (*r[:4], now, *r[5:]) for r in rows]
    values = itemgetter(*positions)
    numbered = zip(ids, rows, strict=True)
    if rounds is not None:  # some rows are in fair queues: each comes with its round
        columns.append("fair_round")
        values = _with_round(values)
        # Written in the fair claim's order, so a claim reads a few heap pages, not one per row.
        numbered = sorted(((job_id, (*r, rnd)) for job_id, r, rnd in zip(ids, rows, rounds,
                                                                        strict=True)),
                          key=lambda pair: (pair[1][0], pair[1][3], pair[1][-1] or 0, pair[0]))
    statement = sql.SQL(q("copy_jobs")).format(
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)))
    with conn.cursor().copy(statement) as copy:
        for job_id, r in numbered:
            copy.write_row((job_id, *values(r)))
    return ids


def _fair_keys(by_column: list[tuple]) -> dict:
    """reserve_job_ids' queue, priority and owner columns, each sent once as `<name>_all` when
    every row holds the same value (as insert_jobs does): what fair_rounds needs."""
    params: dict = {}
    for name, position in (("queue", 0), ("priority", 3), ("owner", 7)):
        values = by_column[position]
        if values.count(values[0]) == len(values):
            params[name], params[f"{name}_all"] = [], values[0]
        elif name in _TEXT_COLUMNS:
            params[name], params[f"{name}_all"] = text_array(values), None
        else:
            params[name], params[f"{name}_all"] = list(values), None
    return params


def _with_round(values: Callable) -> Callable:
    """The COPY row of a row with its round appended last (the rows' eleventh field is the
    idempotency key, always empty here, so the round sits at index 11)."""
    return lambda r: (*values(r), r[11])


# -- one job ----------------------------------------------------------------------------------

def unfinished(conn: psycopg.Connection, ids: Sequence[int]) -> int:
    """How many of the jobs `ids` have not ended (in the hot or the blocked table)."""
    return _execute(conn, "jobs_unfinished", {"ids": list(ids)}).fetchone()["n"]


def get_job(conn: psycopg.Connection, job_id: int) -> dict | None:
    """A job from either table with its state (the fields of jobqueue.jobs.Job), or None."""
    return _execute(conn, "get_job", {"id": job_id}).fetchone()


def cancel_job(conn: psycopg.Connection, job_id: int, audit: Audit | None = None) -> str:
    """Cancel one job: 'cancelled' (it was not running: now finished as cancelled),
    'requested' (running: its worker stops it and records it cancelled), 'finished' (too
    late) or 'not_found'. With `audit`, a cancel that reached the job is recorded (cancel)."""
    done = cancel(conn, JobFilter(ids=[job_id]), audit)
    if done["cancelled"]:
        return "cancelled"
    if done["requested"]:
        return "requested"
    return "finished" if get_job(conn, job_id) else "not_found"


# -- many jobs: change ------------------------------------------------------------------------

# The functions below that take an `audit` (who acts, through which surface) record the
# action on each job it reached in the statement that acts (sql/queries/audit.sql's
# job_actions_noted): the action and its record commit together. Without one, nothing is
# recorded (the Python Client's own calls).

def cancel(conn: psycopg.Connection, where: JobFilter, audit: Audit | None = None) -> dict:
    """Cancel the matching hot and blocked jobs: {"cancelled": moved to finished now,
    "requested": running ones whose workers were told to stop}. Jobs waiting for the
    cancelled ones follow their on_parent_failure policy, in the same transaction."""
    with conn.transaction():
        done = _execute(conn, "cancel_jobs", where.params() | noted(audit, "cancel"),
                        prepare=_UNPREPARED).fetchone()
        release_children(conn, done.pop("parents"), "cancelled")
    return done


def run_now(conn: psycopg.Connection, job_id: int, audit: Audit | None = None) -> bool:
    """Make a scheduled or retrying job due now (its workers are woken); False if it is not
    one (running, finished, already due, or gone). Recorded as run-now."""
    return _execute(conn, "job_run_now",
                    {"id": job_id} | noted(audit, "run-now")).fetchone() is not None


def revive(conn: psycopg.Connection, where: JobFilter,
           states: Sequence[str] = ("dead", "cancelled"),
           audit: Audit | None = None) -> list[int]:
    """Run the matching finished jobs in `states` again with a fresh attempt budget (their
    error history kept); returns their ids. Recorded as retry."""
    rows = _execute(conn, "revive_jobs",
                    where.params() | {"states": list(states)} | noted(audit, "retry"),
                    prepare=_UNPREPARED).fetchall()
    return [r["id"] for r in rows]


def delete(conn: psycopg.Connection, where: JobFilter, audit: Audit | None = None) -> int:
    """Delete the matching jobs, finished or not running, with their idempotency keys. Jobs
    waiting for a deleted one are told it was cancelled (they follow their policy). Recorded
    as delete."""
    with conn.transaction():
        done = _execute(conn, "delete_jobs", where.params() | noted(audit, "delete"),
                        prepare=_UNPREPARED).fetchone()
        release_children(conn, done["parents"], "cancelled")
    return done["deleted"]


def purge_queue(conn: psycopg.Connection, queue: str) -> int:
    """Remove every job of a queue, hot and finished, running ones included (scratch queues:
    `jobqueue bench`)."""
    return _execute(conn, "purge_queue", {"queue": queue}).fetchone()["deleted"]


# -- many jobs: read --------------------------------------------------------------------------

def queue_status(conn: psycopg.Connection) -> list[dict]:
    """Per queue: jobs by state, oldest waiting job's age, finished in the last minute,
    paused."""
    return _execute(conn, "queue_status").fetchall()


def dead_jobs(conn: psycopg.Connection, queue: str | None = None,
              limit: int = 100) -> list[dict]:
    """The newest dead jobs (of `queue`) with their last error."""
    return _execute(conn, "list_dead", {"queue": queue, "limit": limit},
                    prepare=_UNPREPARED).fetchall()


def jobs_window(conn: psycopg.Connection, before: int, scan: int) -> dict:
    """The id window one page of the job list examines: {"floor", "scanned"}."""
    return _execute(conn, "jobs_window", {"before": before, "scan": scan},
                    prepare=_UNPREPARED).fetchone()


def jobs_page(conn: psycopg.Connection, where: JobFilter, before: int, floor: int,
              limit: int) -> list[dict]:
    """The matching jobs with ids in [floor, before), newest first, at most `limit`."""
    return _execute(conn, "jobs_page", where.params() | {
        "before": before, "floor": floor, "limit": limit}, prepare=_UNPREPARED).fetchall()


def jobs_page_sorted(conn: psycopg.Connection, where: JobFilter, floor: int, sort: str,
                     descending: bool, limit: int, offset: int) -> list[dict]:
    """The matching jobs with ids from `floor` up, in `sort` order (one of the keys
    jobs_page_sorted in sql/queries/job_list.sql knows; the caller checks it), a page."""
    return _execute(conn, "jobs_page_sorted", where.params() | {
        "floor": floor, "sort": sort, "dir": -1 if descending else 1, "limit": limit,
        "offset": offset}, prepare=_UNPREPARED).fetchall()


def window_count(conn: psycopg.Connection, where: JobFilter, floor: int, cap: int) -> int:
    """How many jobs with ids from `floor` up match, counted up to `cap`."""
    return _execute(conn, "jobs_window_count", where.params() | {"floor": floor, "cap": cap},
                    prepare=_UNPREPARED).fetchone()["count"]


def batch_match_count(conn: psycopg.Connection, where: JobFilter, cap: int) -> int:
    """How many jobs of where.batch_id match, counted up to `cap`."""
    return _execute(conn, "jobs_batch_count", where.params() | {"cap": cap},
                    prepare=_UNPREPARED).fetchone()["count"]


def match_counts(conn: psycopg.Connection, where: JobFilter) -> list[dict]:
    """The matching jobs counted by state, with the newest id of each: [{state, count,
    upto}]. Counts every match: run it under a statement timeout."""
    return _execute(conn, "jobs_match_counts", where.params(), prepare=_UNPREPARED).fetchall()


def finished_per_minute(conn: psycopg.Connection, since: datetime | None) -> list[dict]:
    """Jobs finished per minute by outcome, from `since` (at most an hour back) to now."""
    return _execute(conn, "finished_per_minute", {"since": since},
                    prepare=_UNPREPARED).fetchall()


def batch_owners(conn: psycopg.Connection, batch_ids: list[int]) -> dict[int, str | None]:
    """{batch id: its owner} of those of `batch_ids` that exist."""
    return {r["id"]: r["owner"]
            for r in _execute(conn, "batch_owners", {"ids": batch_ids}).fetchall()}


def batch(conn: psycopg.Connection, batch_id: int) -> dict | None:
    """A batch with its jobs counted by state (the batches page's query, for one batch), and
    by platform and state under "platforms"."""
    rows = _execute(conn, "batches_page", {"before": batch_id + 1, "limit": 1,
                                           "only": batch_id}, prepare=_UNPREPARED).fetchall()
    if not rows:
        return None
    found = rows[0]
    found["platforms"] = batch_platform_counts(conn, batch_id)
    return found


BATCH_STATES = ("waiting", "retrying", "scheduled", "running", "succeeded", "dead", "cancelled",
                "blocked", "duplicates")


def batch_platform_counts(conn: psycopg.Connection, batch_id: int) -> dict[str, dict]:
    """A batch's jobs by platform (queue), each with its counts by state and its total."""
    out: dict[str, dict] = {}
    for row in _execute(conn, "batch_platform_counts", {"id": batch_id}).fetchall():
        counts = out.setdefault(row["platform"], dict.fromkeys(BATCH_STATES, 0) | {"total": 0})
        counts[row["state"]] = counts.get(row["state"], 0) + row["count"]
        counts["total"] += row["count"]
    return out


def provider_batches(conn: psycopg.Connection, batch_id: int) -> list[dict]:
    """A batch's provider batches (--via batch-api), oldest first."""
    return _execute(conn, "pb_of_batch", {"batch_id": batch_id}).fetchall()


def batch_over_budget(conn: psycopg.Connection, batch_id: int) -> int:
    """How many of a batch's jobs wait paused over an LLM budget."""
    return _execute(conn, "batch_over_budget", {"batch_id": batch_id}).fetchone()["over_budget"]


def resume_over_budget(conn: psycopg.Connection, scope: str, scope_id: str) -> int:
    """Make the jobs paused over a budget of this scope due now (the budget was raised or
    removed); returns how many."""
    batch_id = id_from_text(scope_id) if scope == "batch" else None
    return _execute(conn, "resume_over_budget", {"scope": scope, "scope_id": scope_id,
                                                 "batch_id": batch_id}).fetchone()["resumed"]


def batch_jobs(conn: psycopg.Connection, batch_id: int, after: int = 0,
               limit: int = 1000) -> list[dict]:
    """One page of a batch's jobs in id order, with state, result and last error."""
    return _execute(conn, "batch_jobs", {"id": batch_id, "after": after,
                                         "limit": limit}).fetchall()


def batches_page(conn: psycopg.Connection, before: int, limit: int) -> list[dict]:
    """Batches older than `before`, newest first, each with its jobs counted by state."""
    return _execute(conn, "batches_page", {"before": before, "limit": limit, "only": None},
                    prepare=_UNPREPARED).fetchall()


def metrics(conn: psycopg.Connection) -> dict[str, list[dict]]:
    """What /metrics reports about jobs: {"queues": queue_status's rows (every known queue,
    its counts at 0 where it has none), "recent": [{queue, state, duration, wait}] (finished
    in the last 5 minutes)}."""
    return {"queues": queue_status(conn),
            "recent": _execute(conn, "metrics_recent").fetchall()}


# -- workflows (0015): jobs that wait for others, batch duplicates ------------------------------

def lock_parents(conn: psycopg.Connection, ids: Sequence[int]) -> dict[int, dict]:
    """Find the jobs `ids` where they are now and lock the unfinished ones for the caller's
    transaction (their end will release the caller's new children): {id: {"owner", "state"}},
    state None for a hot job, "blocked", or a finished state. Ids that exist nowhere are
    missing from the answer. A job that moved between tables while the statement ran is
    looked for again (a few times: each move is one short transaction)."""
    found: dict[int, dict] = {}
    wanted = sorted(set(ids))
    for _ in range(5):
        for row in _execute(conn, "lock_parents", {"ids": wanted}).fetchall():
            found[row["id"]] = row
        wanted = [i for i in wanted if i not in found]
        if not wanted:
            break
    return found


def insert_blocked(conn: psycopg.Connection, rows: list[tuple],
                   waits: list[tuple[int, str, int | None]]) -> list[tuple[int, bool, int]]:
    """Insert validated rows that wait, with (parents to wait for, on_parent_failure,
    completes_batch) each; returns (id, created, place) as insert_rows_placed."""
    columns = {name: list(values)
               for name, values in zip(_COLUMNS, zip(*rows, strict=True), strict=True)}
    columns["waiting_on"] = [w[0] for w in waits]
    columns["on_parent_failure"] = [w[1] for w in waits]
    columns["completes_batch"] = [w[2] for w in waits]
    return _keyed(conn, _execute(conn, "insert_blocked", columns).fetchall(), rows)


def add_edges(conn: psycopg.Connection, edges: list[tuple[int, int]]) -> None:
    """Record (parent, child) waits."""
    if edges:
        _execute(conn, "add_edges", {"parent": [p for p, _ in edges],
                                     "child": [c for _, c in edges]})


def release_children(conn: psycopg.Connection, ids: Sequence[int],
                     states: Sequence[str] | str) -> int:
    """Tell the children of the ended jobs `ids` how they ended (a state each, or one for
    all): released when nothing is left to wait for, cancelled when a parent failed and
    their policy says so. Returns how many became runnable."""
    if not ids:
        return 0
    if isinstance(states, str):
        states = [states] * len(ids)
    return _execute(conn, "release_children", {"ids": list(ids),
                                               "states": list(states)}).fetchone()["released"]


def record_batch_duplicates(conn: psycopg.Connection,
                            entries: list[tuple[int, int, int]]) -> None:
    """Batch rows (place, batch id, existing job id) whose key named an existing job."""
    if entries:
        _execute(conn, "record_batch_duplicates", {
            "id": [e[0] for e in entries], "batch_id": [e[1] for e in entries],
            "job_id": [e[2] for e in entries]})


def batch_members(conn: psycopg.Connection, batch_id: int) -> list[int]:
    """The ids of every job of a batch (hot, blocked or finished)."""
    return [r["id"] for r in _execute(conn, "batch_members", {"batch_id": batch_id})]


def set_batch_callback(conn: psycopg.Connection, batch_id: int, job_id: int) -> None:
    _execute(conn, "batch_set_callback", {"batch_id": batch_id, "job_id": job_id})


def release_ready(conn: psycopg.Connection, ids: Sequence[int]) -> int:
    """Move the blocked jobs `ids` that wait for nothing to `jobs`; returns how many."""
    return _execute(conn, "release_ready", {"ids": list(ids)}).fetchone()["released"]
