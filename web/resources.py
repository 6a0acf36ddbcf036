"""Per-process resources of the web app (the connection pools, the LISTEN hub), made on first
use in the serving process: Gunicorn forks its workers after importing the app, and a pool
must not cross a fork. `resources()` is how a request finds them.

Two pools, by what a request does:
- `client`, on DATABASE_URL (the primary): every write (enqueue, cancel, retry, uploads,
  queue pauses), sign-in and sessions, each request's token check and rate-limit charge, the
  failed-authentication buckets, and the reads of `?wait=` and SSE, which must see a change
  as soon as its notification arrives (a notification can overtake the replica's replay);
- `reader`, on JOBQUEUE_READ_DATABASE_URL (a streaming replica) when it is set, with
  read-only connections: the pages, lists, exports and metrics. Unset, reads share `client`.
`read(call)` asks the replica first and the primary when the replica has not got the row
yet: a job enqueued a moment ago is found, never a 404.
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
        self._reader: Client | None = None
        self._hub = None

    @property
    def url(self) -> str:
        from jobqueue import db

        return self.app.config["DATABASE_URL"] or db.database_url()

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
    def reader(self) -> Client:
        """The pool for reads that may be a moment behind: the replica's, read-only; the
        primary's when no replica is configured."""
        if not self.replicated:
            return self.client
        if self._reader is None:
            with self._lock:
                if self._reader is None:
                    self._reader = Client(self.app.config["READ_DATABASE_URL"], min_size=1,
                                          max_size=self.app.config["POOL_MAX_SIZE"],
                                          read_only=True)
        return self._reader

    def read(self, call: Callable[[Client], T | None]) -> T | None:
        """call(reader), and call(client) when that found nothing (None) on a replica: the
        row may be newer than the replica's replay position (read-your-writes for a client
        that just created it). A row that exists nowhere costs one read on each."""
        found = call(self.reader)
        if found is None and self.replicated:
            found = call(self.client)
        return found

    @property
    def hub(self):
        """The LISTEN hub behind SSE and ?wait=: one connection per process, on the primary
        (a standby cannot LISTEN, and notifications are not replicated)."""
        if self._hub is None:
            with self._lock:
                if self._hub is None:
                    from web.events import Hub

                    self._hub = Hub(self.url)
                    self._hub.start()
        return self._hub

    def close(self) -> None:
        if self._hub is not None:
            self._hub.stop()
        if self._client is not None:
            self._client.close()
        if self._reader is not None:
            self._reader.close()


def resources() -> Resources:
    from flask import current_app

    return current_app.extensions["jobqueue"]
