"""LISTEN for new work and cancellations on a dedicated autocommit connection, and hand each
notification to the callback for its channel. The worker gives it JOBQUEUE_LISTEN_DATABASE_URL
when set (db.listen_url): a direct session, when DATABASE_URL is a PgBouncer in transaction
mode, where a LISTEN would hear nothing.

The table, not the notification, is the source of truth: after every (re)connection the
`on_connected` callback lets the worker catch up on what was said while nobody listened, and
a silent connection is checked with `SELECT 1` every 30 seconds. It never claims or writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

import psycopg
import structlog

from jobqueue import db

log = structlog.get_logger("jobqueue.worker")


class Listener:
    def __init__(self, url: str, channels: dict[str, Callable[[str], None]],
                 on_connected: Callable[[], None], bound_log=log):
        self.url, self.channels, self.on_connected = url, channels, on_connected
        self.log = bound_log
        self.listening = threading.Event()  # set while LISTEN is in place (tests wait on it)

    async def run(self, closing: Callable[[], bool]) -> None:
        delay = 0.05
        while not closing():
            conn = None
            try:
                conn = await db.connect_async(
                    self.url, application_name=db.WORKER_APPLICATION_NAME)
                for channel in self.channels:
                    await conn.execute(f"LISTEN {channel}")
                delay = 0.05
                self.listening.set()
                self.on_connected()
                while True:
                    async for note in conn.notifies(timeout=30.0):
                        handler = self.channels.get(note.channel)
                        if handler is not None:
                            handler(note.payload)
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
