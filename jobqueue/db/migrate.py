"""Apply the numbered files in `sql/migrations/` in order, once each, under an advisory lock.

The lock makes concurrent `jobqueue migrate` runs safe (a release phase and a worker starting
together): the second waits, then finds nothing left to do. Each file runs in its own
transaction together with the row that records it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
import structlog

from jobqueue.db.queries import sql_dir

log = structlog.get_logger("jobqueue.migrations")

_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")
_LOCK_KEY = "jobqueue.migrate"



@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def available(folder: Path | None = None) -> list[Migration]:
    found = []
    for path in sorted((folder or sql_dir() / "migrations").glob("*.sql")):
        m = _FILE.match(path.name)
        if m:
            found.append(Migration(int(m[1]), m[2], path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number in {folder or sql_dir()}")
    return found


def applied(conn: psycopg.Connection) -> set[int]:
    exists = conn.execute("SELECT to_regclass('jobqueue.migrations') IS NOT NULL").fetchone()
    if not _first(exists):
        return set()
    return {_first(r) for r in conn.execute("SELECT version FROM jobqueue.migrations")}


def pending(conn: psycopg.Connection) -> list[Migration]:
    done = applied(conn)
    return [m for m in available() if m.version not in done]


def migrate(conn: psycopg.Connection) -> list[Migration]:
    """Apply what is missing; return what was applied. `conn` must be in autocommit mode.

    Each step is one transaction holding a transaction-level advisory lock, and checks what is
    applied inside it: parallel runs apply each migration once, and no lock outlives its
    transaction, so this works through PgBouncer in transaction mode too (where a session
    lock would be taken on one server connection and released on another)."""
    ran = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK_KEY,))
        conn.execute((sql_dir() / "migrations_table.sql").read_text(), prepare=False)
    for migration in available():
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK_KEY,))
            if migration.version in applied(conn):
                continue
            conn.execute(migration.path.read_text(), prepare=False)
            conn.execute(
                "INSERT INTO jobqueue.migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
        log.info("migration_applied", version=migration.version, name=migration.name)
        ran.append(migration)
    return ran


def _first(row):
    if row is None:
        return None
    return next(iter(row.values())) if isinstance(row, dict) else row[0]
