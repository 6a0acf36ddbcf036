"""Signals to scale and alert: depth by state, latency (leaving out jobs that wait for a
provider's rate limit), throughput and live workers per known queue; the stable SQL functions
KEDA queries; worker processes reporting their Postgres connections; `jobqueue status`."""

from __future__ import annotations

import json
import uuid

import pytest

from jobqueue.tasks import Registry
from tests.support.helpers import run_cli, wait_finished, wait_until


def status_of(client, queue: str) -> dict:
    return next(r for r in client.status() if r["queue"] == queue)


def add_bucket(sql, platform: str, *, blocked: bool = False, empty: bool = False) -> None:
    sql("""INSERT INTO jobqueue.rate_buckets
           (platform, model, key_id, rpm_configured, tpm_configured, rpm, tpm, req_level,
            tok_level, blocked_until)
           VALUES (%(p)s, 'm', 'k1', 60, 6000, 60, 6000, %(level)s, %(level)s,
                   CASE WHEN %(blocked)s THEN now() + interval '1 hour' END)""",
        {"p": platform, "level": -100.0 if empty else 100.0, "blocked": blocked})


def age(sql, queue: str, seconds: int) -> None:
    sql("UPDATE jobqueue.jobs SET run_at = now() - make_interval(secs => %(s)s), "
        "created_at = now() - make_interval(secs => %(s)s) WHERE queue = %(q)s",
        {"s": seconds, "q": queue})


class TestDepthAndLatency:
    def test_queue_depth_counts_waiting_and_running_not_scheduled(self, client, sql):
        client.enqueue_payloads("k", [{}] * 3, queue="q")
        client.enqueue("k", queue="q", delay=3600)
        sql("UPDATE jobqueue.jobs SET lease_owner = gen_random_uuid(), "
            "lease_expires_at = now() + interval '1 minute' WHERE id = (SELECT min(id) FROM "
            "jobqueue.jobs)")
        assert sql("SELECT jobqueue.queue_depth('q') AS d")[0]["d"] == 3
        assert sql("SELECT jobqueue.queue_depth('nothing') AS d")[0]["d"] == 0

    def test_latency_is_the_oldest_waiting_age(self, client, sql):
        client.enqueue("k", queue="q")
        age(sql, "q", 120)
        row = status_of(client, "q")
        assert 119 <= row["latency_seconds"] <= 125 and row["rate_limited"] is False
        assert 119 <= sql("SELECT jobqueue.queue_latency('q') AS s")[0]["s"] <= 125

    @pytest.mark.parametrize("how", ["blocked", "empty"])
    def test_a_queue_waiting_for_its_providers_limit_has_no_latency(self, client, sql, how):
        """Every key blocked after a 429, or out of budget: the waiting jobs wait for the
        provider, not for a worker, so latency is 0 (the raw age stays visible)."""
        add_bucket(sql, "llm", blocked=how == "blocked", empty=how == "empty")
        client.enqueue("chat", queue="llm")
        age(sql, "llm", 300)
        row = status_of(client, "llm")
        assert row["rate_limited"] is True and row["latency_seconds"] == 0
        assert row["oldest_waiting_seconds"] >= 299
        assert sql("SELECT jobqueue.queue_latency('llm') AS s")[0]["s"] == 0

    def test_a_platform_with_headroom_reports_its_latency(self, client, sql):
        add_bucket(sql, "llm")
        client.enqueue("chat", queue="llm")
        age(sql, "llm", 300)
        row = status_of(client, "llm")
        assert row["rate_limited"] is False and row["latency_seconds"] >= 299

    def test_known_queues_without_jobs_have_rows_at_zero(self, client, sql):
        """A queue known only from a worker's registration or a platform's buckets is
        listed, every count at 0: alerts and scalers see 0, not nothing."""
        sql("INSERT INTO jobqueue.workers (id, host, pid, queue, concurrency) "
            "VALUES (%(id)s, 'h', 1, 'emails,reports', 5)", {"id": uuid.uuid4()})
        add_bucket(sql, "gemini")
        rows = {r["queue"]: r for r in client.status()}
        assert set(rows) == {"emails", "reports", "gemini"}
        for name in ("emails", "reports"):
            assert rows[name]["workers"] == 1
        gemini = rows["gemini"]
        assert gemini["workers"] == 0 and gemini["waiting"] == 0 and gemini["dead"] == 0
        assert gemini["latency_seconds"] == 0 and gemini["finished_last_minute"] == 0

    def test_a_stale_worker_is_not_live(self, client, sql):
        sql("INSERT INTO jobqueue.workers (id, host, pid, queue, concurrency, last_seen_at) "
            "VALUES (%(id)s, 'h', 1, 'q', 5, now() - interval '5 minutes')",
            {"id": uuid.uuid4()})
        assert status_of(client, "q")["workers"] == 0


class TestWorkerConnections:
    def test_a_worker_reports_the_connections_it_holds(self, client, start_worker):
        """Two links and the LISTEN connection, reported with the heartbeat; named
        jobqueue-worker in pg_stat_activity."""
        tasks = Registry()
        tw = start_worker(tasks, queue="q", heartbeat_seconds=0.1)
        assert tw.worker.listening.wait(10)
        wait_until(lambda: [w["connections"] for w in client.workers()] == [3],
                   message="the worker's heartbeat reports 3 connections")
        assert tw.worker.connections() == 3
        by_app = {(r["application_name"]): r["count"] for r in client.db_connections()
                  if r["application_name"] == "jobqueue-worker"}
        assert by_app == {"jobqueue-worker": 3}
        assert status_of(client, "q")["workers"] == 1


    def test_the_heartbeat_reports_jobs_claimed_and_finished(self, client, sql, start_worker):
        """Per-worker counters (the dashboard's Workers page): claimed and finished since the
        process started, as the process counts them."""
        tasks = Registry()
        tasks.register("k", lambda payload: None)
        ids = [client.enqueue("k", queue="q") for _ in range(7)]
        start_worker(tasks, queue="q", heartbeat_seconds=0.1)
        wait_finished(client, ids)
        wait_until(lambda: sql("SELECT claimed, finished FROM jobqueue.workers") == [
            {"claimed": 7, "finished": 7}], message="the heartbeat reports 7 and 7")


class TestStatusCommand:
    def test_status_shows_latency_workers_and_connections(self, db_url, client, sql):
        client.enqueue("k", queue="slow")
        age(sql, "slow", 90)
        sql("INSERT INTO jobqueue.workers (id, host, pid, queue, concurrency, connections) "
            "VALUES (%(id)s, 'host1', 4242, 'slow', 5, 3)", {"id": uuid.uuid4()})
        out = run_cli("status", url=db_url)
        assert out.returncode == 0, out.stderr
        assert "LATENCY" in out.stdout and "WORKERS" in out.stdout
        line = next(x for x in out.stdout.splitlines() if x.startswith("slow"))
        assert line.split()[10].startswith("1m3")  # 1m30s, after STATE and BLOCKED
        worker = next(x for x in out.stdout.splitlines() if " 4242 " in x).split()
        assert worker == ["slow", "4242", "host1", "0", "3"]
        assert "3 Postgres connection(s)" in out.stdout
        data = json.loads(run_cli("status", "--json", url=db_url).stdout)
        slow = next(r for r in data["queues"] if r["queue"] == "slow")
        assert slow["latency_seconds"] >= 89 and slow["workers"] == 1
        assert data["workers"][0]["connections"] == 3 and data["db_connections"]
