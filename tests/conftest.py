"""Test fixtures: a real Postgres, and a fresh database per test.

The server is DATABASE_URL's when set, otherwise an embedded one (pgserver) started for the
session. Each test gets its own database cloned from a migrated template (CREATE DATABASE ...
TEMPLATE): fully isolated, LISTEN/NOTIFY and several connections work, and it costs a few
tens of milliseconds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from jobqueue import db, tokens
from jobqueue.client import Client
from jobqueue.db import migrate
from jobqueue.llm.platforms import Platform
from jobqueue.llm.prices import PriceTable
from jobqueue.llm.runtime import PlatformRuntime
from jobqueue.sim.server import FakeOpenAI, Limits
from jobqueue.tasks import Registry
from jobqueue.worker import WorkerConfig
from tests.support.helpers import (
    KEYS,
    ThreadWorker,
    admin_connection,
    drop_database,
    new_database,
)
from tests.support.replica import replica_db, streaming_replica  # noqa: F401 (fixtures)

# The tests are a development run: the web app (in process, under Gunicorn or honcho) may sign
# its cookies with a secret stored in the database (web/__init__.py, JOBQUEUE_DEV).
os.environ.setdefault("JOBQUEUE_DEV", "1")


@pytest.fixture(scope="session")
def server_url() -> str:
    """URL of the server the tests use (its default database). The embedded server's data
    lives in a directory of its own, not under pytest's basetemp: pytest deletes all but the
    three newest basetemps when a session starts, so a second test session on the machine
    deleted a running server's data directory from under it."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from jobqueue.db import embedded

    home = Path(tempfile.mkdtemp(prefix="jobqueue-tests-"))
    pgdata = home / "pgdata"
    try:
        yield embedded.database_url(pgdata)
    finally:
        embedded.stop(pgdata)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(server_url) -> str:
    name = f"jq_tpl_{uuid.uuid4().hex[:10]}"
    with admin_connection(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with db.connect(make_conninfo(server_url, dbname=name)) as conn:
        migrate.migrate(conn)
    yield name
    with admin_connection(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(server_url, template_db) -> str:
    """A migrated database of this test's own."""
    name, url = new_database(server_url, template_db)
    yield url
    drop_database(server_url, name)


@pytest.fixture
def empty_db_url(server_url) -> str:
    """A database with no schema at all (for migration tests)."""
    name, url = new_database(server_url, None)
    yield url
    drop_database(server_url, name)


@pytest.fixture
def client(db_url) -> Client:
    with Client(db_url) as c:
        yield c


@pytest.fixture
def sql(db_url):
    """Run SQL in the test database: sql("SELECT ...", params) -> list of dict rows."""
    conn = psycopg.connect(db_url, autocommit=True, row_factory=dict_row)

    def run(query, params=None):
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    run.url = db_url
    yield run
    conn.close()


@pytest.fixture
def start_worker(db_url):
    """start_worker(tasks, **config) -> ThreadWorker; all are stopped at teardown."""
    started: list[ThreadWorker] = []

    def start(tasks: Registry, url: str | None = None, **config) -> ThreadWorker:
        config.setdefault("poll_seconds", 0.2)
        config.setdefault("retry_base_seconds", 0.05)
        tw = ThreadWorker(url or db_url, WorkerConfig(**config), tasks).start()
        started.append(tw)
        return tw

    yield start
    for tw in started:
        if tw.thread.is_alive():
            tw.stop(hard=True)


# -- LLM platforms against the OpenAI-compatible simulator (loopback only) ------------

@pytest.fixture
def sim():
    server = FakeOpenAI(keys={"sk-sim-a": Limits(), "sk-sim-b": Limits()})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def platform_worker(db_url):
    """platform_worker(platform, **config): an in-process worker running that platform."""
    started = []

    def start(p: Platform, environ: dict | None = None, tasks: Registry | None = None,
              prices=None, **config) -> ThreadWorker:
        """The platform's worker; with `tasks`, a worker of those tasks (on `queue`) whose
        runtime for `p` serves their ctx.llm() calls; `prices`: its PriceTable."""
        runtime = PlatformRuntime(p, db_url, environ=environ or KEYS,
                                  prices=prices or PriceTable())
        config = {"queue": p.name, "concurrency": 20, "poll_seconds": 0.2,
                  "retry_base_seconds": 0.05} | config
        tw = ThreadWorker(db_url, WorkerConfig(**config), tasks or runtime.registry(),
                          gates={p.name: runtime.claim_gate})
        tw.worker.on_start, tw.worker.on_stop = runtime.start, runtime.stop
        started.append(tw.start())
        return tw

    yield start
    for tw in started:
        if tw.thread.is_alive():
            tw.stop(hard=True)


@pytest.fixture
def make_token(db_url):
    """make_token(owner, scopes, rate_limit) -> a new API token for the test database."""
    def make(owner="alice", scopes=("read", "write"), rate_limit=1000) -> str:
        with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
            token, _ = tokens.create(conn, owner, list(scopes), rate_limit)
        return token
    return make


@pytest.fixture
def config_file(sim, tmp_path):
    """A jobqueue.toml with the simulator as platform `sim` (for the web app's tests)."""
    path = tmp_path / "jobqueue.toml"
    path.write_text(f'[platforms.sim]\nbase_url = "{sim.base_url}"\nmodel = "sim-main"\n'
                    'api_key_env = "SIM_KEY_A"\nmax_tokens = 200\ntimeout = 5\n')
    return str(path)
