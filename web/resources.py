"""Per-process resources of the web app (the connection pool, the LISTEN hub), made on first
use in the serving process: Gunicorn forks its workers after importing the app, and a pool
must not cross a fork. `resources()` is how a request finds them."""

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

    @property
    def url(self) -> str:
        from jobqueue import db

        return self.app.config["DATABASE_URL"] or db.database_url()

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

                    self._hub = Hub(self.url)
                    self._hub.start()
        return self._hub

    def close(self) -> None:
        if self._hub is not None:
            self._hub.stop()
        if self._client is not None:
            self._client.close()


def resources() -> Resources:
    from flask import current_app

    return current_app.extensions["jobqueue"]
