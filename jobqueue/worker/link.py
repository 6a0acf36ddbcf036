"""A worker's connection that survives database restarts.

Each call retries on connection loss, with backoff, until it succeeds or the worker gives up
(a hard stop, or a start-up that found no database within its connect timeout). Warnings
about an unreachable database are logged once and then at most every 10 seconds.
Owns nothing but the connection: what to run is the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import structlog

from jobqueue import db

log = structlog.get_logger("jobqueue.worker")

_WARN_EVERY = 10.0


class Link:
    def __init__(self, url: str, name: str, give_up: Callable[[], bool],
                 session_sql: str | None = None):
        self.url, self.name, self.give_up = url, name, give_up
        self.session_sql = session_sql
        self.conn: psycopg.AsyncConnection | None = None
        self.lock = asyncio.Lock()

    async def ensure_open(self) -> psycopg.AsyncConnection:
        """The connection, opened if it is not (the caller holds the lock)."""
        if self.conn is None or self.conn.closed:
            self.conn = await db.connect_async(
                self.url, application_name=db.WORKER_APPLICATION_NAME)
            if self.session_sql and not db.behind_pgbouncer():
                await self.conn.execute(self.session_sql)
        return self.conn

    async def run(self, fn: Callable[[psycopg.AsyncConnection], Awaitable[Any]]) -> Any:
        delay = 0.05
        warned = 0.0
        async with self.lock:
            while True:
                try:
                    return await fn(await self.ensure_open())
                except psycopg.OperationalError as exc:
                    await self.close()
                    if self.give_up():
                        raise
                    now = time.monotonic()
                    if now - warned >= _WARN_EVERY:
                        warned = now
                        log.warning("db_unavailable", link=self.name,
                                    error=str(exc).strip().splitlines()[0] if str(exc) else "",
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


class LinkPool:
    """A pool-shaped view of a Link (psycopg_pool's `async with pool.connection() as conn`):
    what a platform's limiter, cache and spend accounting, and tasks that need the database
    (`ctx.connection()`), borrow instead of opening connections of their own, so a worker
    process keeps to its three connections however many queues and platforms it serves.
    A block holds the link (its lock) for its statements: keep it to a few short statements,
    never a provider call. The connection is in autocommit, as a pool's are here; use
    `conn.transaction()` for several statements that go together. A lost connection fails
    the block (the caller's error path, as with a pool) and is opened again by the next."""

    def __init__(self, link: Link):
        self.link = link

    @contextlib.asynccontextmanager
    async def vacated(self):
        """Hold the link closed for the block, so that synchronous code (a thread: a
        schedule's fire, statements only) may open one connection of its own in its place
        and the process still holds no more than three. Outcomes wait meanwhile; the link
        opens again on its next use. Code that also calls out (a Batch API pass) takes
        `for_thread` blocks instead, around its statements only."""
        async with self.link.lock:
            await self.link.close()
            yield

    def for_thread(self) -> Callable[[], contextlib.AbstractContextManager[psycopg.Connection]]:
        """For synchronous code about to run in a thread (a Batch API pass), called on the
        loop: a source of blocks, `with borrow() as conn:`, each of which holds the link
        closed and a connection of the thread's own open in its place for that block only.
        So the process stays within three connections, and outcomes and limiter statements
        wait for a block's statements, not for the provider calls between blocks (unlike
        `vacated`, which holds the link for the whole of its block)."""
        loop = asyncio.get_running_loop()
        link = self.link

        async def take() -> None:
            await link.lock.acquire()
            try:
                await link.close()
            except BaseException:  # cancelled (the loop shutting down): never leave it held
                link.lock.release()
                raise

        @contextlib.contextmanager
        def borrowed():
            asyncio.run_coroutine_threadsafe(take(), loop).result()
            try:
                with db.connect(link.url,
                                application_name=db.WORKER_APPLICATION_NAME) as conn:
                    yield conn
            finally:
                loop.call_soon_threadsafe(link.lock.release)

        return borrowed

    @contextlib.asynccontextmanager
    async def connection(self):
        async with self.link.lock:
            conn = await self.link.ensure_open()
            try:
                yield conn
            except psycopg.OperationalError:
                await self.link.close()
                raise


# The LinkPool of the worker whose loop runs the current task (set by Worker.run, inherited
# by every task it starts): for code without a handle on the worker, such as maintenance
# hooks. None outside a worker.
current: contextvars.ContextVar[LinkPool | None] = contextvars.ContextVar(
    "jobqueue_worker_lent", default=None)


async def opened(conn: psycopg.AsyncConnection) -> None:
    """A Link.run call that only makes sure the connection is open."""
