"""The worker: claim jobs from one queue, run their handlers, record outcomes.

One asyncio loop per process, with four connections that each reconnect on their own:
- claim: `claim` in batches (FOR UPDATE SKIP LOCKED), woken by LISTEN or a poll timer;
- finish: outcomes are buffered and written in batches (group commit: while one write is in
  flight the next batch gathers), fenced by (worker id, attempt);
- background: heartbeat (lease renewal, cancellations, the worker row) and maintenance;
- listen: LISTEN for new work and for cancellations.
A job holds its slot until its outcome is written, so "in flight" is exact and a SIGTERM never
leaves an outcome behind in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import json
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog

from jobqueue import db
from jobqueue.db.queries import q
from jobqueue.logs import current_job
from jobqueue.tasks import JobCancelled, JobContext, Permanent, Registry, Retry, registry

log = structlog.get_logger("jobqueue.worker")

# Python 3.12 can start a Task eagerly. (Running the first step without a Task is not an
# option: asyncio.timeout(), TaskGroups and wait_for() would bind to the worker's own task.)
_EAGER_TASKS = sys.version_info >= (3, 12)

# Payloads arrive as jsonb's text output: canonical JSON with no surrounding white space, so
# the C scanner can take it directly (json.loads adds two regex matches and two Python calls).
_parse_payload = json.JSONDecoder().raw_decode


@dataclass
class WorkerConfig:
    queue: str = "default"
    concurrency: int = 10
    lease_seconds: float = 30.0
    heartbeat_seconds: float | None = None  # default: a third of the lease
    poll_seconds: float = 1.0
    listen: bool = True
    grace_seconds: float = 25.0
    claim_batch: int = 500
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 3600.0
    maintenance_seconds: float = 5.0
    retention_seconds: float = 7 * 86400.0
    default_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.heartbeat_seconds is None:
            self.heartbeat_seconds = self.lease_seconds / 3


async def _opened(conn: psycopg.AsyncConnection) -> None:
    """A _Link call that only makes sure the connection is open."""


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, so retries of a
    failed burst spread out instead of returning together."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


@dataclass(slots=True)
class _Running:
    id: int
    attempt: int
    max_attempts: int
    kind: str
    claimed_at: float
    ctx: JobContext | None = None  # made when the job starts, for handlers that take one
    task: asyncio.Task | None = None
    stop_reason: str | None = None  # "cancelled", "lease_lost" or "shutdown"
    started: bool = False  # its Task ran its first step


@dataclass(slots=True)
class _Outcome:
    job_id: int
    attempt: int
    action: str  # "finish", "retry" or "hand_back"
    state: str | None = None
    result: str | None = None
    error: str | None = None
    delay: float = 0.0


class _Link:
    """One connection that survives database restarts: each call retries on connection loss,
    with backoff, until it succeeds or the worker gives up on the database (hard stop)."""

    def __init__(self, url: str, name: str, give_up: Callable[[], bool],
                 session_sql: str | None = None):
        self.url, self.name, self.give_up = url, name, give_up
        self.session_sql = session_sql
        self.conn: psycopg.AsyncConnection | None = None
        self.lock = asyncio.Lock()

    async def run(self, fn: Callable[[psycopg.AsyncConnection], Awaitable[Any]]) -> Any:
        delay = 0.05
        async with self.lock:
            while True:
                try:
                    if self.conn is None or self.conn.closed:
                        self.conn = await db.connect_async(self.url)
                        if self.session_sql and not db.behind_pgbouncer():
                            await self.conn.execute(self.session_sql)
                    return await fn(self.conn)
                except psycopg.OperationalError as exc:
                    await self.close()
                    if self.give_up():
                        raise
                    log.warning("db_unavailable", link=self.name, error=str(exc).strip(),
                                retry_in=round(delay, 2))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)

    async def execute(self, query: str, params: dict | None = None) -> list[tuple]:
        async def go(conn):
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []

        return await self.run(go)

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
            self.conn = None


class Worker:
    def __init__(self, url: str, config: WorkerConfig | None = None, *,
                 tasks: Registry = registry,
                 on_start: Callable[[], Awaitable[None]] | None = None,
                 on_stop: Callable[[], Awaitable[None]] | None = None):
        """`on_start`/`on_stop` run on the worker's loop around its work (e.g. a platform's
        HTTP clients and pools, which must live on that loop)."""
        self.url = url
        self.on_start, self.on_stop = on_start, on_stop
        self.config = config or WorkerConfig()
        self.tasks = tasks
        self.id = uuid.uuid4()
        self._worker_name = str(self.id)
        self.log = log.bind(worker=self._worker_name, queue=self.config.queue)
        self._in_flight: dict[int, _Running] = {}
        self._outbox: list[_Outcome] = []
        self._progress: dict[int, tuple[int, str]] = {}
        self._stopping = False  # warm stop: claim nothing more
        self._hard = False  # hard stop: hand everything back now
        self._closing = False  # the fetch loop has ended; write what is left and go
        self._next_run: datetime | None = None  # when the queue's next scheduled job is due
        self._next_checked = 0.0  # monotonic time _next_run was read
        self._threads: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._links: list[_Link] = []
        self.listening = threading.Event()  # set while LISTEN is in place
        self.claimed = 0  # counters for tests and the status line
        self.claim_rounds = 0
        self.finished = 0
        self._debug = True  # whether debug lines are logged at all (read in run())

    # -- lifecycle --------------------------------------------------------------------------

    def stop(self, hard: bool = False) -> None:
        """Ask the worker to stop: warm (finish in-flight work) or hard (hand it back)."""
        self._hard = self._hard or hard
        self._stopping = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._poke)

    def _poke(self) -> None:
        self._wake.set()
        self._slots.set()
        self._stop_event.set()
        if self._hard:
            self._hard_event.set()

    def _on_signal(self, signum: int) -> None:
        hard = self._stopping  # the second signal of either kind is a hard stop
        self.log.info("signal", signal=signal.Signals(signum).name,
                      stop="hard" if hard else "warm", in_flight=len(self._in_flight))
        self.stop(hard=hard)

    async def run(self, install_signals: bool = False) -> None:
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        enabled = getattr(log.bind(), "is_enabled_for", None)
        self._debug = enabled(logging.DEBUG) if enabled else True
        self._wake = asyncio.Event()
        self._slots = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._hard_event = asyncio.Event()
        self._outbox_event = asyncio.Event()
        self._beat_now = asyncio.Event()
        if self._stopping:
            self._poke()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._on_signal, sig)
        give_up = lambda: self._hard  # noqa: E731
        # A claim need not wait for its WAL flush: if Postgres crashes before the flush, the
        # claim is simply lost and the job is claimed again (at-least-once either way).
        self._claim_link = self._link("claim", give_up, "SET synchronous_commit = off")
        # Outcome batches are array literals (db.text_array) that spell NULL as NULL, which
        # array_nulls = off (a legacy setting) would read as the string 'NULL'.
        self._finish_link = self._link("finish", give_up, "SET array_nulls = on")
        self._bg_link = self._link("background", give_up)
        if self.on_start is not None:
            await self.on_start()
        # The claim and finish connections open while the worker registers: the first claim
        # then goes out as soon as the worker row exists.
        await asyncio.gather(self._bg_link.execute(q("register_worker"), self._worker_row()),
                             self._claim_link.run(_opened), self._finish_link.run(_opened))
        self.log.info("worker_started", concurrency=cfg.concurrency, listen=cfg.listen,
                      pid=os.getpid(), tasks=self.tasks.names())
        background = [asyncio.create_task(self._heartbeat_loop()),
                      asyncio.create_task(self._maintenance_loop())]
        if cfg.listen:
            background.append(asyncio.create_task(self._listen_loop()))
        completer = asyncio.create_task(self._complete_loop())
        try:
            await self._fetch_loop()
            await self._drain()
        finally:
            self._closing = True
            self._outbox_event.set()
            with contextlib.suppress(Exception):
                await completer
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            with contextlib.suppress(Exception):
                self._bg_link.give_up = lambda: True
                await self._bg_link.execute(q("unregister_worker"), {"id": self.id})
            for link in self._links:
                await link.close()
            if self._threads is not None:
                self._threads.shutdown(wait=False, cancel_futures=True)
            if self.on_stop is not None:
                with contextlib.suppress(Exception):
                    await self.on_stop()
            self.log.info("worker_stopped", claimed=self.claimed, finished=self.finished)

    def _link(self, name: str, give_up: Callable[[], bool],
              session_sql: str | None = None) -> _Link:
        link = _Link(self.url, name, give_up, session_sql)
        self._links.append(link)
        return link

    def _worker_row(self) -> dict:
        return {"id": self.id, "host": socket.gethostname(), "pid": os.getpid(),
                "queue": self.config.queue, "concurrency": self.config.concurrency,
                "in_flight": len(self._in_flight)}

    # -- claiming ---------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        cfg = self.config
        backlog = False
        while not self._stopping:
            free = cfg.concurrency - len(self._in_flight)
            if free <= 0:
                self._slots.clear()
                await self._slots.wait()
                continue
            limit = min(free, cfg.claim_batch)
            if backlog and limit < min(cfg.concurrency, cfg.claim_batch) // 2:
                # Work is waiting but few slots are free: let a few more free up, so a busy
                # worker claims in batches rather than one row per statement.
                await asyncio.sleep(0.002)
                limit = min(cfg.concurrency - len(self._in_flight), cfg.claim_batch)
            self._wake.clear()
            rows = await self._claim_link.execute(q("claim"), {
                "queue": cfg.queue, "limit": limit, "worker": self.id,
                "lease_seconds": cfg.lease_seconds})
            self.claim_rounds += 1
            now = time.monotonic()
            for row in rows:
                self._start(row, now)
            backlog = len(rows) == limit
            if backlog or self._stopping:
                continue
            await self._idle_wait()

    async def _idle_wait(self) -> None:
        """Sleep until a notification, a freed stop, or the next poll (or scheduled job)."""
        timeout = self.config.poll_seconds
        now = datetime.now(UTC)
        # next_run_at looks at every waiting row of the queue: ask at most once per poll
        # interval (every insert wakes every idle worker), again once the time it gave has
        # come, and after this worker scheduled retries. Scheduled inserts announce their due
        # time themselves (_inserted), so nothing new waits for the poll.
        due_passed = self._next_run is not None and self._next_run <= now
        if due_passed or time.monotonic() - self._next_checked >= self.config.poll_seconds:
            await asyncio.sleep(0)  # let the jobs just claimed start before the round trip
            rows = await self._claim_link.execute(q("next_run_at"),
                                                  {"queue": self.config.queue})
            self._next_run = rows[0][0] if rows else None
            self._next_checked = time.monotonic()
        if self._next_run is not None:
            until = (self._next_run - now).total_seconds()
            timeout = max(0.0, min(timeout, until))
        # asyncio.timeout(), not wait_for(): on 3.11 wait_for wraps the wait in a Task of its
        # own, a loop iteration more between the notification and the claim.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    # -- running ----------------------------------------------------------------------------

    def _start(self, row: tuple, now: float) -> None:
        job_id, kind, payload, attempt, max_attempts, timeout = row
        running = _Running(job_id, attempt, max_attempts, kind, now)
        self._in_flight[job_id] = running
        self.claimed += 1
        coro = self._execute(running, _parse_payload(payload)[0], timeout)
        if _EAGER_TASKS:
            # The Task runs the job's first step at once, as the current task: a job that
            # finishes without waiting (a no-op, a cache hit) skips the trip through the loop.
            running.task = asyncio.Task(coro, loop=self._loop, eager_start=True)
        else:
            running.task = asyncio.Task(coro, loop=self._loop)

    def _stopped(self, r: _Running, when: str) -> _Outcome | None:
        """The outcome of a job the worker stopped (see _stop_job), by the reason it gave:
        None when the lease was lost, for another worker may own the job now and there is
        nothing of ours to write; the job's slot is freed at once then."""
        reason = r.stop_reason or "shutdown"
        if reason == "cancelled":
            return _Outcome(r.id, r.attempt, "finish", "cancelled",
                            error=self._error(r, JobCancelled(f"cancelled {when}")))
        if reason == "lease_lost":
            self._in_flight.pop(r.id, None)
            self._slots.set()
            return None
        return _Outcome(r.id, r.attempt, "hand_back")

    def _record(self, outcome: _Outcome | None) -> None:
        if outcome is not None:
            self._outbox.append(outcome)
            self._outbox_event.set()

    async def _execute(self, r: _Running, payload: Any, timeout: float | None) -> None:
        r.started = True
        # Each job's Task runs in a context of its own: no need to reset this.
        current_job.set((r.id, self.config.queue, r.kind, r.attempt, self._worker_name))
        started = time.monotonic()
        task = self.tasks.get(r.kind)
        try:
            if task is None:
                raise Permanent(f"no task named {r.kind!r} is registered in this worker")
            if task.wants_ctx:
                r.ctx = JobContext(job_id=r.id, queue=self.config.queue, kind=r.kind,
                                   attempt=r.attempt, max_attempts=r.max_attempts,
                                   _report_progress=self._report_progress)
                args = (payload, r.ctx)
            else:
                args = (payload,)
            work = task.func(*args) if task.is_async else self._in_thread(task.func, *args)
            limit = timeout or task.timeout or self.config.default_timeout
            result = await (asyncio.wait_for(work, limit) if limit else work)
            encoded = "null" if result is None else json.dumps(result)
        except asyncio.CancelledError:
            outcome = self._stopped(r, "while running")
        except JobCancelled as exc:
            outcome = _Outcome(r.id, r.attempt, "finish", "cancelled",
                               error=self._error(r, exc))
        except Exception as exc:
            outcome = self._failure(r, exc, time.monotonic() - started)
        else:
            outcome = _Outcome(r.id, r.attempt, "finish", "succeeded", result=encoded)
            if self._debug:  # a filtered log call still costs a few µs per job
                log.debug("job_succeeded", seconds=round(time.monotonic() - started, 4))
        self._record(outcome)

    def _in_thread(self, func: Callable, *args) -> asyncio.Future:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.config.concurrency,
                                               thread_name_prefix="jobqueue-task")
        ctx = contextvars.copy_context()  # handler logs keep the job's ids
        return self._loop.run_in_executor(self._threads, ctx.run, func, *args)

    def _failure(self, r: _Running, exc: Exception, seconds: float) -> _Outcome:
        error = self._error(r, exc)
        if isinstance(exc, TimeoutError) and not str(exc):
            error = self._error(r, exc, "the job exceeded its timeout")
        final = isinstance(exc, Permanent) or r.attempt >= r.max_attempts
        if final:
            log.error("job_dead", error_type=type(exc).__name__, error=str(exc),
                      seconds=round(seconds, 4))
            return _Outcome(r.id, r.attempt, "finish", "dead", error=error)
        cfg = self.config
        delay = exc.delay if isinstance(exc, Retry) and exc.delay is not None else backoff(
            r.attempt, cfg.retry_base_seconds, cfg.retry_max_seconds)
        log.warning("job_failed", error_type=type(exc).__name__, error=str(exc),
                    retry_in=round(delay, 3), seconds=round(seconds, 4))
        return _Outcome(r.id, r.attempt, "retry", error=error, delay=delay)

    def _error(self, r: _Running, exc: BaseException, message: str | None = None) -> str:
        return json.dumps({
            "attempt": r.attempt,
            "at": datetime.now(UTC).isoformat(),
            "type": type(exc).__name__,
            "message": message or str(exc),
            "traceback": "".join(traceback.format_exception(exc)),
            "worker": str(self.id),
        })

    def _report_progress(self, job_id: int, attempt: int, progress: Any) -> None:
        encoded = json.dumps(progress)

        def record():
            self._progress[job_id] = (attempt, encoded)
            self._outbox_event.set()

        self._loop.call_soon_threadsafe(record)

    def _stop_job(self, job_id: int, reason: str) -> None:
        r = self._in_flight.get(job_id)
        if r is None or r.task is None or r.task.done() or r.stop_reason:
            return
        r.stop_reason = reason
        if r.ctx is not None:
            r.ctx._cancelled = True
        r.task.cancel()
        self.log.info("job_stopping", job_id=job_id, reason=reason)
        if not r.started:
            # Cancelled before its first step (a stop or a cancellation in the same loop pass
            # as the claim): its coroutine will never run to record the outcome, and its slot
            # and lease would be held until the worker exits.
            self._record(self._stopped(r, "before it started"))

    # -- recording outcomes -----------------------------------------------------------------

    async def _complete_loop(self) -> None:
        while True:
            await self._outbox_event.wait()
            self._outbox_event.clear()
            batch, self._outbox = self._outbox, []
            progress, self._progress = self._progress, {}
            if progress:
                with contextlib.suppress(psycopg.Error):
                    await self._write_progress(progress)
            if batch:
                try:
                    await self._write(batch)
                except psycopg.OperationalError:
                    self.log.error("outcomes_lost", count=len(batch),
                                   note="database unreachable at hard stop; leases will expire")
                for o in batch:
                    self._in_flight.pop(o.job_id, None)
                self.finished += len(batch)
                self._slots.set()
            if self._closing and not self._outbox and not self._active():
                return

    def _active(self) -> bool:
        return any(r.task is not None and not r.task.done() for r in self._in_flight.values())

    async def _write(self, batch: list[_Outcome]) -> None:
        finish = [o for o in batch if o.action == "finish"]
        retry = [o for o in batch if o.action == "retry"]
        back = [o.job_id for o in batch if o.action == "hand_back"]

        async def go(conn: psycopg.AsyncConnection):
            moved: set[int] = set()
            # prepare=False: a cached generic plan of these unnest joins degrades to a nested
            # loop that rescans the arrays for every row (10x slower at 500 rows).
            if finish:
                cur = await conn.execute(q("finish_jobs"), prepare=False, params={
                    "id": db.int_array(o.job_id for o in finish),
                    "attempt": db.int_array(o.attempt for o in finish),
                    "state": db.text_array(o.state for o in finish),
                    "result": db.text_array(o.result for o in finish),
                    "error": db.text_array(o.error for o in finish), "worker": self.id})
                moved.update(r[0] for r in await cur.fetchall())
            if retry:
                cur = await conn.execute(q("retry_jobs"), prepare=False, params={
                    "id": db.int_array(o.job_id for o in retry),
                    "attempt": db.int_array(o.attempt for o in retry),
                    "delay": [o.delay for o in retry],
                    "error": db.text_array(o.error for o in retry), "worker": self.id})
                moved.update(r[0] for r in await cur.fetchall())
            if back:
                await conn.execute(q("hand_back"), {"ids": back, "worker": self.id})
                moved.update(back)
            return moved

        moved = await self._finish_link.run(go)
        if retry:
            self._next_checked = 0.0  # a retry may be due before the time _idle_wait knows
        for o in batch:
            if o.job_id not in moved:
                # Fencing at work: our lease expired and the job was rescued (and maybe taken
                # by another worker), so this outcome must not count.
                self.log.warning("outcome_discarded_lease_lost", job_id=o.job_id,
                                 attempt=o.attempt, action=o.action, state=o.state)
        if back:
            self.log.info("jobs_handed_back", count=len(back))

    async def _write_progress(self, progress: dict[int, tuple[int, str]]) -> None:
        async def go(conn: psycopg.AsyncConnection):
            async with conn.cursor() as cur:
                await cur.executemany(q("set_progress"), [
                    {"id": job_id, "attempt": attempt, "progress": encoded, "worker": self.id}
                    for job_id, (attempt, encoded) in progress.items()])

        await self._finish_link.run(go)

    # -- shutdown ---------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Warm stop: wait up to the grace period for running jobs, then hand back the rest."""
        pending = [r.task for r in self._in_flight.values() if r.task and not r.task.done()]
        if pending and not self._hard:
            self.log.info("draining", in_flight=len(pending), grace=self.config.grace_seconds)
            all_done = asyncio.ensure_future(asyncio.wait(pending))
            hard = asyncio.ensure_future(self._hard_event.wait())
            await asyncio.wait([all_done, hard], timeout=self.config.grace_seconds,
                               return_when=asyncio.FIRST_COMPLETED)
            all_done.cancel()
            hard.cancel()
        for r in list(self._in_flight.values()):
            if r.task is not None and not r.task.done():
                self._stop_job(r.id, "shutdown")
        leftovers = [r.task for r in self._in_flight.values() if r.task]
        await asyncio.gather(*leftovers, return_exceptions=True)

    # -- background -------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        cfg = self.config
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), cfg.heartbeat_seconds)
            self._beat_now.clear()
            started = time.monotonic()
            try:
                rows = await self._bg_link.execute(q("renew_leases"), {
                    "worker": self.id, "lease_seconds": cfg.lease_seconds})
                await self._bg_link.execute(q("touch_worker"), self._worker_row())
            except psycopg.Error as exc:
                self.log.warning("heartbeat_failed", error=str(exc))
                continue
            held = {job_id: cancel for job_id, cancel in rows}
            for r in list(self._in_flight.values()):
                if r.task is None or r.task.done():
                    continue  # finished; its outcome is on its way
                if r.id not in held and r.claimed_at < started:
                    self._stop_job(r.id, "lease_lost")
                elif held.get(r.id):
                    self._stop_job(r.id, "cancelled")

    async def _maintenance_loop(self) -> None:
        cfg = self.config
        while True:
            await asyncio.sleep(cfg.maintenance_seconds * random.uniform(0.8, 1.2))
            try:
                await self._bg_link.run(self._maintain)
            except psycopg.Error as exc:
                self.log.warning("maintenance_failed", error=str(exc))

    async def _maintain(self, conn: psycopg.AsyncConnection) -> None:
        """Rescue expired leases, prune old finished jobs and dead worker rows. One process
        at a time does it: the one that gets the transaction-level advisory lock."""
        cfg = self.config
        async with conn.transaction():
            cur = await conn.execute(q("try_maintenance_lock"))
            if not (await cur.fetchone())[0]:
                return
            dead = len(await (await conn.execute(q("rescue_dead"))).fetchall())
            rescued = (await (await conn.execute(q("rescue_retry"))).fetchone())[0]
            pruned = (await (await conn.execute(q("prune_finished"), {
                "retention_seconds": cfg.retention_seconds, "limit": 10000})).fetchone())[0]
            await conn.execute(q("prune_workers"), {
                "stale_seconds": max(60.0, 10 * cfg.heartbeat_seconds)})
            await conn.execute(q("prune_cache"), {"limit": 10000})
        if dead or rescued or pruned:
            self.log.info("maintenance", rescued=rescued, dead_letters=dead, pruned=pruned)

    def _inserted(self, payload: str) -> None:
        """A jobqueue_insert notification: "queue" (runnable work) or "queue epoch" (work due
        at that time, which may be sooner than the time _idle_wait knows)."""
        queue, _, due = payload.partition(" ")
        if queue != self.config.queue:
            return
        if due:
            at = datetime.fromtimestamp(float(due), UTC)
            if self._next_run is not None and self._next_run <= at:
                return  # already waiting for something sooner
            self._next_run = at
            self._next_checked = time.monotonic()
        self._wake.set()

    async def _listen_loop(self) -> None:
        delay = 0.05
        while not self._closing:
            conn = None
            try:
                conn = await db.connect_async(self.url)
                await conn.execute("LISTEN jobqueue_insert")
                await conn.execute("LISTEN jobqueue_cancel")
                delay = 0.05
                self.listening.set()
                # Catch up on what was said while nobody listened: new work (wake the claim
                # loop) and cancellations (the heartbeat reads cancel_requested from the table).
                self._wake.set()
                self._beat_now.set()
                while True:
                    async for note in conn.notifies(timeout=30.0):
                        if note.channel == "jobqueue_insert":
                            self._inserted(note.payload)
                        elif note.channel == "jobqueue_cancel":
                            self._stop_job(int(note.payload), "cancelled")
                    await conn.execute("SELECT 1")  # a silent network loses no one forever
            except psycopg.OperationalError as exc:
                self.listening.clear()
                self.log.warning("listen_lost", error=str(exc).strip(), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()


# Young-generation collections in a worker process: one per this many allocations (Python's
# default is 700). See tune_gc().
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Fit the cyclic garbage collector to a worker process. Its defaults suit programs that
    keep few objects alive; a busy worker keeps thousands of in-flight Tasks, coroutines and
    contexts that survive young collections and are promoted, so the collector kept
    traversing the whole heap. Measured (scripts/profile_drain.py): about 3 of a no-op job's
    9 µs of worker CPU. So: freeze what start-up built (modules, tasks, configuration; never
    garbage) out of every later collection, and collect the young generation less often.
    No gc.collect() first: it took 9 ms of the worker's start to free 45 objects.
    Process-wide, so only run_worker does it, not a Worker embedded in someone's app."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def run_worker(url: str, config: WorkerConfig, tasks: Registry = registry, **hooks) -> None:
    """Run one worker in this process until SIGTERM/SIGINT (the CLI's entry point)."""
    worker = Worker(url, config, tasks=tasks, **hooks)
    tune_gc()
    asyncio.run(worker.run(install_signals=True))

