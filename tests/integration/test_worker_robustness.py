"""The worker under faults: results it cannot store, payloads it cannot decode, a failed
service, a claim or an outcome whose reply was lost, a leader cut off mid-maintenance, a
database that is not there at start-up, and execution ids that tell two runs apart."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import psycopg
import pytest
from structlog.testing import capture_logs

from jobqueue.db import store
from jobqueue.db.queries import q
from jobqueue.tasks import Registry
from jobqueue.worker import Worker, WorkerConfig, WorkerFailed
from jobqueue.worker.completer import Completer
from jobqueue.worker.leases import Leases
from jobqueue.worker.link import Link
from tests.support.helpers import ThreadWorker, wait_finished, wait_until
from tests.support.proxy import PartitionProxy


def registry(**funcs) -> Registry:
    reg = Registry()
    for name, func in funcs.items():
        reg.register(name, func)
    return reg


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


class TestResultsThatCannotBeStored:
    @pytest.mark.parametrize(("result", "message"), [
        ("a\x00b", "NUL"),
        ({"x": object()}, "cannot be stored as JSON"),
        (float("nan"), "cannot be stored as JSON"),
        ("x" * (5 << 20), "over the limit"),
    ], ids=["nul", "object", "nan", "5MB"])
    def test_the_job_dies_at_once_with_a_readable_error_and_others_flow(
            self, client, start_worker, result, message):
        """A result Postgres cannot take fails its own job permanently (the handler runs
        once), says why, and the jobs beside it in the same outcome batch succeed."""
        runs = []

        async def bad(payload):
            runs.append(1)
            return result

        async def good(payload):
            await asyncio.sleep(0.05)  # finish in the same batch as the bad one
            return "fine"

        start_worker(registry(bad=bad, good=good), concurrency=8)
        ids = [client.enqueue("good") for _ in range(3)] + [client.enqueue("bad")]
        *fine, failed = wait_finished(client, ids)
        assert [j.state for j in fine] == ["succeeded"] * 3
        assert (failed.state, failed.attempts, len(runs)) == ("dead", 1, 1)
        assert message in failed.errors[-1]["message"]

    def test_an_outcome_the_database_refuses_ends_the_job_dead_not_the_worker(
            self, client, start_worker):
        """A lone surrogate passes json.dumps but not Postgres' jsonb: the completer writes
        the job as dead with the database's reason, and the worker keeps working."""
        async def surrogate(payload):
            return "\ud800"

        async def ok(payload):
            return 1

        start_worker(registry(surrogate=surrogate, ok=ok))
        bad = wait_finished(client, [client.enqueue("surrogate")])[0]
        assert bad.state == "dead" and bad.errors[-1]["type"] == "OutcomeNotStored"
        assert "could not be stored" in bad.errors[-1]["message"]
        assert wait_finished(client, [client.enqueue("ok")])[0].state == "succeeded"


class TestPayloadsThatCannotBeDecoded:
    def test_an_over_deep_payload_fails_its_job_alone_with_its_real_error(
            self, client, sql, start_worker):
        """Nested deeper than the JSON decoder's recursion limit: before, the claim loop
        crashed and the whole claim batch stayed leased; now that job dies on its first
        attempt with the RecursionError, and the job claimed with it succeeds."""
        async def echo(payload):
            return "ok"

        deep = sql("INSERT INTO jobqueue.jobs (queue, kind, payload) "
                   "VALUES ('default', 'echo', %s::jsonb) RETURNING id",
                   (nested(3000),))[0]["id"]
        fine = client.enqueue("echo", {"n": 1})
        tw = start_worker(registry(echo=echo))
        assert wait_finished(client, [fine])[0].state == "succeeded"
        # (read with SQL: no JSON decoder in Python takes the payload back either)
        bad = wait_until(lambda: sql(
            "SELECT state, attempts, errors -> -1 ->> 'message' AS message "
            "FROM jobqueue.finished WHERE id = %s", (deep,)))[0]
        assert (bad["state"], bad["attempts"]) == ("dead", 1)
        assert "RecursionError" in bad["message"]
        assert tw.thread.is_alive()


class TestServiceFailure:
    def test_a_failed_service_stops_the_worker_with_an_error(self, db_url, monkeypatch):
        """A bug in a background service must not leave a silent worker behind: the worker
        stops and run() raises WorkerFailed (the CLI then exits 1)."""
        async def broken(self):
            raise RuntimeError("heartbeat bug")

        monkeypatch.setattr(Leases, "beat", broken)
        tw = ThreadWorker(db_url, WorkerConfig(heartbeat_seconds=0.05, poll_seconds=0.1),
                          registry()).start()
        tw.thread.join(20)
        assert not tw.thread.is_alive()
        assert isinstance(tw.error, WorkerFailed) and "heartbeat bug" in str(tw.error)


class TestLostReplies:
    def test_rows_leased_by_a_claim_whose_reply_was_lost_go_back_at_once(
            self, client, sql, start_worker):
        """The claim committed but its reply was lost, and the claim was sent again: the
        first claim's rows are leased to the live worker, which never heard of them. Before,
        every heartbeat renewed them for good; now the next heartbeat hands them back."""
        async def work(payload):
            return payload["n"]

        tw = start_worker(registry(work=work), heartbeat_seconds=0.2, lease_seconds=30,
                          listen=False, poll_seconds=60)
        wait_until(lambda: sql("SELECT 1 FROM jobqueue.workers"), message="registration")
        ids = [client.enqueue("work", {"n": n}) for n in range(4)]
        # What the lost claim did: lease these rows to this worker (it never saw them).
        sql(q("claim"), {"queue": "default", "limit": 4, "worker": tw.worker.id,
                         "lease_seconds": 30})
        jobs = wait_finished(client, ids, timeout=15)
        assert [(j.state, j.attempts, j.result) for j in jobs] == [
            ("succeeded", 1, n) for n in range(4)]

    def test_an_outcome_committed_before_its_reply_was_lost_is_not_called_lost(
            self, db_url, client):
        """The outcome batch committed, the connection broke before the reply, and the batch
        was sent again: nothing moved the second time, yet the outcomes are recorded, so
        outcome_discarded_lease_lost must not be logged (before, it was)."""
        worker = uuid.uuid4()
        ids = [client.enqueue("x") for _ in range(3)]

        async def scenario():
            conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
            rows = await store.claim(conn, "default", 3, worker, 30)
            await conn.close()

            class LosesFirstReply:
                """The real connection, but the first statement's reply never arrives."""

                def __init__(self, real):
                    self.real, self.lost = real, False

                def __getattr__(self, name):
                    return getattr(self.real, name)

                async def execute(self, *args, **kwargs):
                    cur = await self.real.execute(*args, **kwargs)
                    if not self.lost:
                        self.lost = True
                        raise psycopg.OperationalError("server closed the connection")
                    return cur

            link = Link(db_url, "finish", lambda: False)
            link.conn = LosesFirstReply(await psycopg.AsyncConnection.connect(
                db_url, autocommit=True))
            completer = Completer(link, worker, "default", lambda ids, retried: None)
            outcomes = [store.Outcome(r[0], r[6], "finish", "succeeded", result="1")
                        for r in rows]
            with capture_logs() as logs:
                await completer.write(outcomes)
            await link.close()
            return logs

        logs = asyncio.run(scenario())
        assert not [e for e in logs if e["event"] == "outcome_discarded_lease_lost"]
        assert [client.get(i).state for i in ids] == ["succeeded"] * 3


class TestExecutionIds:
    def test_a_forgotten_claim_runs_again_with_the_same_attempt_but_a_new_execution_id(
            self, client, sql, start_worker):
        """A claim committed without waiting for the flush can be forgotten by a crash; the
        job then runs again as the same attempt. Its execution id differs, so a handler can
        deduplicate, and each attempt's error keeps its own."""
        seen: list[tuple[int, str]] = []
        first_run = threading.Event()
        forgotten = threading.Event()

        def work(payload, ctx):
            seen.append((ctx.attempt, ctx.execution_id))
            if len(seen) == 1:
                first_run.set()
                forgotten.wait(10)
                raise RuntimeError("the first run's outcome is fenced off")
            return "done"

        job_id = client.enqueue("work", max_attempts=3)
        start_worker(registry(work=work), heartbeat_seconds=60)
        assert first_run.wait(10)
        # What crash recovery does to a claim that was never flushed: the row as before it.
        sql("UPDATE jobqueue.jobs SET lease_owner = NULL, lease_expires_at = NULL, "
            "attempts = attempts - 1, execution_id = NULL WHERE id = %s", (job_id,))
        job = wait_finished(client, [job_id])[0]
        forgotten.set()
        assert job.state == "succeeded"
        (a1, e1), (a2, e2) = seen[:2]
        assert a1 == a2 == 1 and e1 != e2
        assert all(e.startswith(f"{job_id}:") and uuid.UUID(e.split(":")[1]) for e in (e1, e2))
        token = sql("SELECT execution_id::text FROM jobqueue.finished WHERE id = %s",
                    (job_id,))[0]["execution_id"]
        assert e2 == f"{job_id}:{token}"

    def test_each_failed_attempt_keeps_its_execution_id(self, client, start_worker):
        ids_seen = []

        def flaky(payload, ctx):
            ids_seen.append(ctx.execution_id)
            if len(ids_seen) < 3:
                raise RuntimeError("not yet")
            return "ok"

        start_worker(registry(flaky=flaky))
        job = wait_finished(client, [client.enqueue("flaky", max_attempts=5)])[0]
        assert [e["execution_id"] for e in job.errors] == ids_seen[:2]
        assert len(set(ids_seen)) == 3


class TestPartitionedLeader:
    def test_a_leader_cut_off_mid_maintenance_does_not_stop_rescue(
            self, client, db_url, start_worker):
        """Worker A is cut off from the network right after sending its first maintenance
        statement. Before, A's open maintenance transaction kept the leader lock (idle in
        transaction until TCP gave up, 15 min to 2 h) and nobody rescued anything. Now each
        maintenance statement commits on its own, so worker B rescues A's jobs after their
        lease expires."""
        release = threading.Event()

        def slow(payload):
            release.wait(20)
            return "done"

        ids = [client.enqueue("slow", {"n": n}) for n in range(3)]
        proxy = PartitionProxy(db_url, cut_after=b"attempts >= max_attempts")
        try:
            start_worker(registry(slow=slow), url=proxy.url, lease_seconds=1.0,
                         heartbeat_seconds=0.3, maintenance_seconds=0.3, listen=False)
            assert proxy.cut.wait(15), "worker A never ran maintenance"
            release.set()
            start_worker(registry(slow=slow), maintenance_seconds=0.2)
            jobs = wait_finished(client, ids, timeout=20)
            assert [j.state for j in jobs] == ["succeeded"] * 3
            assert all(j.errors and j.errors[0]["type"] == "LeaseExpired" for j in jobs)
        finally:
            proxy.heal()


class TestStartUp:
    def test_a_worker_without_a_database_gives_up_after_its_connect_timeout(self):
        """Before, it retried for ten minutes and logged 925 warnings."""
        with socket_nobody_listens_on() as url:
            worker = Worker(url, WorkerConfig(connect_timeout=1.0), tasks=registry())
            started = time.monotonic()
            with capture_logs() as logs, pytest.raises(psycopg.OperationalError):
                asyncio.run(worker.run())
            assert time.monotonic() - started < 10
            assert len([e for e in logs if e["event"] == "db_unavailable"]) <= 3

    def test_a_stop_while_waiting_for_the_database_ends_the_worker_cleanly(self):
        with socket_nobody_listens_on() as url:
            worker = Worker(url, WorkerConfig(connect_timeout=60.0), tasks=registry())

            async def stop_soon():
                await asyncio.sleep(0.3)
                worker.stop()

            async def main():
                started = time.monotonic()
                await asyncio.gather(worker.run(), stop_soon())
                return time.monotonic() - started

            assert asyncio.run(main()) < 5


class socket_nobody_listens_on:
    """A loopback URL whose port nobody listens on (bound, then closed)."""

    def __enter__(self) -> str:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return f"postgresql://postgres@127.0.0.1:{port}/nothing?connect_timeout=1"

    def __exit__(self, *exc) -> None:
        return None


class TestDeadPeers:
    def test_connections_notice_a_dead_peer_in_seconds(self, db_url):
        """TCP keepalives and a user timeout on every connection jobqueue opens (the kernel's
        defaults take 2 h to notice an idle dead peer)."""
        from jobqueue import db

        with db.connect(db_url) as conn:
            params = conn.info.get_parameters()
            if conn.info.host.startswith("/"):
                pytest.skip("a Unix socket has no TCP keepalives (embedded server)")
        assert params["keepalives_idle"] == "10" and params["keepalives_count"] == "3"
        assert int(params["tcp_user_timeout"]) <= 30_000
