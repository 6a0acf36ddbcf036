"""The embedded Postgres used when no DATABASE_URL is set.

pgserver ships a real Postgres in its wheel. We start it under JOBQUEUE_HOME and leave it
running (cleanup_mode=None) so every jobqueue process of the checkout shares one server; the
first process starts it, later ones find it through its postmaster.pid.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("JOBQUEUE_HOME") or ".jobqueue").resolve()


def server(pgdata: Path | None = None):
    """Start (or find) the embedded server for `pgdata` and return its pgserver handle."""
    pgdata = pgdata or home() / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, containers).
        warnings.simplefilter("ignore")
        import pgserver

        return pgserver.get_server(pgdata, cleanup_mode=None)


def database_url(pgdata: Path | None = None) -> str:
    return server(pgdata).get_uri()


def stop(pgdata: Path) -> None:
    """Stop the embedded server (fast shutdown). Used by tests that restart Postgres."""
    from pgserver import pg_ctl

    srv = server(pgdata)
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=srv.system_user)


def start(pgdata: Path) -> str:
    """Start a stopped embedded server again; returns its URL."""
    from pgserver.postgres_server import PostgresServer

    srv = PostgresServer._instances.get(pgdata)
    if srv is None:
        return database_url(pgdata)
    with srv._lock:
        srv.ensure_postgres_running()
    return srv.get_uri()
