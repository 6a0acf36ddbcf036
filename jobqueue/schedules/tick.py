"""Deciding due fires and enqueueing them: exactly once per (schedule, fire time).

Every worker's scheduler calls tick() (jobqueue/worker/scheduler.py); none is a leader. Per
batch of due schedules (SCHEDULES_PER_TRANSACTION), one transaction: lock their rows (FOR
UPDATE SKIP LOCKED: schedulers share the work instead of queueing on it); for each, decide
what each due fire becomes, insert each fire's run row into schedule_runs, whose unique
(schedule, fire_at) admits one row per fire, then the job or batch, then move next_fire_at
on; commit. A scheduler that dies
mid-way commits nothing; two that decide the same fire (clocks apart, a definition saved
meanwhile) cannot both commit a run row, and the enqueue is in the run row's transaction.

Missed fires: a fire decided more than ON_TIME_SECONDS after its time was missed (no
scheduler ran: downtime, a long deploy). The schedule's `misfire` policy says what to do:
`skip` (run none of them), `once` (the default: one catch-up run for the latest, unless an
on-time fire runs anyway) or `all` (each, CATCH_UP_PER_TICK per tick); a missed fire later
than the schedule's `max_lateness` is skipped whatever the policy. Skipped fires are recorded
as one 'skipped' run row saying how many, from when to when, and why; the runs list shows it.

A fire whose enqueue is refused (its platform gone from jobqueue.toml, say) is recorded as a
'failed' run with the reason; in the same transaction the `schedule.failed` webhook event goes
to the owner's subscriptions, and the failure hooks (register_failure_hook) run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from itertools import chain
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row

from jobqueue.db.queries import q
from jobqueue.errors import InvalidSchedule, JobqueueError
from jobqueue.schedules import cron, spec

log = structlog.get_logger("jobqueue.schedules")

ON_TIME_SECONDS = 60.0  # a fire decided later than this was missed
SCAN_LIMIT = 10_000  # due fires looked at per schedule and tick
CATCH_UP_PER_TICK = 100  # missed fires run per schedule and tick under `all`
SCHEDULES_PER_TRANSACTION = 20  # due schedules locked and decided per transaction

FailureHook = Callable[[psycopg.Connection, dict], None]
_failure_hooks: dict[str, FailureHook] = {}


def register_failure_hook(name: str, hook: FailureHook) -> None:
    """Call `hook(conn, event)` whenever a fire's enqueue fails, inside the transaction that
    records the failed run (so what the hook enqueues commits with it). `event`: schedule,
    owner, fire_at, run_id, reason. A hook that raises is logged and its work rolled back."""
    _failure_hooks[name] = hook


@dataclasses.dataclass
class Plan:
    """What one tick does with a schedule's due fires."""

    run: list[tuple[datetime, str]]  # (fire time, 'enqueued' | 'caught_up'), in order
    skipped: list[datetime]
    skipped_more: bool  # the backlog was longer than SCAN_LIMIT: more were skipped
    reason: str | None
    next_fire_at: datetime


def decide(row: dict, now: datetime) -> Plan:
    """The plan for a due schedule (row: cron, timezone, misfire, max_lateness,
    next_fire_at) at `now`. Pure: no database."""
    parsed = cron.parse(row["cron"], row["timezone"])
    policy, limit = row["misfire"], row["max_lateness"]
    due: list[datetime] = []
    truncated = False
    following = None
    for at in chain([row["next_fire_at"]], parsed.fires_after(row["next_fire_at"])):
        if at > now:
            following = at
            break
        if len(due) == SCAN_LIMIT:
            truncated = True
            break
        due.append(at)
    if truncated:
        if policy == "all":
            following = at  # the rest waits for the next ticks
        else:  # only the latest can run: jump to it
            latest = parsed.latest_at_or_before(now)
            if latest is not None and latest > due[-1]:
                due.append(latest)
            following = parsed.after(now)
    assert following is not None

    def late(fire: datetime) -> float:
        return (now - fire).total_seconds()

    on_time = [f for f in due if late(f) <= ON_TIME_SECONDS]
    missed = [f for f in due if late(f) > ON_TIME_SECONDS]
    too_late = [f for f in missed if limit is not None and late(f) > limit]
    catchable = [f for f in missed if f not in set(too_late)]
    run = [(f, "enqueued") for f in on_time]
    if policy == "skip":
        skipped = missed
    elif policy == "once":
        if catchable and not on_time:
            run = [(catchable[-1], "caught_up")]
        skipped = [f for f in missed if not run or f != run[0][0]]
    else:  # all
        if len(catchable) > CATCH_UP_PER_TICK:
            following = catchable[CATCH_UP_PER_TICK]
            catchable = catchable[:CATCH_UP_PER_TICK]
            too_late = [f for f in too_late if f < following]
            run = []
        run = [(f, "caught_up") for f in catchable] + run
        skipped = too_late
    reason = None
    if skipped:
        reason = f"missed (no scheduler ran within {ON_TIME_SECONDS:.0f}s of the fire time); " \
                 f"misfire policy {policy}"
        if too_late:
            reason += f"; {len(too_late)} later than max_lateness {limit:g}s"
        if truncated and policy != "all":
            reason += f"; the backlog was longer than {SCAN_LIMIT} fires (more were skipped)"
    return Plan(run, skipped, truncated and policy != "all", reason, following)


def tick(conn: psycopg.Connection, now: datetime, max_schedules: int = 100) -> list[dict]:
    """Decide every due schedule (at most `max_schedules`), SCHEDULES_PER_TRANSACTION per
    transaction, each in a savepoint of its own; returns the runs recorded. `now` is the
    scheduler's clock (injected in tests)."""
    runs: list[dict] = []
    decided = 0
    while decided < max_schedules:
        with conn.transaction():
            rows = _cursor(conn).execute(q("schedule_due"), {
                "now": now, "limit": min(SCHEDULES_PER_TRANSACTION,
                                         max_schedules - decided)}).fetchall()
            if not rows:
                break
            decided += len(rows)
            for row in rows:
                try:
                    with conn.transaction():  # a savepoint: what a failure undoes
                        runs.extend(_decide_and_fire(conn, row, now))
                except psycopg.OperationalError:
                    raise  # the connection: the tick is tried again at the next poll
                except Exception as exc:  # a bug must not stop every scheduler on this one
                    log.error("schedule_tick_failed", schedule=row["name"], exc_info=exc)
                    runs.extend(_pause_failed(conn, row, now, f"internal error: "
                                              f"{type(exc).__name__}: {exc}"))
    return runs


def _decide_and_fire(conn: psycopg.Connection, row: dict, now: datetime) -> list[dict]:
    try:
        plan = decide(row, now)
    except InvalidSchedule as exc:  # stored before a zone vanished from tzdata, say
        return _pause_failed(conn, row, now, str(exc))
    runs = []
    if plan.skipped:
        run = _record(conn, row, plan.skipped[-1], "skipped", now, reason=plan.reason,
                      skipped=len(plan.skipped), skipped_from=plan.skipped[0])
        if run is not None:
            log.info("schedule_skipped", schedule=row["name"], fires=len(plan.skipped),
                     first=plan.skipped[0].isoformat(), last=plan.skipped[-1].isoformat(),
                     reason=plan.reason)
            runs.append(run)
    for fire_at, decision in plan.run:
        run = fire(conn, row, fire_at, decision, now)
        if run is not None:
            runs.append(run)
    _cursor(conn).execute(q("schedule_advance"), {"name": row["name"],
                                                  "next_fire_at": plan.next_fire_at})
    return runs


def _pause_failed(conn: psycopg.Connection, row: dict, now: datetime,
                  reason: str) -> list[dict]:
    """A schedule that cannot be decided: a failed run saying why, and the schedule paused
    (fixing and resuming it is a person's job)."""
    reason = f"{reason}; the schedule is paused"[:2000]
    # At its next fire; at `now` if that fire has its run row already (it failed before).
    run = (_record(conn, row, row["next_fire_at"], "failed", now, reason=reason)
           or _record(conn, row, now, "failed", now, reason=reason))
    _cursor(conn).execute(q("schedule_set_paused"), {
        "name": row["name"], "paused": True, "next_fire_at": None, "owner": None})
    if run is not None:
        _failed(conn, row, run)
    return [run] if run else []


def fire(conn: psycopg.Connection, row: dict, fire_at: datetime, decision: str,
         now: datetime, platforms: dict | None = None) -> dict | None:
    """Record one fire and enqueue what it makes, in the caller's transaction; None when the
    fire was already recorded (by another scheduler): then nothing is enqueued. `platforms`:
    the configured platforms, when not jobqueue.toml's (the web app's own config)."""
    run = _record(conn, row, fire_at, decision, now)
    if run is None:
        return None
    try:
        with conn.transaction():  # a savepoint: a refused enqueue leaves the run row
            run |= _enqueue(conn, row, fire_at, decision, platforms)
    except (JobqueueError, OSError, psycopg.DataError, psycopg.IntegrityError) as exc:
        run |= {"decision": "failed", "reason": f"{type(exc).__name__}: {exc}"[:2000]}
    _cursor(conn).execute(q("schedule_run_set"), run)
    log_event = log.warning if run["decision"] == "failed" else log.info
    log_event("schedule_fired", schedule=row["name"], fire_at=fire_at.isoformat(),
              decision=run["decision"], job_id=run["job_id"], batch_id=run["batch_id"],
              reason=run["reason"])
    if run["decision"] == "failed":
        _failed(conn, row, run)
    return run


def run_now(conn: psycopg.Connection, name: str, now: datetime,
            platforms: dict | None = None) -> dict | None:
    """`schedules run-now`: one manual fire at `now`, outside the cron times (the schedule's
    next fire is unchanged); None if there is no such schedule."""
    with conn.transaction():
        row = _cursor(conn).execute(q("schedule_get"), {"name": name}).fetchone()
        if row is None:
            return None
        return fire(conn, row, now, "manual", now, platforms)


def _record(conn: psycopg.Connection, row: dict, fire_at: datetime, decision: str,
            now: datetime, *, reason: str | None = None, skipped: int = 0,
            skipped_from: datetime | None = None) -> dict | None:
    found = _cursor(conn).execute(q("schedule_run_claim"), {
        "schedule": row["name"], "fire_at": fire_at, "decision": decision, "reason": reason,
        "skipped": skipped, "skipped_from": skipped_from, "decided_at": now}).fetchone()
    if found is None:
        return None
    return {"id": found["id"], "schedule": row["name"], "fire_at": fire_at,
            "decision": decision, "reason": reason, "job_id": None, "batch_id": None}


def _enqueue(conn: psycopg.Connection, row: dict, fire_at: datetime, decision: str,
             platforms: dict | None) -> dict[str, Any]:
    from jobqueue.client import insert_batch, insert_specs  # the pool is not the worker's

    target = row["target"]
    if target["type"] == "campaign":  # a campaign's run (jobqueue/campaigns/runs.py)
        from jobqueue.campaigns import runs
        from jobqueue.campaigns import store as campaigns

        campaign = campaigns.require(conn, target["campaign"])
        return {"batch_id": runs.run(conn, campaign, fire_at, decision,
                                     platforms)["batch_id"]}
    if target["type"] == "job":
        job = spec.job_spec(target, row["name"], fire_at, row["owner"])
        (job_id, _), = insert_specs(conn, [job])
        return {"job_id": job_id}
    from jobqueue.batches import files as batchfiles
    from jobqueue.batches.specs import chat_spec

    platform = spec.platform_settings(target["platform"], platforms)
    stamp = f"@{row['name']}:{fire_at.isoformat()}"

    def specs(rows):
        for batch_row in rows:
            job = chat_spec(batch_row, platform.max_attempts)
            if job.idempotency_key:  # a key dedupes within one fire, not across fires
                job.idempotency_key += stamp
            yield job

    with spec.stored_file(row["batch_content"], target["format"]) as path:
        batch_id, _ = insert_batch(
            conn, specs(batchfiles.iter_rows(path, template=target.get("template"),
                                             fmt=target["format"])),
            queue=target["platform"], owner=row["owner"], source=target.get("source"),
            name=spec.batch_name(row["name"], fire_at, row["timezone"]),
            metadata={"schedule": row["name"], "fire_at": fire_at.isoformat(),
                      "decision": decision},
            on_complete=spec.on_complete_spec(target["on_complete"], row["owner"], row["name"],
                                              fire_at) if target.get("on_complete") else None)
    return {"batch_id": batch_id}


def _failed(conn: psycopg.Connection, row: dict, run: dict) -> None:
    """A failed run: the `schedule.failed` webhook event for the schedule's owner, then the
    registered hooks; all in the run's transaction, each in a savepoint of its own."""
    event = {"schedule": row["name"], "owner": row.get("owner"), "fire_at": run["fire_at"],
             "run_id": run["id"], "reason": run["reason"]}
    hooks = {"webhooks": _emit_schedule_failed} | _failure_hooks
    for name, hook in list(hooks.items()):
        try:
            with conn.transaction():
                hook(conn, event)
        except Exception as exc:  # a hook must not stop the scheduler
            log.error("schedule_failure_hook_failed", hook=name, schedule=row["name"],
                      error=str(exc))


def _emit_schedule_failed(conn: psycopg.Connection, event: dict) -> None:
    from jobqueue import webhooks

    data = {"schedule": {"name": event["schedule"], "fire_at": event["fire_at"].isoformat(),
                         "run_id": event["run_id"], "reason": event["reason"]}}
    webhooks.emit(conn, "schedule.failed", event["owner"], data,
                  event_id=f"schedule.failed:{event['run_id']}")


def _cursor(conn: psycopg.Connection) -> psycopg.Cursor:
    return conn.cursor(row_factory=dict_row)
