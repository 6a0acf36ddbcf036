"""The web app over real HTTP on loopback: auth on every route, per-token rate limits shared
through Postgres, bad input, jobs, SSE and ?wait, batches, documents, health, metrics, queue
pause, and Gunicorn with the shipped config."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from jobqueue import tokens
from jobqueue.db.queries import q
from jobqueue.tasks import Registry
from jobqueue.worker import WorkerConfig
from tests.support.helpers import (
    ROOT,
    ThreadWorker,
    minimal_pdf,
    platform,
    wait_finished,
    wait_until,
)
from tests.support.web import Api, Server


@pytest.fixture
def server(db_url, config_file):
    s = Server(db_url, JOBQUEUE_CONFIG=config_file, JSON_MAX_BYTES=64 * 1024,
               DOCUMENT_MAX_BYTES=200 * 1024, DOCUMENT_MAX_CHARS=100_000)
    yield s
    s.close()


@pytest.fixture
def alice(server, make_token):
    return Api(server.base, make_token("alice"))


class TestAuth:
    def test_every_api_route_needs_a_token(self, server):
        anon = Api(server.base, None)
        routes = [r for r in server.app.url_map.iter_rules() if r.rule.startswith("/api")]
        assert len(routes) >= 12
        for rule in routes:
            path = re.sub(r"<int:\w+>", "1", rule.rule).replace("<name>", "q") \
                .replace("<scope>", "kind").replace("<path:name>", "x") \
                .replace("<any(pause, resume):action>", "pause")
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                r = getattr(anon, method.lower())(path)
                assert r.status_code == 401, (method, path, r.status_code)
                assert r.json()["error"]["code"] == "unauthorized"
                assert r.headers["WWW-Authenticate"].startswith("Bearer")

    def test_health_needs_no_token_and_metrics_does(self, server):
        anon = Api(server.base, None)
        assert anon.get("/healthz").json() == {"status": "ok"}
        assert anon.get("/readyz").json() == {"status": "ready"}
        assert anon.get("/metrics").status_code == 401

    def test_scopes_are_enforced(self, server, make_token):
        reader = Api(server.base, make_token("alice", ["read"]))
        r = reader.post("/api/jobs", json={"queue": "q", "kind": "k"})
        assert r.status_code == 403 and "write" in r.json()["error"]["message"]
        assert reader.post("/api/queues/q/pause").status_code == 403
        admin = Api(server.base, make_token("ops", ["admin"]))
        assert admin.post("/api/queues/q/pause").json() == {"queue": "q", "paused": True}

    def test_revoked_and_unknown_tokens_are_refused(self, server, db_url, make_token):
        token = make_token()
        with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
            (row,) = tokens.list_tokens(conn)
            assert row["prefix"] == token[:10]
            assert token not in json.dumps(row, default=str)  # stored hashed only
            tokens.revoke(conn, row["id"])
        assert Api(server.base, token).get("/api/queues").status_code == 401
        assert Api(server.base, "jq_made_up").get("/api/queues").status_code == 401

    def test_owners_see_only_their_jobs(self, server, alice, make_token):
        job_id = alice.post("/api/jobs", json={"queue": "q", "kind": "k"}).json()["id"]
        bob = Api(server.base, make_token("bob"))
        assert bob.get(f"/api/jobs/{job_id}").status_code == 404
        assert bob.post(f"/api/jobs/{job_id}/cancel").status_code == 404
        admin = Api(server.base, make_token("ops", ["admin"]))
        assert admin.get(f"/api/jobs/{job_id}").json()["owner"] == "alice"


class TestRateLimits:
    def test_headers_on_every_answer_then_429_with_retry_after(self, server, make_token):
        api = Api(server.base, make_token(rate_limit=3))
        answers = [api.get("/api/queues") for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
        assert all(a.headers["X-RateLimit-Limit"] == "3" for a in answers)
        assert int(answers[0].headers["X-RateLimit-Reset"]) >= 1
        assert int(answers[3].headers["Retry-After"]) >= 1
        assert answers[3].json()["error"]["code"] == "rate_limited"

    def test_the_limit_is_shared_by_every_process(self, server, db_url, config_file,
                                                  make_token):
        """Two app instances (as two Gunicorn workers or hosts) draw on one bucket."""
        other = Server(db_url, JOBQUEUE_CONFIG=config_file)
        try:
            token = make_token(rate_limit=4)
            a, b = Api(server.base, token), Api(other.base, token)
            codes = [x.get("/api/queues").status_code for x in (a, b, a, b, a)]
            assert codes == [200, 200, 200, 200, 429]
        finally:
            other.close()

    def test_the_charge_skips_the_wal_flush_for_itself_only(self, db_url):
        """token_use commits without waiting for the disk; the session (shared with job
        inserts, which must be durable) keeps synchronous_commit on."""
        with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
            token, _ = tokens.create(conn, "dave", ["read"], rate_limit=10)
            used = conn.execute(q("token_use"), {"hash": tokens.hash_token(token),
                                                 "write": False}).fetchone()
            assert used["allowed"] and used["remaining"] == 9
            assert conn.execute("SHOW synchronous_commit").fetchone()["synchronous_commit"] \
                == "on"
        with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
            level = conn.execute("SELECT level FROM jobqueue.api_tokens WHERE owner = 'dave'")
            assert level.fetchone()["level"] < 9.5  # the charge was committed

    def test_default_limit_is_300_per_minute(self, server, db_url):
        with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
            token, row = tokens.create(conn, "carol", ["read"])
        assert row["rate_limit"] == 300
        assert Api(server.base, token).get("/api/queues").headers["X-RateLimit-Limit"] == "300"


class TestBadInput:
    @pytest.mark.parametrize(("body", "status", "field"), [
        ('{"queue": "q", "kind": ', 400, "body"),
        ('[1, 2]', 400, "body"),
        ('{"queue": "q"}', 400, "kind"),
        ('{"queue": "q", "kind": "k", "priority": "urgent"}', 400, "priority"),
        ('{"queue": "q", "kind": "k", "max_attempts": "3"}', 400, "max_attempts"),
        ('{"queue": "q", "kind": "k", "colour": "red"}', 400, "colour"),
        ('{"queue": "q", "kind": "k", "run_at": "tomorrow"}', 400, "run_at"),
        ('{"queue": "q", "kind": "k", "metadata": [1]}', 400, "metadata"),
        ('{"queue": "q", "kind": "k", "delay": -1}', 400, "delay"),
    ])
    def test_bad_job_bodies_are_4xx_naming_the_field(self, alice, body, status, field):
        r = alice.post("/api/jobs", data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == status, r.text
        assert r.json()["error"]["field"] == field, r.json()

    def test_wrong_content_type_and_oversized_bodies(self, alice):
        r = alice.post("/api/jobs", data="queue=q", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        big = {"queue": "q", "kind": "k", "payload": "x" * 100_000}
        r = alice.post("/api/jobs", json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"

    def test_unknown_ids_and_routes_are_404_json(self, alice):
        assert alice.get("/api/jobs/424242").status_code == 404
        r = alice.get("/api/nothing-here")
        assert r.status_code == 404 and "error" in r.json()


class TestJobs:
    def test_create_get_cancel_retry(self, alice):
        r = alice.post("/api/jobs", json={"queue": "q", "kind": "k", "payload": {"a": 1},
                                          "priority": "high", "metadata": {"m": 1}})
        assert r.status_code == 201 and r.json()["state"] == "waiting"
        job_id = r.json()["id"]
        job = alice.get(f"/api/jobs/{job_id}").json()
        assert (job["payload"], job["priority"], job["metadata"], job["attempts"]) == \
            ({"a": 1}, -10, {"m": 1}, 0)
        assert alice.post(f"/api/jobs/{job_id}/cancel").json()["outcome"] == "cancelled"
        assert alice.post(f"/api/jobs/{job_id}/cancel").status_code == 409
        assert alice.post(f"/api/jobs/{job_id}/retry").json()["state"] == "waiting"

    def test_idempotency_key_returns_the_same_job(self, alice):
        body = {"queue": "q", "kind": "k", "idempotency_key": "order-7"}
        first, second = alice.post("/api/jobs", json=body), alice.post("/api/jobs", json=body)
        assert (first.status_code, second.status_code) == (201, 200)
        assert first.json()["id"] == second.json()["id"] and second.json()["created"] is False

    def test_sse_delivers_state_and_progress_until_done(self, alice, db_url):
        release = threading.Event()

        def slow(payload, ctx):
            ctx.set_progress({"step": 1})
            release.wait(10)
            return "finished"

        job_id = alice.post("/api/jobs", json={"queue": "sse", "kind": "slow"}).json()["id"]
        stream = alice.get(f"/api/jobs/{job_id}/events", stream=True)
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        events = []
        reg = Registry()
        reg.register("slow", slow)
        worker = ThreadWorker(db_url, WorkerConfig(queue="sse", poll_seconds=0.2), reg).start()
        try:
            for event, data in _sse(stream):
                events.append((event, data["state"], data["progress"]))
                if data["progress"] == {"step": 1}:
                    release.set()
                if event == "done":
                    break
        finally:
            release.set()
            worker.stop()
        assert events[0] == ("state", "waiting", None)
        assert ("state", "running", {"step": 1}) in events
        assert events[-1] == ("done", "succeeded", {"step": 1})

    def test_wait_blocks_until_the_job_finishes(self, alice, db_url):
        job_id = alice.post("/api/jobs", json={"queue": "w", "kind": "ok"}).json()["id"]
        reg = Registry()
        reg.register("ok", lambda payload: 42)
        answer = {}
        waiter = threading.Thread(target=lambda: answer.update(
            alice.get(f"/api/jobs/{job_id}?wait=20").json()))
        waiter.start()
        worker = ThreadWorker(db_url, WorkerConfig(queue="w", poll_seconds=0.2), reg).start()
        waiter.join(30)
        worker.stop()
        assert (answer["state"], answer["result"]) == ("succeeded", 42)


def _sse(response):
    event = None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


    def test_wait_on_a_job_deleted_meanwhile_is_404_not_500(self, alice, sql):
        job_id = alice.post("/api/jobs", json={"queue": "gone", "kind": "k"}).json()["id"]
        sql("DELETE FROM jobqueue.jobs WHERE id = %s", (job_id,))
        r = alice.get(f"/api/jobs/{job_id}?wait=0.2")
        assert r.status_code == 404

    def test_sse_ends_with_gone_when_the_job_is_deleted(self, alice, sql):
        job_id = alice.post("/api/jobs", json={"queue": "gone", "kind": "k"}).json()["id"]
        stream = alice.get(f"/api/jobs/{job_id}/events", stream=True)
        events = _sse(stream)
        assert next(events)[0] == "state"
        # Delete the job and announce a change, as the dashboard's delete does.
        with psycopg.connect(sql.url, autocommit=True) as conn, conn.transaction():
            conn.execute("DELETE FROM jobqueue.jobs WHERE id = %s", (job_id,))
            conn.execute("SELECT pg_notify('jobqueue_events', %s)", (f"{job_id}-{job_id}",))
        assert next(events) == ("gone", {"id": job_id})


class TestBatches:
    def test_json_items_make_a_batch_and_results_page(self, alice):
        r = alice.post("/api/batches", json={"platform": "sim", "name": "t", "items": [
            {"prompt": "one", "metadata": {"row": 1}}, {"prompt": "two"}]})
        assert r.status_code == 201, r.text
        batch_id = r.json()["id"]
        batch = alice.get(f"/api/batches/{batch_id}").json()
        assert (batch["total"], batch["waiting"], batch["queue"]) == (2, 2, "sim")
        page = alice.get(f"/api/batches/{batch_id}/results?limit=1").json()
        assert page["items"][0]["metadata"] == {"row": 1} and page["next_after"]

    def test_a_bad_item_rejects_the_batch_naming_it(self, alice, sql):
        r = alice.post("/api/batches", json={"platform": "sim", "items": [
            {"prompt": "fine"}, {"prompt": "x", "max_tokens": -1}]})
        assert r.status_code == 422
        assert r.json()["error"]["problems"] == [
            "items[1].max_tokens: input should be greater than or equal to 1, got -1"]
        assert r.json()["error"]["field"] == "items[1].max_tokens"
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs")[0]["n"] == 0

    def test_unknown_platform_is_422(self, alice):
        r = alice.post("/api/batches", json={"platform": "nope", "items": [{"prompt": "x"}]})
        assert r.status_code == 422 and r.json()["error"]["field"] == "platform"

    def test_uploaded_csv_with_template_and_csv_download(self, alice):
        files = {"file": ("crm.csv", b"segment,region\nlaw firms,EU\nbakers,US\n", "text/csv")}
        r = alice.post("/api/batches", files=files, data={
            "platform": "sim", "template": "CRM for {segment}?"})
        assert r.status_code == 201, r.text
        csv_text = alice.get(f"/api/batches/{r.json()['id']}/results?format=csv").text
        assert csv_text.splitlines()[0].startswith("region,id,state,prompt")
        assert "CRM for law firms?" in csv_text

    def test_an_uploaded_bad_file_names_file_and_line(self, alice, sql):
        files = {"file": ("p.jsonl", b'{"prompt": "ok"}\n{"prompt": 5}\n', "application/json")}
        r = alice.post("/api/batches", files=files, data={"platform": "sim"})
        assert r.status_code == 422
        assert r.json()["error"]["problems"][0] == "p.jsonl:2: prompt: must be a string, got 5"
        assert sql("SELECT count(*) AS n FROM jobqueue.batches")[0]["n"] == 0


class TestDocuments:
    @pytest.mark.parametrize(("name", "data", "expect"), [
        ("notes.md", "# Acme\nAcme Corp opened an office in Berlin. " * 400, "Acme"),
        ("report.pdf", minimal_pdf("Globex signed a contract in Paris"), "Globex"),
    ])
    def test_upload_extract_analyze(self, alice, platform_worker, sim, name, data, expect):
        platform_worker(platform(sim, max_tokens=300))
        body = data.encode() if isinstance(data, str) else data
        r = alice.post("/api/documents", files={"file": (name, body)}, data={"platform": "sim"})
        assert r.status_code == 201, r.text
        assert r.elapsed.total_seconds() < 1.0
        doc = r.json()
        job = alice.get(f"/api/jobs/{doc['job_id']}?wait=30").json()
        assert job["state"] == "succeeded", job["errors"]
        result = job["result"]
        assert result["analysis"]["sentiment"] in ("positive", "neutral", "negative")
        assert any(expect in e for e in result["analysis"]["entities"] + [
            result["analysis"]["summary"]])
        if name.endswith(".md"):
            assert result["chunks"] == 2  # 16,000 characters in 12,000-character chunks
        # The calls' token budget, estimated before the first (prompt / 4 + max_tokens each).
        assert result["estimated_tokens"] > result["chunks"] * 300
        assert job["progress"]["estimated_tokens"] == result["estimated_tokens"]
        # A worker was idle: processing started within a second of the upload.
        started = datetime.fromisoformat(job["started_at"])
        created = datetime.fromisoformat(job["created_at"])
        assert (started - created).total_seconds() < 1.0
        stored = alice.get(f"/api/documents/{doc['id']}").json()
        assert stored["text_chars"] > 0 and stored["job"]["state"] == "succeeded"

    @pytest.mark.parametrize(("name", "data", "status"), [
        ("virus.exe", b"MZ", 415),
        ("fake.pdf", b"not a pdf", 400),
        ("latin1.txt", "caf\xe9".encode("latin-1"), 400),
        ("empty.txt", b"", 400),
        ("big.txt", b"x" * (200 * 1024 + 1), 413),
    ])
    def test_bad_uploads_are_4xx(self, alice, name, data, status):
        r = alice.post("/api/documents", files={"file": (name, data)}, data={"platform": "sim"})
        assert r.status_code == status, r.text
        assert r.json()["error"]["field"] == "file"

    def test_a_text_over_the_character_limit_is_refused_at_upload(self, alice):
        r = alice.post("/api/documents", files={"file": ("long.txt", b"x " * 50_001)},
                       data={"platform": "sim"})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["field"] == "file" and "JOBQUEUE_DOCUMENT_MAX_CHARS" in error["message"]

    def _dead(self, alice, name, body) -> dict:
        r = alice.post("/api/documents", files={"file": (name, body)}, data={"platform": "sim"})
        assert r.status_code == 201, r.text
        job = alice.get(f"/api/jobs/{r.json()['job_id']}?wait=30").json()
        assert job["state"] == "dead" and job["attempts"] == 1, job
        return job

    def test_a_decompression_bomb_is_dead_on_the_first_attempt(self, alice, platform_worker,
                                                                sim, monkeypatch):
        """100 kB inflating to 100 MB of spaces: pypdf alone would inflate up to 75 MB, then
        fail in a way that was retried. Each stream now inflates to 4 bytes a character of
        the limit at most (here 1 MB, the floor), and the failure is permanent."""
        monkeypatch.setenv("JOBQUEUE_DOCUMENT_MAX_CHARS", "100000")
        platform_worker(platform(sim, max_tokens=300))
        bomb = minimal_pdf("Boom", padding=100 << 20)
        assert len(bomb) < 200 * 1024
        job = self._dead(alice, "bomb.pdf", bomb)
        assert "JOBQUEUE_DOCUMENT_MAX_CHARS" in job["errors"][-1]["message"]
        assert sim.stats()["totals"]["ok"] == 0

    def test_too_many_chunks_is_dead_before_any_call(self, alice, platform_worker, sim,
                                                    monkeypatch):
        monkeypatch.setenv("JOBQUEUE_DOCUMENT_MAX_CHUNKS", "2")
        platform_worker(platform(sim, max_tokens=300))
        job = self._dead(alice, "three.md", ("word " * 2000 + "\n\n") * 3)
        assert "3 chunks, over the limit of 2 (JOBQUEUE_DOCUMENT_MAX_CHUNKS)" in \
            job["errors"][-1]["message"]
        assert sim.stats()["totals"]["ok"] == 0

    def test_a_pdf_with_more_text_than_the_limit_is_dead_at_once(self, alice, platform_worker,
                                                                  sim, monkeypatch):
        monkeypatch.setenv("JOBQUEUE_DOCUMENT_MAX_CHARS", "1000")
        platform_worker(platform(sim, max_tokens=300))
        job = self._dead(alice, "long.pdf", minimal_pdf("Globex " * 200))
        assert "over the limit of 1000 (JOBQUEUE_DOCUMENT_MAX_CHARS)" in \
            job["errors"][-1]["message"]

    def test_delete_by_owner_or_admin_and_404_for_others(self, server, alice, make_token):
        bob = Api(server.base, make_token("bob"))
        admin = Api(server.base, make_token("ops", ["admin"]))
        ids = [alice.post("/api/documents", files={"file": ("a.txt", b"hello")},
                          data={"platform": "sim"}).json()["id"] for _ in range(2)]
        r = bob.delete(f"/api/documents/{ids[0]}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert alice.delete(f"/api/documents/{ids[0]}").json() == {"id": ids[0],
                                                                   "deleted": True}
        assert alice.get(f"/api/documents/{ids[0]}").status_code == 404
        assert alice.delete(f"/api/documents/{ids[0]}").status_code == 404
        assert admin.delete(f"/api/documents/{ids[1]}").status_code == 200
        assert alice.get(f"/api/documents/{ids[1]}").status_code == 404

    def test_the_original_bytes_can_be_dropped_after_extraction(self, alice, platform_worker,
                                                                sim, sql, monkeypatch):
        monkeypatch.setenv("JOBQUEUE_DOCUMENT_KEEP_ORIGINAL", "0")
        platform_worker(platform(sim, max_tokens=300))
        pdf = minimal_pdf("Globex in Paris")
        doc = alice.post("/api/documents", files={"file": ("r.pdf", pdf)},
                         data={"platform": "sim"}).json()
        job = alice.get(f"/api/jobs/{doc['job_id']}?wait=30").json()
        assert job["state"] == "succeeded", job["errors"]
        stored = alice.get(f"/api/documents/{doc['id']}").json()
        assert stored["text_chars"] > 0 and stored["original_kept"] is False
        row = sql("SELECT length(data) AS n FROM jobqueue.documents WHERE id = %s",
                  (doc["id"],))[0]
        assert row["n"] == 0

    def test_a_retry_after_the_bytes_were_dropped_uses_the_stored_text(
            self, alice, platform_worker, sim, monkeypatch):
        monkeypatch.setenv("JOBQUEUE_DOCUMENT_KEEP_ORIGINAL", "0")
        sim.configure(error_rate=1.0)  # the first attempt extracts, then its call fails
        platform_worker(platform(sim, max_tokens=300), retry_base_seconds=1.0)
        doc = alice.post("/api/documents", files={"file": ("r.txt", b"Globex in Paris")},
                         data={"platform": "sim"}).json()
        wait_until(lambda: alice.get(f"/api/jobs/{doc['job_id']}").json()["errors"])
        sim.configure(error_rate=0.0)
        job = alice.get(f"/api/jobs/{doc['job_id']}?wait=30").json()
        assert job["state"] == "succeeded" and job["attempts"] >= 2, job["errors"]
        assert alice.get(f"/api/documents/{doc['id']}").json()["original_kept"] is False

    def test_documents_are_pruned_after_their_retention(self, alice, platform_worker, sim,
                                                         sql, monkeypatch):
        monkeypatch.setenv("JOBQUEUE_DOCUMENT_RETENTION_SECONDS", "3600")
        ids = [alice.post("/api/documents", files={"file": (f"{n}.txt", b"hello")},
                          data={"platform": "sim"}).json()["id"] for n in "abc"]
        sql("UPDATE jobqueue.documents SET created_at = now() - interval '2 hours' "
            "WHERE id <> %s", (ids[1],))
        # c's job is still scheduled: its document stays until the job has finished.
        sql("UPDATE jobqueue.jobs SET run_at = now() + interval '1 hour' WHERE id = "
            "(SELECT job_id FROM jobqueue.documents WHERE id = %s)", (ids[2],))
        platform_worker(platform(sim, max_tokens=300), maintenance_seconds=0.1)
        wait_until(lambda: alice.get(f"/api/documents/{ids[0]}").status_code == 404)
        assert alice.get(f"/api/documents/{ids[1]}").status_code == 200
        assert alice.get(f"/api/documents/{ids[2]}").status_code == 200

    def test_the_prune_hook_does_nothing_without_the_maintenance_lock(self, sql, monkeypatch):
        """Like the cache's, the hook runs its statement only as the maintenance leader."""
        import asyncio

        from jobqueue.llm import documents
        from jobqueue.worker import maintenance

        assert maintenance._prune_hooks["documents"] is documents.prune_expired
        sql("INSERT INTO jobqueue.documents (filename, content_type, size, data, created_at) "
            "VALUES ('old.txt', 'text/plain', 1, 'x', now() - interval '30 days')")

        async def prune() -> int:
            async with await psycopg.AsyncConnection.connect(sql.url,
                                                             autocommit=True) as conn:
                return await documents.prune_expired(conn)

        with psycopg.connect(sql.url) as leader:
            leader.execute("SELECT pg_advisory_xact_lock(hashtext('jobqueue.maintenance'))")
            assert asyncio.run(prune()) == 0
        assert asyncio.run(prune()) == 1


class TestSessions:
    def test_first_dashboard_request_works_without_a_configured_secret(self, db_url):
        """The signing key then comes from the database, shared by every process."""
        s = Server(db_url, SECRET_KEY=None, DEV=True)
        other = Server(db_url, SECRET_KEY=None, DEV=True)
        try:
            assert requests.get(s.base + "/login", timeout=10).status_code == 200
            assert requests.get(other.base + "/login", timeout=10).status_code == 200
            assert s.app.secret_key and other.app.secret_key == s.app.secret_key
        finally:
            other.close()
            s.close()


class TestOperations:
    def test_metrics_in_prometheus_format(self, alice, server):
        alice.post("/api/jobs", json={"queue": "m", "kind": "k"})
        r = alice.get("/metrics")
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
        assert 'jobqueue_jobs{queue="m",state="waiting"} 1.0' in r.text
        assert "jobqueue_oldest_waiting_seconds" in r.text
        assert "jobqueue_web_pool_connections" in r.text

    def test_metrics_can_be_public(self, db_url):
        s = Server(db_url, METRICS_PUBLIC=True)
        try:
            assert requests.get(s.base + "/metrics", timeout=10).status_code == 200
        finally:
            s.close()

    def test_readyz_is_503_before_migrations(self, empty_db_url):
        s = Server(empty_db_url)
        try:
            r = requests.get(s.base + "/readyz", timeout=10)
            assert r.status_code == 503 and r.json()["status"] == "migrations pending"
        finally:
            s.close()

    def test_openapi_describes_the_routes(self, alice, server):
        doc = alice.get("/api/openapi.json").json()
        assert doc["openapi"].startswith("3.")
        assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/events", "/batches",
                "/documents"} <= set(doc["paths"])

    def test_queue_caps_and_fairness_are_read_and_changed_by_admins(self, server,
                                                                     make_token, alice):
        admin = Api(server.base, make_token("ops", ["admin"]))
        r = alice.get("/api/queues/lessons/settings")
        assert r.status_code == 200 and r.json() == {
            "queue": "lessons", "paused": False, "max_running": None,
            "max_running_per_owner": None, "fair": False, "retry_order": "first",
            "updated_at": None, "running": 0}
        assert alice.patch("/api/queues/lessons/settings",
                           json={"max_running": 3}).status_code == 403
        r = admin.patch("/api/queues/lessons/settings",
                        json={"max_running": 30, "max_running_per_owner": 3})
        assert r.status_code == 200
        assert (r.json()["max_running"], r.json()["max_running_per_owner"], r.json()["fair"]) \
            == (30, 3, True)
        r = admin.patch("/api/queues/lessons/settings", json={"max_running": None})
        assert (r.json()["max_running"], r.json()["max_running_per_owner"]) == (None, 3)
        r = admin.patch("/api/queues/lessons/settings", json={"retry_order": "last"})
        assert (r.json()["retry_order"], r.json()["max_running_per_owner"]) == ("last", 3)
        for body, field in (({"max_running": 0}, "max_running"),
                            ({"max_running": "5"}, "max_running"),
                            ({"max_running_per_owner": 2.5}, "max_running_per_owner"),
                            ({"fair": "yes"}, "fair"),
                            ({"retry_order": "sideways"}, "retry_order"),
                            ({"fair": False}, "fair"),  # the per-owner cap needs it
                            ({"max_runing": 3}, "max_runing")):
            r = admin.patch("/api/queues/lessons/settings", json=body)
            assert r.status_code == 400, body
            assert r.json()["error"]["field"] == field, body
        assert admin.patch("/api/queues/lessons/settings", data="[1]",
                           headers={"Content-Type": "application/json"}).status_code == 400

    def test_a_paused_queue_is_not_worked_until_resumed(self, server, make_token, db_url,
                                                         client):
        admin = Api(server.base, make_token("ops", ["admin"]))
        admin.post("/api/queues/p/pause")
        reg = Registry()
        reg.register("ok", lambda payload: 1)
        worker = ThreadWorker(db_url, WorkerConfig(queue="p", poll_seconds=0.05), reg).start()
        try:
            job_id = admin.post("/api/jobs", json={"queue": "p", "kind": "ok"}).json()["id"]
            assert worker.worker.listening.wait(10)
            # Several claim rounds pass after the insert (poll every 50 ms); none takes it.
            rounds = worker.worker.claim_rounds
            wait_until(lambda: worker.worker.claim_rounds >= rounds + 3, timeout=10)
            assert client.get(job_id).state == "waiting" and worker.worker.claimed == 0
            listed = {q["queue"]: q for q in admin.get("/api/queues").json()["queues"]}
            assert listed["p"]["paused"] is True
            admin.post("/api/queues/p/resume")
            assert wait_finished(client, [job_id])[0].state == "succeeded"
        finally:
            worker.stop()


def _wait_http(url: str, timeout: float, message: str) -> None:
    """A server in another process is up when its URL answers 200 (no event to await)."""

    def up():
        try:
            return requests.get(url, timeout=5).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # not up, or a slow first answer
            return False

    wait_until(up, timeout=timeout, message=message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gunicorn_serves_the_app_with_the_shipped_config(db_url, make_token):
    port = _free_port()
    env = os.environ | {"DATABASE_URL": db_url, "PORT": str(port), "WEB_CONCURRENCY": "2"}
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "gunicorn"), "-c",
                             "python:web.gunicorn_conf", "web:create_app()"], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"

        _wait_http(base + "/healthz", timeout=30, message="gunicorn up")
        api = Api(base, make_token())
        ids = [api.post("/api/jobs", json={"queue": "g", "kind": "k"}).json()["id"]
               for _ in range(20)]
        assert len(set(ids)) == 20
        # The 414 the OpenAPI document lists on every route comes from Gunicorn.
        assert api.get("/api/queues?x=" + "a" * 5000).status_code == 414
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=40)
    assert proc.returncode == 0, err[-2000:]
    assert "gthread" in err or "Booting worker" in err


def test_jobqueue_web_command_serves_with_gunicorn(db_url, make_token):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "jobqueue", "web", "--port", str(port),
                             "--workers", "1"], cwd=ROOT,
                            env=os.environ | {"DATABASE_URL": db_url},
                            stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"

        _wait_http(base + "/readyz", timeout=30, message="jobqueue web up")
        assert Api(base, make_token()).get("/api/queues").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=40)
    assert proc.returncode == 0 and "HandOffWorker" in err, err[-2000:]
