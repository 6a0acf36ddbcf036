"""Test fixtures: a real Postgres, and a fresh database per test.

The server is DATABASE_URL's when set, otherwise an embedded one (pgserver) started for the
session. Each test gets its own database cloned from a migrated template (CREATE DATABASE ...
TEMPLATE): fully isolated, LISTEN/NOTIFY and several connections work, and it costs a few
tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from jobqueue import db, migrations
from jobqueue.client import Client
from jobqueue.fake_openai import FakeOpenAI, Limits
from jobqueue.llm import PlatformRuntime
from jobqueue.platforms import Platform
from jobqueue.tasks import Registry
from jobqueue.worker import Worker, WorkerConfig

ROOT = Path(__file__).resolve().parent.parent


def _admin(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


@pytest.fixture(scope="session")
def server_url(tmp_path_factory) -> str:
    """URL of the server the tests use (its default database)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from jobqueue import embedded

    pgdata = tmp_path_factory.mktemp("embedded") / "pgdata"
    yield embedded.database_url(pgdata)
    embedded.stop(pgdata)


@pytest.fixture(scope="session")
def template_db(server_url) -> str:
    name = f"jq_tpl_{uuid.uuid4().hex[:10]}"
    with _admin(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with db.connect(make_conninfo(server_url, dbname=name)) as conn:
        migrations.migrate(conn)
    yield name
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_database(server_url: str, template: str | None) -> tuple[str, str]:
    name = f"jq_t_{uuid.uuid4().hex[:12]}"
    with _admin(server_url) as conn:
        clause = f' TEMPLATE "{template}"' if template else ""
        conn.execute(f'CREATE DATABASE "{name}"{clause}')
    return name, make_conninfo(server_url, dbname=name)


def drop_database(server_url: str, name: str) -> None:
    with _admin(server_url) as conn:
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


class ThreadWorker:
    """A Worker running its asyncio loop in a background thread of the test process."""

    def __init__(self, url: str, config: WorkerConfig, tasks: Registry):
        self.worker = Worker(url, config, tasks=tasks)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self.worker.run())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> ThreadWorker:
        self.thread.start()
        return self

    def stop(self, hard: bool = False, timeout: float = 30.0) -> None:
        self.worker.stop(hard=hard)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error:
            raise self.error


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


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.02, message: str = ""):
    """Poll a condition that has no event to await (state in another process's database)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


def wait_finished(client: Client, job_ids, timeout: float = 20.0):
    ids = list(job_ids)

    def done():
        jobs = [client.get(i) for i in ids]
        return jobs if all(j is not None and j.finished for j in jobs) else None

    return wait_until(done, timeout, message=f"jobs {ids[:5]}... to finish")


def jobqueue_cmd(*args: str, url: str, env: dict | None = None, **kwargs):
    """Start `python -m jobqueue ARGS` as a child process against `url`."""
    full_env = os.environ | {"DATABASE_URL": url, "LOG_FORMAT": "json"} | (env or {})
    return subprocess.Popen([sys.executable, "-m", "jobqueue", *args], cwd=ROOT, env=full_env,
                            **kwargs)


def run_cli(*args: str, url: str, env: dict | None = None, input: str | None = None):
    full_env = os.environ | {"DATABASE_URL": url, "LOG_FORMAT": "json"} | (env or {})
    return subprocess.run([sys.executable, "-m", "jobqueue", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, input=input, timeout=60)


# -- LLM platforms against the OpenAI-compatible simulator (loopback only) ------------

KEYS = {"SIM_KEY_A": "sk-sim-a", "SIM_KEY_B": "sk-sim-b"}


@pytest.fixture
def sim():
    server = FakeOpenAI(keys={"sk-sim-a": Limits(), "sk-sim-b": Limits()})
    server.start()
    yield server
    server.stop()


def platform(sim: FakeOpenAI, **overrides) -> Platform:
    settings = {"name": "sim", "base_url": sim.base_url, "model": "sim-main",
                "api_key_env": ("SIM_KEY_A",), "rpm": 6000, "tpm": 1_000_000,
                "max_tokens": 16, "timeout": 5.0, "burst_seconds": 1.0}
    return Platform(**(settings | overrides))


@pytest.fixture
def platform_worker(db_url):
    """platform_worker(platform, **config): an in-process worker running that platform."""
    started = []

    def start(p: Platform, **config) -> ThreadWorker:
        runtime = PlatformRuntime(p, db_url, environ=KEYS)
        config = {"queue": p.name, "concurrency": 20, "poll_seconds": 0.2,
                  "retry_base_seconds": 0.05} | config
        tw = ThreadWorker(db_url, WorkerConfig(**config), runtime.registry())
        tw.worker.on_start, tw.worker.on_stop = runtime.start, runtime.stop
        started.append(tw.start())
        return tw

    yield start
    for tw in started:
        if tw.thread.is_alive():
            tw.stop(hard=True)


