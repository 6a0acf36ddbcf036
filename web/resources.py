"""Per-process resources of the web app (the connection pool, the LISTEN hub, the stream
loop), made on first use in the serving process: Gunicorn forks its workers after importing
the app, and a pool must not cross a fork. `resources()` is how a request finds them."""

from __future__ import annotations

import threading

from flask import Flask

from jobqueue.client import Client


class Resources:
    """Per-process resources of the app, made on first use (after any fork)."""

    def __init__(self, app: Flask):
        self.app = app
        self._lock = threading.Lock()
        self._client: Client | None = None
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
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = Client(self.url, min_size=1,
                                          max_size=self.app.config["POOL_MAX_SIZE"])
        return self._client

    @property
    def hub(self):
        """The LISTEN hub behind SSE and ?wait=: one connection per process."""
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


def resources() -> Resources:
    from flask import current_app

    return current_app.extensions["jobqueue"]
