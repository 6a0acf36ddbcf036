"""The schedules service of a worker: at start, synchronise declared schedules
(jobqueue.toml, @task(cron=...)); then enqueue every due fire (jobqueue/schedules/tick.py).

Every worker runs it, none leads: each fire's unique run row, written in the enqueue's
transaction, makes it happen once however many workers tick at the same moment, and whoever
is up during a rolling restart picks up where the others stopped. While nothing is due it
costs one short query per poll on the worker's claim connection; a due fire (and the start-up
sync) open a connection of their own for the tick, in a thread (the enqueue path, batch files
included, is synchronous), in place of the worker's finish link, closed meanwhile (outcomes
wait for the tick), so the process never holds more than three connections. Runs older than
RUNS_RETENTION_DAYS are pruned by maintenance (a prune hook registered here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import psycopg
import structlog

from jobqueue import db
from jobqueue.db.queries import q
from jobqueue.tasks import Registry
from jobqueue.worker.link import Link, LinkPool
from jobqueue.worker.maintenance import register_prune_hook

log = structlog.get_logger("jobqueue.worker")

Clock = Callable[[], datetime]
# Seconds a tick's own connection may take to open: a stopping worker waits for a tick's
# thread to end, so it must not hang on an unreachable database.
CONNECT_TIMEOUT = 10
RUNS_RETENTION_DAYS = 90  # a schedule's runs list goes back this far


async def prune_runs(conn: psycopg.AsyncConnection) -> int:
    """Maintenance hook: drop a slice of runs past the retention (leader-gated in SQL)."""
    cur = await conn.execute(q("prune_schedule_runs"), {"days": RUNS_RETENTION_DAYS,
                                                         "limit": 10000})
    return cur.rowcount


register_prune_hook("schedule_runs", prune_runs)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    def __init__(self, url: str, registries: Iterable[Registry], *, clock: Clock = utc_now,
                 bound_log=log, lent: LinkPool | None = None):
        self.url, self.clock, self.log = url, clock, bound_log
        self.lent = lent  # the worker's finish link, vacated while a thread works in its place
        self.registries = list(registries)
        self.synced = False

    # -- one pass, synchronous (a thread of the worker; the multi-process test calls these) --

    def sync(self) -> dict[str, list[str]]:
        """Save the declared schedules (only what changed)."""
        from jobqueue.schedules import declared

        merged = Registry()
        for registry in self.registries:
            merged = merged.merged_with(registry)
        configured, tasks = declared.load(), declared.from_tasks(merged)
        with db.connect(self.url, connect_timeout=CONNECT_TIMEOUT) as conn:
            done = declared.sync(conn, self.clock(), configured, tasks)
        self.synced = True
        return done

    def tick(self) -> list[dict]:
        """Enqueue every fire due by the clock; returns the runs recorded."""
        from jobqueue.schedules import tick

        with db.connect(self.url, connect_timeout=CONNECT_TIMEOUT) as conn:
            return tick.tick(conn, self.clock())

    # -- the service -----------------------------------------------------------------------

    def _declared_here(self) -> bool:
        """Whether jobqueue.toml or this process's tasks declare schedules."""
        from jobqueue.schedules import declared

        merged = Registry()
        for registry in self.registries:
            merged = merged.merged_with(registry)
        return bool(declared.load() or declared.from_tasks(merged))

    async def _anything_to_sync(self, link: Link) -> bool:
        """Whether the start-up sync has work: schedules declared in jobqueue.toml or on
        tasks, or ones declared before that may have to go (asked on the claim link)."""
        if await asyncio.to_thread(self._declared_here):
            return True
        rows = await link.execute(q("schedules_declared_exist"))
        return bool(rows and rows[0][0])

    async def _in_place(self, work: Callable[[], object]) -> None:
        """Run a synchronous pass in a thread, its connection taking the place of the
        worker's finish link (closed meanwhile): the process stays within three."""
        if self.lent is None:
            await asyncio.to_thread(work)
            return
        async with self.lent.vacated():
            await asyncio.to_thread(work)

    async def run(self, link: Link, poll_seconds: float, start_delay: float = 0.0) -> None:
        """Sync, then tick whenever the earliest schedule is due (checked every poll). A
        database error is logged and tried again at the next poll; a wrong jobqueue.toml
        (ConfigError) stops the worker, naming the table and field. `start_delay`: seconds
        to leave the worker's first claims to themselves (the sync reads jobqueue.toml and
        imports the cron parser; schedules fire by the minute, so a second costs nothing)."""
        if start_delay > 0:
            await asyncio.sleep(start_delay)
        while not self.synced:
            try:
                # Reading jobqueue.toml and importing the schedules package (cron parsing)
                # run in a thread, so the worker's first claim does not wait for them.
                if not await self._anything_to_sync(link):
                    self.synced = True  # no connection of its own for nothing (budget: 3)
                    break
                await self._in_place(self.sync)
            except psycopg.Error as exc:
                self.log.warning("scheduler_sync_failed", error=str(exc).strip())
                await asyncio.sleep(poll_seconds)
        while True:
            try:
                rows = await link.execute(q("schedule_next_due"))
                due = rows[0][0] if rows else None
                wait = poll_seconds
                if due is not None:
                    wait = min(poll_seconds, max(0.0, (due - self.clock()).total_seconds()))
                    if wait <= 0:
                        await self._in_place(self.tick)
                        continue
            except psycopg.Error as exc:
                self.log.warning("scheduler_failed", error=str(exc).strip())
                wait = poll_seconds
            await asyncio.sleep(wait)
