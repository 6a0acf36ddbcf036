"""Connections: which database, and how to open a connection to it.

`DATABASE_URL` wins; without it the embedded server starts (see embedded.py). Set
`JOBQUEUE_PGBOUNCER=1` behind PgBouncer in transaction mode: it turns off server-side prepared
statements, which such a pooler cannot carry between clients, session SETs and startup options
(jobqueue's own: JIT off, read-only). LISTEN needs a session: `JOBQUEUE_LISTEN_DATABASE_URL`
names a direct connection for it (listen_url).
"""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row

from jobqueue import settings


def database_url() -> str:
    url = settings.DATABASE_URL.get()
    if url:
        return url
    from jobqueue.db import embedded

    return embedded.database_url()


def describe() -> str:
    """Which database this process would use, for people, without connecting or starting
    anything: DATABASE_URL with its password hidden, or the embedded server's data directory."""
    url = settings.DATABASE_URL.get()
    if url:
        return f"{redact(url)} (DATABASE_URL)"
    from jobqueue.db import embedded

    return f"embedded Postgres in {embedded.pgdata_dir()} (DATABASE_URL is not set)"


def redact(url: str) -> str:
    """A connection string as `postgresql://user:***@host:port/dbname`: never the password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unparsable DATABASE_URL)"
    user = parts.get("user") or ""
    if parts.get("password"):
        user += ":***"
    host, port = str(parts.get("host") or ""), parts.get("port")
    query = ""
    if host.startswith("/"):  # a socket directory
        host, query = "", f"?host={host}"
    elif port:
        host += f":{port}"
    return f"postgresql://{user + '@' if user else ''}{host}/{parts.get('dbname') or ''}{query}"


def listen_url(url: str) -> str:
    """Where a LISTEN session goes: JOBQUEUE_LISTEN_DATABASE_URL (a direct connection, when
    `url` is a PgBouncer in transaction mode, which cannot keep a LISTEN), else `url`."""
    return settings.JOBQUEUE_LISTEN_DATABASE_URL.get() or url


def behind_pgbouncer() -> bool:
    return settings.JOBQUEUE_PGBOUNCER.get()


# A dead peer (a partition, a host gone without a FIN) must be noticed in seconds, not after
# the kernel's defaults (2 h of idle before the first keepalive; 15 min of retransmissions):
# TCP keepalives after 10 s idle, every 3 s, given up after 3 misses; unacknowledged data
# given up after 20 s; a connection attempt after 10 s. (libpq ignores them on Unix sockets.)
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3,
              "keepalives_count": 3, "tcp_user_timeout": 20_000, "connect_timeout": 10}


# application_name of a worker process's connections (its links, LISTEN and a platform's
# pool); other processes use "jobqueue". /metrics counts pg_stat_activity by it.
WORKER_APPLICATION_NAME = "jobqueue-worker"


# Postgres's JIT compiles a statement whose estimated cost passes jit_above_cost, at every
# execution: tens to hundreds of ms of CPU to save microseconds. A queue's statements are short,
# and those over a big backlog are estimated high (maintenance's alert check over 200,000 waiting
# jobs: 14 M, so ~0.7 s of CPU every few seconds, a tenth of a drain's Postgres CPU in
# scripts/profile_drain.py). jobqueue's sessions turn it off; a URL's own `options` come after,
# so `?options=-c%20jit%3Don` turns it back on.
JIT_OFF_OPTION = "-c jit=off"

# Every transaction of a connection opened with this is read-only: a write fails with
# "cannot execute ... in a read-only transaction" instead of happening.
READ_ONLY_OPTION = "-c default_transaction_read_only=on"


def connect_kwargs(url: str | None = None, *, read_only: bool = False) -> dict:
    """Arguments of every connection jobqueue opens. Given the `url`, also the session's
    startup options (JIT off; every transaction read-only if `read_only`) added to any
    `options` the URL carries; none behind PgBouncer, which refuses startup options it does
    not know (a replica refuses writes by itself)."""
    # prepare_threshold=0 prepares hot statements on first use; None disables preparing.
    kwargs = {
        "autocommit": True,
        "prepare_threshold": None if behind_pgbouncer() else 0,
        "application_name": "jobqueue",
    } | KEEPALIVES
    if url is None or behind_pgbouncer():
        return kwargs
    from psycopg.conninfo import conninfo_to_dict

    given = str(conninfo_to_dict(url).get("options") or "")
    options = [JIT_OFF_OPTION, given, READ_ONLY_OPTION if read_only else ""]
    return kwargs | {"options": " ".join(o for o in options if o)}


def connect(url: str | None = None, **overrides) -> psycopg.Connection:
    url = url or database_url()
    kwargs = connect_kwargs(url) | {"row_factory": dict_row} | overrides
    return psycopg.connect(url, **kwargs)


async def connect_async(url: str, **overrides) -> psycopg.AsyncConnection:
    kwargs = connect_kwargs(url) | overrides
    return await psycopg.AsyncConnection.connect(url, **kwargs)


def int_array(values) -> str:
    """A Postgres array literal of integers, for a `%(x)s::bigint[]` parameter. psycopg's own
    list dumping costs about 3 µs per element; a worker's outcome batches send thousands."""
    return "{" + ",".join(map(str, values)) + "}"


def text_array(values) -> str:
    """A Postgres array literal of strings (None is NULL), for a `%(x)s::text[]` parameter."""
    return "{" + ",".join([
        "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for v in values]) + "}"


def word_array(values) -> str:
    """A Postgres array literal of strings that need no quotes: uuids, words (a state). A
    join, a fifth of text_array's cost per element; the outcome batches send two such."""
    return "{" + ",".join(values) + "}"
