"""Through a real PgBouncer in transaction mode (issue 10, point 13): DATABASE_URL is the
bouncer (with JOBQUEUE_PGBOUNCER=1: no prepared statements, no session SETs) and
JOBQUEUE_LISTEN_DATABASE_URL the direct connection that LISTEN needs. The whole API under
Gunicorn, `?wait=` and SSE woken promptly, migrations, and workers draining jobs."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import psycopg
import pytest
import requests

from jobqueue import tokens
from jobqueue.client import Client
from tests.support.helpers import jobqueue_cmd, run_cli
from tests.support.pgbouncer import PgBouncer
from tests.support.web import Api, Gunicorn

PROMPT_SECONDS = 5.0  # "promptly": without LISTEN a ?wait= answers only at its end (20 s)


@pytest.fixture
def bouncer(server_url):
    b = PgBouncer(server_url)
    yield b
    b.stop()


@pytest.fixture
def pooled_url(bouncer, db_url) -> str:
    return bouncer.url(db_url)


def _env(db_url: str, pooled_url: str) -> dict:
    return {"DATABASE_URL": pooled_url, "JOBQUEUE_PGBOUNCER": "1",
            "JOBQUEUE_LISTEN_DATABASE_URL": db_url}


@pytest.fixture
def web(db_url, pooled_url, config_file):
    server = Gunicorn(pooled_url, **_env(db_url, pooled_url), JOBQUEUE_CONFIG=config_file,
                      SIM_KEY_A="sk-sim-a")
    yield server
    server.stop()


@pytest.fixture
def worker(db_url, pooled_url):
    """`jobqueue worker` (LISTEN on, the default) through the bouncer, queue `pgb`."""
    proc = jobqueue_cmd("worker", "--queue", "pgb", "--concurrency", "20",
                        url=pooled_url, env=_env(db_url, pooled_url),
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    proc.terminate()
    out, _ = proc.communicate(timeout=40)
    assert "prepared statement" not in out, out[-3000:]


def _token(pooled_url: str, owner="alice", scopes=("admin",)) -> str:
    with psycopg.connect(pooled_url, autocommit=True, prepare_threshold=None) as conn:
        return tokens.create(conn, owner, list(scopes), 100_000)[0]


class TestThroughPgBouncer:
    def test_wait_returns_the_fresh_state_promptly(self, web, worker, pooled_url):
        api = Api(web.base, _token(pooled_url))
        job_id = api.post("/api/jobs", json={"queue": "pgb", "kind": "sleep",
                                             "payload": {"seconds": 0.5}}).json()["id"]
        started = time.monotonic()
        job = api.get(f"/api/jobs/{job_id}?wait=20").json()
        assert job["state"] == "succeeded", job
        assert time.monotonic() - started < PROMPT_SECONDS

    def test_sse_gets_every_change_promptly(self, web, worker, pooled_url):
        api = Api(web.base, _token(pooled_url))
        job_id = api.post("/api/jobs", json={"queue": "pgb", "kind": "sleep",
                                             "payload": {"seconds": 1}}).json()["id"]
        started = time.monotonic()
        events = []
        with api.get(f"/api/jobs/{job_id}/events", stream=True) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    events.append([line.removeprefix("event: "), time.monotonic() - started])
                elif line.startswith("data: ") and events:
                    events[-1].append(json.loads(line.removeprefix("data: "))["state"])
                if events and events[-1][0] == "done" and len(events[-1]) == 3:
                    break
        assert events[0][2] == "waiting" and ("state", "running") in {
            (e[0], e[2]) for e in events}
        assert events[-1][0] == "done" and events[-1][2] == "succeeded"
        assert events[-1][1] < PROMPT_SECONDS, events
        # Progress reached the stream as it happened (a tenth each), not in one go at the end.
        assert sum(1 for e in events if e[0] == "state" and e[2] == "running") >= 3, events

    def test_the_whole_api(self, web, pooled_url, db_url):
        admin = Api(web.base, _token(pooled_url))
        alice = Api(web.base, _token(pooled_url, "alice", ("read", "write")))
        for path in ("/healthz", "/readyz"):
            assert requests.get(web.base + path, timeout=10).status_code == 200
        r = alice.post("/api/jobs", json={"queue": "idle", "kind": "k", "payload": {"a": 1},
                                          "idempotency_key": "once"})
        assert r.status_code == 201
        job_id = r.json()["id"]
        assert alice.post("/api/jobs", json={"queue": "idle", "kind": "k",
                                             "idempotency_key": "once"}).json()["id"] == job_id
        assert alice.get(f"/api/jobs/{job_id}").json()["payload"] == {"a": 1}
        assert alice.get(f"/api/jobs/{job_id}?wait=0.2").json()["state"] == "waiting"
        assert alice.post(f"/api/jobs/{job_id}/cancel").json()["outcome"] == "cancelled"
        assert alice.post(f"/api/jobs/{job_id}/retry").json()["state"] == "waiting"
        batch = alice.post("/api/batches", json={"platform": "sim", "name": "b",
                                                 "items": [{"prompt": "hi"}, {"prompt": "yo"}]})
        assert batch.status_code == 201, batch.text
        batch_id = batch.json()["id"]
        assert alice.get(f"/api/batches/{batch_id}").status_code == 200
        assert alice.get(f"/api/batches/{batch_id}/results").status_code == 200
        assert alice.get(f"/api/batches/{batch_id}/results?format=csv").status_code == 200
        doc = alice.post("/api/documents", data={"platform": "sim"},
                         files={"file": ("a.txt", b"Some text to analyse.")})
        assert doc.status_code == 201, doc.text
        assert alice.get(f"/api/documents/{doc.json()['id']}").status_code == 200
        assert admin.get("/api/queues").status_code == 200
        assert admin.post("/api/queues/idle/pause").json()["paused"] is True
        assert admin.post("/api/queues/idle/resume").json()["paused"] is False
        assert admin.get("/api/sessions").status_code == 200
        assert "jobqueue_jobs" in admin.get("/metrics").text
        assert admin.get("/api/openapi.json").status_code == 200
        # Many requests in a row, over the bouncer's shared server connections: every
        # statement is its own transaction, so any session state would have shown by now.
        for i in range(100):
            assert alice.post("/api/jobs", json={"queue": "idle", "kind": "k",
                                                 "payload": {"i": i}}).status_code == 201
            assert alice.get(f"/api/jobs/{job_id}").status_code == 200

    def test_a_worker_drains_a_backlog(self, pooled_url, db_url, monkeypatch):
        monkeypatch.setenv("JOBQUEUE_PGBOUNCER", "1")  # this process's Client too
        with Client(pooled_url) as client:
            ids = client.enqueue_payloads("echo", [{"n": n} for n in range(500)], queue="drain")
        done = run_cli("worker", "--queue", "drain", "--until-idle", "--concurrency", "50",
                       url=pooled_url, env=_env(db_url, pooled_url))
        assert done.returncode == 0, done.stderr[-3000:]
        assert "prepared statement" not in done.stderr + done.stdout
        with Client(db_url) as client:
            jobs = [client.get(i) for i in ids]
        assert {j.state for j in jobs} == {"succeeded"}
        assert [j.result for j in jobs] == [{"n": n} for n in range(500)]

    def test_a_listening_worker_is_woken_by_notify_not_by_its_poll(self, pooled_url, db_url):
        """With a poll of 30 s, only NOTIFY (over the direct LISTEN connection) explains a
        job done within seconds."""
        proc = jobqueue_cmd("worker", "--queue", "woken", "--poll-seconds", "30",
                            url=pooled_url, env=_env(db_url, pooled_url))
        try:
            with Client(db_url) as client:
                # The worker is listening once its LISTEN backend shows (no event to await
                # in another process).
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    with psycopg.connect(db_url, autocommit=True) as conn:
                        if conn.execute("SELECT 1 FROM pg_stat_activity WHERE datname = "
                                        "current_database() AND query LIKE 'LISTEN%%'"
                                        ).fetchone():
                            break
                    time.sleep(0.1)
                else:
                    pytest.fail("the worker never listened on the direct connection")
                job_id = client.enqueue("echo", {"x": 1}, queue="woken")
                started = time.monotonic()
                while not (job := client.get(job_id)).finished:
                    assert time.monotonic() - started < PROMPT_SECONDS, "not woken by NOTIFY"
                    time.sleep(0.05)
                assert job.state == "succeeded"
        finally:
            proc.terminate()
            proc.wait(timeout=40)

    def test_parallel_migrations_through_the_bouncer(self, bouncer, empty_db_url):
        url = bouncer.url(empty_db_url)
        results = []

        def migrate():
            results.append(run_cli("migrate", url=url, env={"JOBQUEUE_PGBOUNCER": "1"}))

        threads = [threading.Thread(target=migrate) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            versions = [r[0] for r in conn.execute(
                "SELECT version FROM jobqueue.migrations ORDER BY version")]
            locks = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                 ).fetchone()[0]
        assert versions == sorted(set(versions)) and len(versions) >= 8
        assert locks == 0  # no lock left behind on a pooled server connection
