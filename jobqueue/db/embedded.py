"""The embedded Postgres used when no DATABASE_URL is set.

pgserver ships a real Postgres in its wheel. We start it under JOBQUEUE_HOME and leave it
running (cleanup_mode=None) so every jobqueue process of the project shares one server; the
first process starts it, later ones find it through its postmaster.pid.

Where: `JOBQUEUE_HOME` when set, else `.jobqueue` in the project root, the first directory
from the working directory upwards that holds jobqueue.toml, pyproject.toml or .git (see
jobqueue/config.py). So `jobqueue status` run from `scripts/` finds the server that the worker
started from the root. `jobqueue db status` says which one is in use; `jobqueue db stop` stops it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from jobqueue import config, settings


def home() -> Path:
    given = settings.JOBQUEUE_HOME.get()
    return given.resolve() if given else config.project_root() / ".jobqueue"


def pgdata_dir() -> Path:
    return home() / "pgdata"


def server(pgdata: Path | None = None):
    """Start (or find) the embedded server for `pgdata` and return its pgserver handle."""
    pgdata = pgdata or pgdata_dir()
    pgdata.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, containers).
        warnings.simplefilter("ignore")
        import pgserver

        return pgserver.get_server(pgdata, cleanup_mode=None)


def database_url(pgdata: Path | None = None) -> str:
    return server(pgdata).get_uri()


@dataclass(frozen=True)
class State:
    """What the data directory says about its server, found without starting anything."""

    pgdata: Path
    initialised: bool  # initdb has run (PG_VERSION exists)
    running: bool
    pid: int | None = None
    port: int | None = None
    socket_dir: str | None = None

    @property
    def url(self) -> str | None:
        """The running server's URL, as pgserver builds it (user and database postgres)."""
        if not self.running:
            return None
        if self.socket_dir:
            return f"postgresql://postgres:@/postgres?host={self.socket_dir}"
        return f"postgresql://postgres:@localhost:{self.port}/postgres" if self.port else None

    @property
    def address(self) -> str:
        if self.socket_dir:
            return f"socket {self.socket_dir}/.s.PGSQL.{self.port}"
        return f"port {self.port}" if self.port else "no address"


def state(pgdata: Path | None = None) -> State:
    """Read postmaster.pid (pid, port, socket directory) and check that its process lives."""
    pgdata = pgdata or pgdata_dir()
    initialised = (pgdata / "PG_VERSION").exists()
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (FileNotFoundError, IndexError, ValueError):
        return State(pgdata, initialised, running=False)
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    socket_dir = (lines[4].strip() or None) if len(lines) > 4 else None
    return State(pgdata, initialised, _alive(pid), pid, port, socket_dir)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def stop(pgdata: Path | None = None) -> int | None:
    """Stop the embedded server (fast shutdown: sessions are ended, nothing is lost). Returns
    the pid it stopped, or None when nothing was running. Starts nothing."""
    found = state(pgdata)
    if not found.running:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, as in server()
        from pgserver import pg_ctl

    user = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # pgserver runs Postgres as the user `pgserver` when we are root (Postgres refuses
        # root), and pg_ctl must run as that user too. It needs to traverse the directories
        # above pgdata, which something may have closed since the start (pytest resets
        # /tmp/pytest-of-root to 0700 whenever a session starts): open them as pgserver does.
        from pgserver.utils import ensure_prefix_permissions

        ensure_prefix_permissions(found.pgdata)
        user = "pgserver"
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=found.pgdata, user=user)
    return found.pid


def start(pgdata: Path) -> str:
    """Start a stopped embedded server again; returns its URL."""
    from pgserver.postgres_server import PostgresServer

    srv = PostgresServer._instances.get(pgdata)
    if srv is None:
        return database_url(pgdata)
    with srv._lock:
        srv.ensure_postgres_running()
    return srv.get_uri()
