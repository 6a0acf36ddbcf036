"""Per-process resources of the web app (the connection pools, the LISTEN hub, the stream
loop), made on first use in the serving process: Gunicorn forks its workers after importing
the app, and a pool must not cross a fork. `resources()` is how a request finds them.

Two pools, by what a request does:
- `client`, on DATABASE_URL (the primary): every write (enqueue, cancel, retry, uploads,
  queue pauses), sign-in and sessions, each request's token check and rate-limit charge, the
  failed-authentication buckets, and the reads of `?wait=` and SSE, which must see a change
  as soon as its notification arrives (a notification can overtake the replica's replay);
- `reader`, on JOBQUEUE_READ_DATABASE_URL (a streaming replica) when it is set, with
  read-only connections: the pages, lists, exports and metrics. Unset, reads share `client`.
`read(call)` asks the replica first and the primary when the replica has not got the row
yet: a job enqueued a moment ago is found, never a 404. A replica more than
JOBQUEUE_READ_MAX_LAG_SECONDS behind, or unreachable, is left alone until it has caught up
(web/replica.py), and `reader_after(position)` reads on the primary until the replica has
replayed a change the caller made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from flask import Flask

from jobqueue.client import Client

T = TypeVar("T")


class Resources:
    """Per-process resources of the app, made on first use (after any fork)."""

    def __init__(self, app: Flask):
        self.app = app
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._replica: Client | None = None
        self._freshness = None
        self._hub = None
        self._streams = None

    @property
    def url(self) -> str:
        from jobqueue import db

        return self.app.config["DATABASE_URL"] or db.database_url()

    @property
    def listen_url(self) -> str:
        """Where the LISTEN session goes: JOBQUEUE_LISTEN_DATABASE_URL (a direct connection
        when DATABASE_URL is a PgBouncer in transaction mode), else the database itself."""
        return self.app.config["LISTEN_DATABASE_URL"] or self.url

    @property
    def client(self) -> Client:
        """The primary's pool: writes, authentication and rate accounting, fresh reads."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = Client(self.url, min_size=1,
                                          max_size=self.app.config["POOL_MAX_SIZE"])
        return self._client

    @property
    def replicated(self) -> bool:
        """Whether reads go to a replica of their own (JOBQUEUE_READ_DATABASE_URL)."""
        return bool(self.app.config.get("READ_DATABASE_URL"))

    @property
    def replica(self) -> Client:
        """The replica's pool (read-only connections); only when `replicated`."""
        if self._replica is None:
            with self._lock:
                if self._replica is None:
                    from web.replica import Freshness

                    self._replica = Client(self.app.config["READ_DATABASE_URL"], min_size=1,
                                           max_size=self.app.config["POOL_MAX_SIZE"],
                                           read_only=True)
                    self._freshness = Freshness(self.client, self._replica,
                                                self.app.config["READ_MAX_LAG_SECONDS"])
        return self._replica

    @property
    def freshness(self):
        """The replica's lag (web/replica.Freshness); only when `replicated`."""
        self.replica  # noqa: B018 (made together)
        return self._freshness

    @property
    def reader(self) -> Client:
        """The pool for reads that may be a moment behind: the replica's while it is usable
        (reachable, not too far behind), else the primary's; the primary's when no replica
        is configured."""
        if not self.replicated:
            return self.client
        replica = self.replica
        return replica if self.freshness.usable() else self.client

    def reader_after(self, position: int | None) -> Client:
        """The reader, or the primary while the replica has not replayed `position` (the
        primary's WAL position after a change this caller made; None: no such change)."""
        reader = self.reader
        if position is not None and reader is not self.client \
                and not self.freshness.fresh_for(position):
            return self.client
        return reader

    def read(self, call: Callable[[Client], T | None], after: int | None = None) -> T | None:
        """call(reader), and call(client) when that found nothing (None) on the replica: the
        row may be newer than the replica's replay position (read-your-writes for a client
        that just created it). A row that exists nowhere costs one read on each."""
        return self.source(call, after)[1]

    def source(self, call: Callable[[Client], T | None],
               after: int | None = None) -> tuple[Client, T | None]:
        """As read(), with the pool that found it: the one to read the row's details from
        (a batch's jobs, say)."""
        reader = self.reader_after(after)
        found = call(reader)
        if found is None and reader is not self.client:
            reader, found = self.client, call(self.client)
        return reader, found

    @property
    def hub(self):
        """The LISTEN hub behind SSE and ?wait=: one connection per process, on the primary
        (a standby cannot LISTEN, and notifications are not replicated)."""
        if self._hub is None:
            with self._lock:
                if self._hub is None:
                    from web.events import Hub

                    self._hub = Hub(self.listen_url)
                    self._hub.start()
        return self._hub

    @property
    def streams(self):
        """The loop serving held requests (SSE, ?wait=) and their caps: one per process."""
        if self._streams is None:
            hub, client = self.hub, self.client
            with self._lock:
                if self._streams is None:
                    from web.streams import Streams

                    self._streams = Streams(self.app, hub, client.get,
                                            per_token=self.app.config["STREAMS_PER_TOKEN"],
                                            per_process=self.app.config["STREAMS_PER_PROCESS"])
        return self._streams

    def held_requests(self) -> int:
        """SSE streams and long polls this process holds open now."""
        return 0 if self._streams is None else self._streams.slots.open()

    def stop_streams(self, timeout: float) -> None:
        """A stopping worker ends its held requests (see web/streams.py)."""
        if self._streams is not None:
            self._streams.stop(timeout)

    def close(self) -> None:
        self.stop_streams(timeout=1.0)
        if self._hub is not None:
            self._hub.stop()
        if self._client is not None:
            self._client.close()
        if self._replica is not None:
            self._replica.close()


def resources() -> Resources:
    from flask import current_app

    return current_app.extensions["jobqueue"]
