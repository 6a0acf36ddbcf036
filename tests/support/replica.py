"""A throwaway primary and a streaming standby of it, for the tests of the web app's reads
from a replica (JOBQUEUE_READ_DATABASE_URL).

The session-scoped fixture `streaming_replica` runs the machine's Postgres 15 binaries: initdb
in a temporary directory, a primary on a free loopback port with wal_level=replica and a
trusted replication entry in pg_hba.conf, then `pg_basebackup -R` and a hot standby on another
port. The machine's own server (127.0.0.1:5432) is never touched. As root, every binary runs
as the `postgres` user (Postgres refuses root). Without the binaries the tests are skipped,
except under CI (CI set), where that is a failure.

Each test takes a database of its own on the primary (`replica_db`), cloned from a migrated
template; the standby replays it. `Replica.caught_up()` waits until the standby has replayed
everything the primary wrote so far, and `Replica.paused()` stops replay for a while, which is
how the tests make the replica lag.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from jobqueue import db
from jobqueue.db import migrate

PG_BIN = Path("/usr/lib/postgresql/15/bin")
TOOLS = ("initdb", "pg_ctl", "pg_basebackup", "postgres")

# Settings of both clusters: loopback only, no socket in a shared directory, fast and
# disposable (no fsync), a standby that answers queries while it replays.
CONF = """
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = replica
max_wal_senders = 5
fsync = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 100
hot_standby = on
log_min_messages = warning
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """One Postgres data directory and the server running on it."""

    name: str
    datadir: Path
    port: int
    user: str | None  # run the binaries as this user (when we are root)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def run(self, tool: str, *args: str) -> None:
        result = subprocess.run([str(PG_BIN / tool), *args], user=self.user,
                                cwd=self.datadir.parent, capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0:
            log = self.datadir.parent / f"{self.name}.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}{tail}")

    def configure(self, extra: str = "") -> None:
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write(CONF + f"port = {self.port}\n" + extra)

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.datadir), "-l",
                 str(self.datadir.parent / f"{self.name}.log"), "-w", "-t", "60", "start")

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            self.run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.url(dbname), autocommit=True, row_factory=dict_row)


class Replica:
    """A primary and its streaming standby; `template` is a migrated database on both."""

    def __init__(self, primary: Cluster, standby: Cluster, template: str):
        self.primary, self.standby, self.template = primary, standby, template

    def caught_up(self, timeout: float = 30.0) -> None:
        """Wait until the standby has replayed everything the primary has written so far.
        (Replay has no notification to await: this polls the standby's position.)"""
        with self.primary.connect() as conn:
            target = conn.execute("SELECT pg_current_wal_lsn() AS lsn").fetchone()["lsn"]
        deadline = time.monotonic() + timeout
        with self.standby.connect() as conn:
            while not conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn AS done",
                    (target,)).fetchone()["done"]:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the standby did not replay up to {target} "
                                         f"within {timeout}s")
                time.sleep(0.01)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The standby stops replaying (after catching up with what was written before) until
        the block ends: everything the primary writes meanwhile is missing on the replica."""
        self.caught_up()
        with self.standby.connect() as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
            deadline = time.monotonic() + 30
            while conn.execute("SELECT pg_get_wal_replay_pause_state() AS s"
                               ).fetchone()["s"] != "paused":
                if time.monotonic() > deadline:
                    raise AssertionError("the standby did not pause its replay")
                time.sleep(0.01)
            try:
                yield
            finally:
                conn.execute("SELECT pg_wal_replay_resume()")

    def new_database(self) -> str:
        name = f"jq_rep_{uuid.uuid4().hex[:10]}"
        with self.primary.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.caught_up()
        return name

    def drop_database(self, name: str) -> None:
        with self.standby.connect() as conn:  # a test may end with replay paused
            if conn.execute("SELECT pg_is_wal_replay_paused() AS p").fetchone()["p"]:
                conn.execute("SELECT pg_wal_replay_resume()")
        with self.primary.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _binaries_or_skip() -> None:
    missing = [t for t in TOOLS if not (PG_BIN / t).is_file()]
    if missing:
        reason = (f"the streaming-replica tests need the Postgres 15 binaries in {PG_BIN} "
                  f"(missing: {', '.join(missing)}; Debian: apt-get install postgresql-15)")
        if os.environ.get("CI"):
            pytest.fail(reason + "; under CI this is a failure, not a skip")
        pytest.skip(reason)


def _as_user() -> str | None:
    """Who runs the binaries: ourselves, or `postgres` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root needs a `postgres` user to run Postgres as")
    return "postgres"


def start_replica(base: Path, user: str | None, started: list[Cluster]) -> None:
    """initdb a primary, start it, clone it with pg_basebackup -R and start the standby;
    each cluster joins `started` once it runs (for the caller to stop, whatever happens)."""
    primary = Cluster("primary", base / "primary", free_port(), user)
    primary.run("initdb", "-D", str(primary.datadir), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--no-sync")
    primary.configure()
    with (primary.datadir / "pg_hba.conf").open("a") as hba:
        hba.write("host replication all 127.0.0.1/32 trust\n")
    primary.start()
    started.append(primary)
    standby = Cluster("standby", base / "standby", free_port(), user)
    # -R writes standby.signal and primary_conninfo; -X stream carries the WAL written
    # meanwhile; -c fast does not wait for the next checkpoint.
    primary.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                "-D", str(standby.datadir), "-R", "-X", "stream", "-c", "fast", "--no-sync")
    standby.configure()
    standby.start()
    started.append(standby)
    deadline = time.monotonic() + 30
    with primary.connect() as conn:
        while not conn.execute("SELECT count(*) AS n FROM pg_stat_replication "
                               "WHERE state = 'streaming'").fetchone()["n"]:
            if time.monotonic() > deadline:
                raise AssertionError("the standby never started streaming")
            time.sleep(0.02)


@pytest.fixture(scope="session")
def streaming_replica() -> Iterator[Replica]:
    """A primary and a streaming hot standby for the session, with a migrated template."""
    _binaries_or_skip()
    user = _as_user()
    base = Path(tempfile.mkdtemp(prefix="jobqueue-replica-"))
    if user:
        shutil.chown(base, user)
    clusters: list[Cluster] = []
    try:
        start_replica(base, user, clusters)
        primary, standby = clusters
        template = "jq_rep_template"
        with primary.connect() as conn:
            conn.execute(f'CREATE DATABASE "{template}"')
        with db.connect(primary.url(template)) as conn:
            migrate.migrate(conn)
        replica = Replica(primary, standby, template)
        replica.caught_up()
        yield replica
    finally:
        for cluster in reversed(clusters):
            cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class ReplicaDatabase:
    """A test's database: its URL on the primary and on the standby."""

    name: str
    primary_url: str
    standby_url: str


@pytest.fixture
def replica_db(streaming_replica: Replica) -> Iterator[ReplicaDatabase]:
    name = streaming_replica.new_database()
    yield ReplicaDatabase(name, make_conninfo(streaming_replica.primary.url(name)),
                          make_conninfo(streaming_replica.standby.url(name)))
    streaming_replica.drop_database(name)
