"""One LISTEN connection per web process, fanned out to the requests that wait on jobs.

It connects to JOBQUEUE_LISTEN_DATABASE_URL when set (a direct connection: through PgBouncer
in transaction mode a LISTEN hears nothing), else to the database. Subscribers are threads
(`Subscription`) or coroutines on the stream loop (`AsyncSubscription`, web/streams.py).

Workers announce every state or progress change on `jobqueue_events` as an id range
("LOW-HIGH"). A request following job 42 subscribes here and is woken when a range covers 42;
it then re-reads the job (the table is the truth, the notification only a nudge). If the
connection drops, every subscriber is woken once the hub is listening again, so nothing that
changed in between is missed.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from contextlib import contextmanager, suppress

import psycopg
import structlog

log = structlog.get_logger("jobqueue.web.events")


class Subscription:
    def __init__(self) -> None:
        self._event = threading.Event()

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """True if something may have changed since the last wait."""
        woke = self._event.wait(timeout)
        self._event.clear()
        return woke


class AsyncSubscription:
    """A subscription awaited on an asyncio loop (web/streams.py); woken from the hub's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def wake(self) -> None:
        with suppress(RuntimeError):  # the loop closed meanwhile: its process is stopping
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        """True if something may have changed since the last wait."""
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True


class Hub:
    def __init__(self, url: str):
        self.url = url
        self._subs: dict[int, set[Subscription]] = defaultdict(set)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobqueue-events", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.listening.wait(5)

    def stop(self) -> None:
        self._stopped.set()

    @contextmanager
    def subscribe(self, job_id: int, sub: Subscription | AsyncSubscription | None = None):
        sub = sub or Subscription()
        with self._lock:
            self._subs[job_id].add(sub)
        try:
            yield sub
        finally:
            with self._lock:
                self._subs[job_id].discard(sub)
                if not self._subs[job_id]:
                    del self._subs[job_id]

    def _dispatch(self, payload: str) -> None:
        low, _, high = payload.partition("-")
        try:
            lo, hi = int(low), int(high or low)
        except ValueError:
            return
        with self._lock:
            woken = [s for job_id, subs in self._subs.items() if lo <= job_id <= hi
                     for s in subs]
        for sub in woken:
            sub.wake()

    def wake_all(self) -> None:
        """Wake every subscriber (a stopping process ends its held requests this way)."""
        self._wake_all()

    def _wake_all(self) -> None:
        with self._lock:
            everyone = [s for subs in self._subs.values() for s in subs]
        for sub in everyone:
            sub.wake()

    def _run(self) -> None:
        delay = 0.1
        while not self._stopped.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute("LISTEN jobqueue_events")
                    self.listening.set()
                    self._wake_all()
                    delay = 0.1
                    while not self._stopped.is_set():
                        for note in conn.notifies(timeout=5.0):
                            self._dispatch(note.payload)
                        conn.execute("SELECT 1")
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("events_listen_lost", error=str(exc).strip(), retry_in=delay)
                with suppress(Exception):
                    self._stopped.wait(delay)
                delay = min(delay * 2, 5.0)
