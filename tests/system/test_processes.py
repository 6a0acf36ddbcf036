"""Real worker processes: exactly-once drains, kill -9, SIGTERM, a Postgres restart, and the
`--processes` supervisor. Executions are counted through a side-effect table (test_effects)
that the `record` task writes on every run."""

from __future__ import annotations

import signal
import subprocess
import time

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from jobqueue import JobSpec, db
from jobqueue.client import Client
from jobqueue.db import embedded, migrate
from tests.support.helpers import jobqueue_cmd, wait_until
from tests.support.worker_tasks import EFFECTS_DDL


class Cluster:
    """Worker processes on one database, and what they did."""

    def __init__(self, url: str):
        self.url = url
        self.procs: list[subprocess.Popen] = []
        self.conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
        self.conn.execute(EFFECTS_DDL)

    def start(self, n: int = 1, *args: str, queue: str = "q",
              env: dict | None = None) -> list[subprocess.Popen]:
        new = [jobqueue_cmd("--log-level", "WARNING", "worker", "--queue", queue,
                            "--import", "tests.support.worker_tasks", *args, url=self.url, env=env,
                            stderr=subprocess.DEVNULL)
               for _ in range(n)]
        self.procs += new
        return new

    def registered(self) -> int:
        return self.conn.execute("SELECT count(*) AS n FROM jobqueue.workers").fetchone()["n"]

    def query(self, sql: str, params=None) -> list[dict]:
        return self.conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params=None):
        return next(iter(self.query(sql, params)[0].values()))

    def executions(self) -> int:
        return self.scalar("SELECT count(*) FROM test_effects")

    def succeeded(self) -> int:
        return self.scalar("SELECT count(*) FROM jobqueue.finished WHERE state = 'succeeded'")

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        self.conn.close()


@pytest.fixture
def cluster(db_url):
    c = Cluster(db_url)
    yield c
    c.close()


def enqueue_records(url: str, n: int, seconds: float = 0.0) -> list[int]:
    with Client(url) as jq:
        return jq.enqueue_many([JobSpec("record", {"seconds": seconds}, queue="q")
                                for _ in range(n)])


def test_four_processes_drain_5000_jobs_each_exactly_once(cluster, db_url):
    ids = enqueue_records(db_url, 5000)
    cluster.start(4, "--concurrency", "50")
    wait_until(lambda: cluster.succeeded() == 5000, timeout=60, message="drain")
    per_job = cluster.query("SELECT job_id, count(*) AS n FROM test_effects GROUP BY job_id")
    assert len(per_job) == 5000 and {r["job_id"] for r in per_job} == set(ids)
    assert max(r["n"] for r in per_job) == 1, "a job ran twice although nothing crashed"
    pids = {r["pid"] for r in cluster.query("SELECT DISTINCT pid FROM test_effects")}
    assert len(pids) == 4, "the work was not shared by the four processes"


def test_kill_9_mid_drain_loses_nothing_and_reruns_only_the_victims_jobs(cluster, db_url):
    ids = enqueue_records(db_url, 3000, seconds=0.05)
    cluster.start(3, "--concurrency", "20", "--lease-seconds", "2",
                  "--maintenance-seconds", "0.3")
    wait_until(lambda: cluster.executions() >= 500, timeout=30, message="drain under way")
    victim = cluster.procs[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    victim_worker = cluster.scalar("SELECT id FROM jobqueue.workers WHERE pid = %s", (victim.pid,))
    in_flight = {r["id"] for r in cluster.query(
        "SELECT id FROM jobqueue.jobs WHERE lease_owner = %s", (victim_worker,))}
    assert in_flight, "the victim held no jobs when killed: the test proves nothing"

    wait_until(lambda: cluster.succeeded() == 3000, timeout=60, message="drain after kill")
    states = cluster.query("SELECT state, count(*) AS n FROM jobqueue.finished GROUP BY state")
    assert states == [{"state": "succeeded", "n": 3000}]
    assert cluster.scalar("SELECT count(DISTINCT job_id) FROM test_effects") == len(ids)
    rerun = cluster.query("""
        SELECT job_id, array_agg(pid ORDER BY at) AS pids FROM test_effects
        GROUP BY job_id HAVING count(*) > 1""")
    assert {r["job_id"] for r in rerun} <= in_flight
    assert all(r["pids"][:-1] == [victim.pid] * (len(r["pids"]) - 1) for r in rerun)
    # A finish the victim had sent may still commit after the kill (Postgres finishes the
    # statement), so the snapshot can hold a few jobs that were in fact done: a superset.
    rescued = cluster.query("""
        SELECT id, errors FROM jobqueue.finished WHERE jsonb_array_length(errors) > 0""")
    assert rescued and {r["id"] for r in rescued} <= in_flight
    assert all(e["worker"] == str(victim_worker) and e["type"] == "LeaseExpired"
               for r in rescued for e in r["errors"])


def test_sigterm_mid_drain_exits_0_in_the_grace_period_and_loses_nothing(cluster, db_url):
    enqueue_records(db_url, 400, seconds=0.1)
    leaving, _staying = cluster.start(2, "--concurrency", "10", "--grace-seconds", "5")
    wait_until(lambda: cluster.executions() >= 50, timeout=30, message="drain under way")
    t0 = time.monotonic()
    leaving.send_signal(signal.SIGTERM)
    assert leaving.wait(10) == 0
    assert time.monotonic() - t0 < 5
    wait_until(lambda: cluster.succeeded() == 400, timeout=60, message="drain after SIGTERM")
    # Every in-flight job finished inside the grace period: nothing ran twice.
    assert cluster.scalar("SELECT count(*) FROM test_effects") == 400
    assert cluster.scalar("SELECT count(DISTINCT job_id) FROM test_effects") == 400


def test_sigterm_hands_back_jobs_that_outlast_the_grace_period(cluster, db_url):
    ids = enqueue_records(db_url, 3, seconds=30)
    (proc,) = cluster.start(1, "--concurrency", "3", "--grace-seconds", "0.5")
    wait_until(lambda: cluster.executions() == 3, timeout=30, message="jobs started")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    rows = cluster.query("SELECT lease_owner, attempts FROM jobqueue.jobs WHERE id = ANY(%s)",
                         (ids,))
    assert rows == [{"lease_owner": None, "attempts": 0}] * 3
    assert cluster.registered() == 0


def test_supervisor_runs_n_processes_and_stops_them_cleanly(cluster, db_url):
    (parent,) = cluster.start(1, "--processes", "2", "--concurrency", "5")
    wait_until(lambda: cluster.registered() == 2, timeout=30, message="two workers")
    ids = enqueue_records(db_url, 100)
    wait_until(lambda: cluster.succeeded() == len(ids), timeout=30)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(20) == 0
    assert cluster.registered() == 0


def test_workers_ride_out_a_postgres_restart(tmp_path):
    """Stop the server mid-drain, start it again: workers reconnect and nothing is lost."""
    pgdata = tmp_path / "pgdata"
    url = make_conninfo(embedded.database_url(pgdata), dbname="postgres")
    with db.connect(url) as conn:
        migrate.migrate(conn)
    c = Cluster(url)
    try:
        enqueue_records(url, 1500, seconds=0.01)
        c.start(2, "--concurrency", "20", "--poll-seconds", "0.2")
        wait_until(lambda: c.executions() >= 200, timeout=30, message="drain under way")
        c.conn.close()
        embedded.stop(pgdata)
        assert all(p.poll() is None for p in c.procs), "a worker died with the database"
        time.sleep(1.0)  # an outage of a second: wall time is the point
        embedded.start(pgdata)
        c.conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
        wait_until(lambda: c.succeeded() == 1500, timeout=60, message="drain after restart")
        assert c.scalar("SELECT count(DISTINCT job_id) FROM test_effects") == 1500
        assert c.scalar("SELECT count(*) FROM jobqueue.jobs") == 0
        for p in c.procs:
            p.send_signal(signal.SIGTERM)
        assert [p.wait(20) for p in c.procs] == [0, 0]
    finally:
        c.close()
        embedded.stop(pgdata)



def test_pgbouncer_mode_works_without_listen(cluster, db_url):
    """JOBQUEUE_PGBOUNCER=1 with --poll-only, as PgBouncer in transaction mode requires: the
    worker drains the queue and none of its sessions LISTENs."""
    ids = enqueue_records(db_url, 50)
    (proc,) = cluster.start(1, "--poll-only", "--poll-seconds", "0.1",
                            env={"JOBQUEUE_PGBOUNCER": "1"})
    wait_until(lambda: cluster.registered() == 1, timeout=30)
    pids = [r["pid"] for r in cluster.query(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'jobqueue-worker'")]
    assert pids, "the worker's sessions were not found"
    wait_until(lambda: cluster.succeeded() == len(ids), timeout=30)
    # No session of the worker listens or holds a prepared statement.
    listening = cluster.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) AND query ILIKE 'LISTEN%%'",
        (pids,))
    assert listening == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_pgbouncer_mode_turns_off_prepared_statements(monkeypatch):
    from jobqueue import db as db_module

    monkeypatch.delenv("JOBQUEUE_PGBOUNCER", raising=False)
    assert db_module.connect_kwargs()["prepare_threshold"] == 0
    monkeypatch.setenv("JOBQUEUE_PGBOUNCER", "1")
    assert db_module.connect_kwargs()["prepare_threshold"] is None
