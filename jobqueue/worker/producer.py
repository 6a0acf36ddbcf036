"""The claim loop of one queue (a worker runs one per queue it serves): claim runnable jobs
in batches as slots free up and hand each to the executor; when the queue is empty, sleep
until a notification, the next poll, or the time the earliest scheduled job is due.
With `until_idle`, a claim that came back short tells the Worker, which stops once every
queue is idle and nothing is in flight. A claim the queue's fleet-wide caps held back is
tried again shortly (nothing announces a freed place).

It owns the queue's claim connection and the knowledge of when to look again; it never runs
a handler or writes an outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from uuid import UUID

import psycopg

from jobqueue.db import store
from jobqueue.worker.config import QueueConfig, WorkerConfig
from jobqueue.worker.executor import Executor
from jobqueue.worker.link import Link

# How soon a claim held back by the queue's caps (sql/queries/jobs.sql, `claim`) is tried
# again. A capped queue's claims take turns on its row, so each costs a little more than a
# plain one; 20 ms keeps a place that freed from staying empty for long.
HELD_BACK_RECHECK_SECONDS = 0.02


class Producer:
    def __init__(self, link: Link, worker_id: UUID, queue: QueueConfig, config: WorkerConfig,
                 executor: Executor, claim_lock: asyncio.Lock):
        self.link, self.worker_id, self.config = link, worker_id, config
        self.executor, self.claim_lock = executor, claim_lock
        self.queue, self.concurrency, self.claim_batch = (
            queue.name, queue.concurrency, queue.claim_batch)
        self.wake = asyncio.Event()
        self.claim_rounds = 0
        # The claim statement this queue's settings call for (plain, fair or capped): the
        # last claim says, and a claim with the wrong one is refused and redone (store.claim).
        self.claim_statement = "claim"
        self._next_run: datetime | None = None  # when the queue's next scheduled job is due
        self._next_checked = 0.0  # monotonic time _next_run was read
        # until_idle (set by the Worker): called after a claim that came back short. `epoch`
        # counts the times the worker's jobs all finished (the Worker bumps it); a short claim
        # counts as "nothing runnable" only if it started in the current epoch, so work that a
        # finishing job enqueued is seen by a claim made after it finished.
        self.on_short_claim: Callable[[], None] | None = None
        # gate (set by the Worker): asked before each claim; seconds to hold off claiming
        # (a platform with no usable key), or 0 to go on.
        self.gate: Callable[[], Awaitable[float]] | None = None
        self.epoch = 0
        self.idle_epoch = -1  # the epoch of the latest short claim

    def look_again(self) -> None:
        """Something may be due sooner than we know (a retry was scheduled): ask again."""
        self._next_checked = 0.0

    def inserted(self, payload: str) -> None:
        """A jobqueue_insert notification: "queue" (runnable work) or "queue epoch" (work due
        at that time, which may be sooner than the time _idle_wait knows)."""
        queue, _, due = payload.partition(" ")
        if queue != self.queue:
            return
        if due:
            at = datetime.fromtimestamp(float(due), UTC)
            if self._next_run is not None and self._next_run <= at:
                return  # already waiting for something sooner
            self._next_run = at
            self._next_checked = time.monotonic()
        self.wake.set()

    async def run(self, stopping: Callable[[], bool]) -> None:
        cfg, executor = self.config, self.executor
        slots, free_slots = executor.slots, executor.free_slots
        backlog = False
        while not stopping():
            free = free_slots()
            if free <= 0:
                slots.clear()
                await slots.wait()
                continue
            if self.gate is not None:
                hold = await self.gate()
                if hold > 0:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(hold):
                            await self.wake.wait()
                    continue
            limit = min(free, self.claim_batch)
            if backlog and limit < min(self.concurrency, self.claim_batch) // 2:
                # Work is waiting but few slots are free: let a few more free up, so a busy
                # worker claims in batches rather than one row per statement.
                await asyncio.sleep(0.002)
                limit = min(free_slots(), self.claim_batch)
            self.wake.clear()
            epoch = self.epoch
            # The lease service renews only jobs the executor knows; while a claim is in
            # flight it waits, so the rows of this claim are known before it looks.
            async with self.claim_lock:
                try:
                    rows = await self.link.run(functools.partial(
                        store.claim, queue=self.queue, limit=limit, worker=self.worker_id,
                        lease_seconds=cfg.lease_seconds, statement=self.claim_statement))
                except psycopg.OperationalError:
                    if stopping():  # a hard stop gave up on an unreachable database
                        return
                    raise
                now = time.monotonic()
                for row in rows:
                    executor.start(row, now)
            self.claim_statement = rows.statement
            self.claim_rounds += 1
            backlog = len(rows) == limit
            if backlog or stopping():
                continue
            if rows.held_back:
                # The queue's caps left work waiting: a place frees when any worker of the
                # fleet finishes one of its jobs, which nothing announces, so look again soon.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HELD_BACK_RECHECK_SECONDS):
                        await self.wake.wait()
                continue
            if self.on_short_claim is not None:
                self.idle_epoch = epoch
                self.on_short_claim()
                if stopping():
                    continue
            await self._idle_wait()

    async def _idle_wait(self) -> None:
        """Sleep until a notification, a freed stop, or the next poll (or scheduled job)."""
        timeout = self.config.poll_seconds
        now = datetime.now(UTC)
        # next_run_at looks at every waiting row of the queue: ask at most once per poll
        # interval (every insert wakes every idle worker), again once the time it gave has
        # come, and after this worker scheduled retries. Scheduled inserts announce their due
        # time themselves (inserted()), so nothing new waits for the poll.
        due_passed = self._next_run is not None and self._next_run <= now
        if due_passed or time.monotonic() - self._next_checked >= self.config.poll_seconds:
            await asyncio.sleep(0)  # let the jobs just claimed start before the round trip
            self._next_run = await self.link.run(
                lambda conn: store.next_run_at(conn, self.queue))
            self._next_checked = time.monotonic()
        if self._next_run is not None:
            until = (self._next_run - now).total_seconds()
            timeout = max(0.0, min(timeout, until))
        # asyncio.timeout(), not wait_for(): on 3.11 wait_for wraps the wait in a Task of its
        # own, a loop iteration more between the notification and the claim.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.wake.wait()
