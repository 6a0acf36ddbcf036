"""A worker's connection that survives database restarts.

Each call retries on connection loss, with backoff, until it succeeds or the worker gives up
(a hard stop, or a start-up that found no database within its connect timeout). Warnings
about an unreachable database are logged once and then at most every 10 seconds.
Owns nothing but the connection: what to run is the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
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

    async def run(self, fn: Callable[[psycopg.AsyncConnection], Awaitable[Any]]) -> Any:
        delay = 0.05
        warned = 0.0
        async with self.lock:
            while True:
                try:
                    if self.conn is None or self.conn.closed:
                        self.conn = await db.connect_async(
                            self.url, application_name=db.WORKER_APPLICATION_NAME)
                        if self.session_sql and not db.behind_pgbouncer():
                            await self.conn.execute(self.session_sql)
                    return await fn(self.conn)
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


async def opened(conn: psycopg.AsyncConnection) -> None:
    """A Link.run call that only makes sure the connection is open."""
