"""The web app's reads from a streaming replica (JOBQUEUE_READ_DATABASE_URL), over real HTTP,
against a real primary and hot standby started by the suite (tests/support/replica.py).

How a test knows where a read went: with the standby's replay paused, the primary changes a
job the standby still has as it was; an answer showing the old state was read on the standby,
one showing the new state on the primary.
"""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from jobqueue import tokens
from jobqueue.client import Client
from jobqueue.tasks import Registry
from jobqueue.worker import WorkerConfig
from tests.support.helpers import ThreadWorker, wait_until
from tests.support.replica import free_port
from tests.support.web import Api, Dashboard, Server


@pytest.fixture
def primary(replica_db):
    with Client(replica_db.primary_url) as c:
        yield c


@pytest.fixture
def server(replica_db, config_file):
    """The app reading from the standby; a replica paused by a test stays usable for five
    minutes (the lag guard has tests of its own)."""
    s = Server(replica_db.primary_url, READ_DATABASE_URL=replica_db.standby_url,
               JOBQUEUE_CONFIG=config_file, READ_MAX_LAG_SECONDS=300)
    yield s
    s.close()


def _token(url: str, owner: str, scopes: list[str]) -> str:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return tokens.create(conn, owner, scopes, 100_000)[0]


@pytest.fixture
def alice(server, replica_db, streaming_replica):
    token = _token(replica_db.primary_url, "alice", ["read", "write"])
    streaming_replica.caught_up()
    return Api(server.base, token)


@pytest.fixture
def admin(server, replica_db, streaming_replica) -> tuple[Api, Dashboard]:
    token = _token(replica_db.primary_url, "ops", ["admin"])
    streaming_replica.caught_up()
    dashboard = Dashboard(server.base)
    assert dashboard.sign_in(token).status_code == 302
    dashboard.get("/")  # the signed-in session's CSRF token
    return Api(server.base, token), dashboard


def _sse(response):
    event = None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


def get_routes(job_id: int, batch_id: int, doc_id: int) -> list[str]:
    """Every GET the API, the dashboard and /metrics serve from data."""
    return [
        f"/api/jobs/{job_id}", f"/api/jobs/{job_id}?wait=0", f"/api/batches/{batch_id}",
        f"/api/batches/{batch_id}/results", f"/api/batches/{batch_id}/results?format=csv",
        f"/api/batches/{batch_id}/results?format=jsonl", f"/api/documents/{doc_id}",
        "/api/queues", "/api/sessions", "/api/openapi.json", "/metrics",
        "/", "/?partial=1", "/jobs", "/jobs?state=waiting&q=x", f"/jobs/{job_id}",
        "/jobs/bulk?action=retry", "/dead", "/batches", f"/batches/{batch_id}/results.csv",
        "/workers", "/limits", "/webhooks",
    ]


def make_data(api: Api) -> tuple[int, int, int]:
    job_id = api.post("/api/jobs", json={"queue": "q", "kind": "k"}).json()["id"]
    batch_id = api.post("/api/batches", json={"platform": "sim", "name": "b", "items": [
        {"prompt": "a"}, {"prompt": "b"}]}).json()["id"]
    doc_id = api.post("/api/documents", data={"platform": "sim"},
                      files={"file": ("a.txt", b"hello")}).json()["id"]
    return job_id, batch_id, doc_id


class TestReadsFromTheStandby:
    def test_the_reader_is_a_read_only_connection_to_the_standby(self, server, alice):
        alice.get("/api/queues")
        resources = server.app.extensions["jobqueue"]
        with resources.reader.pool.connection() as conn:
            row = conn.execute("SELECT pg_is_in_recovery() AS standby, "
                               "current_setting('transaction_read_only') AS ro").fetchone()
        assert row == {"standby": True, "ro": "on"}
        with resources.client.pool.connection() as conn:
            assert conn.execute("SELECT pg_is_in_recovery() AS s").fetchone()["s"] is False

    def test_pages_lists_and_exports_are_read_on_the_standby(self, admin, primary, replica_db,
                                                             streaming_replica):
        """With replay paused, the primary cancels a job; every read surface still shows it
        waiting (so they read the standby), while a write sees the truth."""
        api, dashboard = admin
        job_id = api.post("/api/jobs", json={"queue": "q", "kind": "k"}).json()["id"]
        batch_id = api.post("/api/batches", json={"platform": "sim", "items": [
            {"prompt": "a"}]}).json()["id"]
        (batch_job,) = [j["id"] for j in primary.batch_jobs(batch_id)]
        with streaming_replica.paused():
            assert primary.cancel(job_id) == "cancelled"
            assert primary.cancel(batch_job) == "cancelled"
            assert api.get(f"/api/jobs/{job_id}").json()["state"] == "waiting"
            (queue,) = [q for q in api.get("/api/queues").json()["queues"] if q["queue"] == "q"]
            assert (queue["waiting"], queue["cancelled"]) == (1, 0)
            assert api.get(f"/api/batches/{batch_id}").json()["cancelled"] == 0
            (item,) = api.get(f"/api/batches/{batch_id}/results").json()["items"]
            assert item["state"] == "waiting"
            csv = api.get(f"/api/batches/{batch_id}/results?format=csv").text
            assert "waiting" in csv and "cancelled" not in csv
            assert 'id="job-state">waiting<' in dashboard.page(f"/jobs/{job_id}")
            assert f'href="/jobs/{job_id}"' in dashboard.page("/jobs?state=waiting")
            assert f'href="/jobs/{job_id}"' not in dashboard.page("/jobs?state=cancelled")
            assert 'jobqueue_jobs{queue="q",state="waiting"} 1.0' in api.get("/metrics").text
            # A change checks the primary: the job is already finished there.
            assert api.post(f"/api/jobs/{job_id}/cancel").status_code == 409
        # Once replay resumes, the standby catches up and the pages with it.
        streaming_replica.caught_up()
        assert api.get(f"/api/jobs/{job_id}").json()["state"] == "cancelled"

    def test_every_get_is_served_by_a_read_only_standby(self, admin, streaming_replica,
                                                        replica_db):
        """A standby refuses every write: a read path that wrote would answer 500 here."""
        api, dashboard = admin
        ids = make_data(api)
        streaming_replica.caught_up()
        for path in get_routes(*ids):
            client = dashboard if not path.startswith(("/api", "/metrics")) else None
            r = client.get(path) if client else api.get(path)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])


class TestReplicaLag:
    def test_a_job_just_enqueued_is_found_while_the_replica_lags(self, admin, replica_db,
                                                                  streaming_replica):
        api, dashboard = admin
        with streaming_replica.paused():
            r = api.post("/api/jobs", json={"queue": "q", "kind": "k", "payload": {"n": 1}})
            job_id = r.json()["id"]
            got = api.get(f"/api/jobs/{job_id}")
            assert got.status_code == 200
            assert (got.json()["state"], got.json()["payload"]) == ("waiting", {"n": 1})
            assert api.get(f"{r.headers['Location']}?wait=0").status_code == 200
            assert f"Job {job_id}" in dashboard.page(f"/jobs/{job_id}")
            batch = api.post("/api/batches", json={"platform": "sim", "items": [
                {"prompt": "a"}]}).json()
            assert api.get(f"/api/batches/{batch['id']}").json()["total"] == 1
            doc = api.post("/api/documents", data={"platform": "sim"},
                           files={"file": ("a.txt", b"hello")}).json()
            assert api.get(f"/api/documents/{doc['id']}").json()["job"]["id"] == doc["job_id"]
            # What exists nowhere is still a 404.
            assert api.get(f"/api/jobs/{job_id + 1000}").status_code == 404
            assert dashboard.get(f"/jobs/{job_id + 1000}").status_code == 404

    def test_wait_sees_the_job_finish_while_the_replica_lags(self, alice, replica_db,
                                                             streaming_replica):
        """?wait= answers when the job finishes on the primary, though the standby, paused,
        still has it waiting (and would have it so for ever)."""
        reg = Registry()
        reg.register("ok", lambda payload: 42)
        with streaming_replica.paused():
            job_id = alice.post("/api/jobs", json={"queue": "w", "kind": "ok"}).json()["id"]
            answer = {}
            waiter = threading.Thread(target=lambda: answer.update(
                alice.get(f"/api/jobs/{job_id}?wait=20").json()))
            started = time.monotonic()
            waiter.start()
            worker = ThreadWorker(replica_db.primary_url,
                                  WorkerConfig(queue="w", poll_seconds=0.2), reg).start()
            waiter.join(30)
            worker.stop()
            assert (answer["state"], answer["result"]) == ("succeeded", 42)
            assert time.monotonic() - started < 15
            # A finished job's state also reaches a waiter who asks after the fact.
            late = alice.get(f"/api/jobs/{job_id}?wait=5")
            assert late.json()["state"] == "succeeded"

    def test_wait_answers_the_primary_state_of_a_job_the_replica_has_finished(
            self, alice, primary, streaming_replica):
        """A job cancelled, then retried while the replica lags: the replica still has it
        finished; a plain GET may say so, but ?wait= never answers a stale finish."""
        job_id = alice.post("/api/jobs", json={"queue": "idle", "kind": "k"}).json()["id"]
        assert primary.cancel(job_id) == "cancelled"
        with streaming_replica.paused():
            assert primary.retry(job_id)
            assert alice.get(f"/api/jobs/{job_id}").json()["state"] == "cancelled"
            assert alice.get(f"/api/jobs/{job_id}?wait=0").json()["state"] == "waiting"

    def test_sse_follows_the_job_while_the_replica_lags(self, alice, replica_db,
                                                        streaming_replica):
        reg = Registry()
        reg.register("ok", lambda payload: "done")
        with streaming_replica.paused():
            job_id = alice.post("/api/jobs", json={"queue": "s", "kind": "ok"}).json()["id"]
            stream = alice.get(f"/api/jobs/{job_id}/events", stream=True)
            worker = ThreadWorker(replica_db.primary_url,
                                  WorkerConfig(queue="s", poll_seconds=0.2), reg).start()
            try:
                events = []
                for event, data in _sse(stream):
                    events.append((event, data["state"]))
                    if event == "done":
                        break
            finally:
                worker.stop()
        assert events[0] == ("state", "waiting")
        assert events[-1] == ("done", "succeeded")


class TestReadOnlyReadPath:
    """Without a replica, JOBQUEUE_READ_DATABASE_URL may name the primary itself: the reads
    then run on read-only connections, and any write on them fails."""

    def test_every_get_works_on_a_read_only_connection(self, db_url, config_file, make_token):
        server = Server(db_url, READ_DATABASE_URL=db_url, JOBQUEUE_CONFIG=config_file)
        try:
            token = make_token("ops", ["admin"])
            api, dashboard = Api(server.base, token), Dashboard(server.base)
            assert dashboard.sign_in(token).status_code == 302
            ids = make_data(api)
            for path in get_routes(*ids):
                r = (api if path.startswith(("/api", "/metrics")) else dashboard).get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
            # Dashboard actions write on the primary, not through the read-only reader.
            r = dashboard.post("/webhooks/deliveries/999/redeliver", allow_redirects=False)
            assert r.status_code == 302, r.text[:300]
            r = dashboard.post(f"/jobs/{ids[0]}/cancel", allow_redirects=False)
            assert r.status_code == 302, r.text[:300]
            assert api.get(f"/api/jobs/{ids[0]}").json()["state"] == "cancelled"
            assert api.post("/api/schedules", json={
                "name": "daily", "cron": "30 2 * * *", "kind": "report"}).status_code == 201
            for action in ("pause", "resume", "run"):
                r = dashboard.post(f"/schedules/daily/{action}", allow_redirects=False)
                assert r.status_code == 302, (action, r.text[:300])
            runs = api.get("/api/schedules/daily").json()["runs"]
            assert [r["decision"] for r in runs] == ["manual"]
            reader = server.app.extensions["jobqueue"].reader
            assert reader is not server.app.extensions["jobqueue"].client
            with reader.pool.connection() as conn, pytest.raises(
                    psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("UPDATE jobqueue.api_tokens SET last_used_at = now()")
        finally:
            server.close()

    def test_read_only_connections_keep_the_urls_own_options(self, db_url):
        url = make_conninfo(db_url, options="-c statement_timeout=4321")
        with Client(url, read_only=True) as reader, reader.pool.connection() as conn:
            row = conn.execute("SELECT current_setting('statement_timeout') AS timeout, "
                               "current_setting('transaction_read_only') AS ro").fetchone()
        assert row == {"timeout": "4321ms", "ro": "on"}

    def test_a_get_charges_the_token_on_the_primary(self, db_url, make_token, sql):
        """Rate accounting still happens for reads, on the primary's pool, not the reader's."""
        server = Server(db_url, READ_DATABASE_URL=db_url)
        try:
            api = Api(server.base, make_token("alice", rate_limit=5))
            remaining = [int(api.get("/api/queues").headers["X-RateLimit-Remaining"])
                         for _ in range(3)]
            assert remaining == [4, 3, 2]
            (row,) = sql("SELECT last_used_at FROM jobqueue.api_tokens")
            assert row["last_used_at"] is not None
        finally:
            server.close()


class TestLagGuard:
    def test_a_replica_too_far_behind_is_left_alone_until_it_catches_up(
            self, replica_db, streaming_replica, primary, make_token):
        server = Server(replica_db.primary_url, READ_DATABASE_URL=replica_db.standby_url,
                        READ_MAX_LAG_SECONDS=1)
        try:
            token = _token(replica_db.primary_url, "alice", ["read", "write"])
            api = Api(server.base, token)
            job_id = api.post("/api/jobs", json={"queue": "q", "kind": "k"}).json()["id"]
            resources = server.app.extensions["jobqueue"]
            with streaming_replica.paused():
                assert primary.cancel(job_id) == "cancelled"
                # The standby still has it waiting; once it is a second behind, reads move.
                wait_until(lambda: api.get(f"/api/jobs/{job_id}").json()["state"]
                           == "cancelled", message="reads to move to the primary")
                assert resources.reader is resources.client
                assert resources.freshness.lag_seconds > 1
            streaming_replica.caught_up()
            wait_until(lambda: resources.reader is resources.replica,
                       message="reads to come back to the caught-up replica")
            ready = Api(server.base, None).get("/readyz").json()
            assert ready["status"] == "ready" and ready["read_replica"]["used"] is True
            assert ready["read_replica"]["lag_seconds"] <= 1
            assert "jobqueue_web_read_replica_lag_seconds " in api.get("/metrics").text
        finally:
            server.close()

    def test_an_unreachable_replica_leaves_reads_to_the_primary(self, db_url, make_token):
        nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
        server = Server(db_url, READ_DATABASE_URL=nowhere)
        try:
            api = Api(server.base, make_token("alice"))
            job_id = api.post("/api/jobs", json={"queue": "q", "kind": "k"}).json()["id"]
            for _ in range(3):
                assert api.get(f"/api/jobs/{job_id}").json()["state"] == "waiting"
                assert api.get("/api/queues").status_code == 200
        finally:
            server.close()


class TestDashboardReadsItsOwnChanges:
    def test_after_an_action_the_operator_sees_its_result_though_the_replica_lags(
            self, admin, server, replica_db, streaming_replica):
        api, dashboard = admin
        job_id = api.post("/api/jobs", json={"queue": "q", "kind": "k"}).json()["id"]
        other = Dashboard(server.base)
        assert other.sign_in(_token(replica_db.primary_url, "ops2", ["admin"])
                             ).status_code == 302
        with streaming_replica.paused():
            page = dashboard.post(f"/jobs/{job_id}/cancel").text  # follows the redirect
            assert 'id="job-state">cancelled<' in page
            assert f'href="/jobs/{job_id}"' in dashboard.page("/jobs?state=cancelled")
            # Another operator's session reads the (lagging) replica.
            assert 'id="job-state">waiting<' in other.page(f"/jobs/{job_id}")
        streaming_replica.caught_up()
        assert 'id="job-state">cancelled<' in other.page(f"/jobs/{job_id}")
        assert 'id="job-state">cancelled<' in dashboard.page(f"/jobs/{job_id}")
