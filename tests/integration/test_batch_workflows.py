"""Batches that tell the truth: rows whose idempotency key named an existing job are counted
as duplicates and are done at once (wait, export); keys are scoped by queue; a batch's
on_complete job is enqueued exactly once, with the batch id and counts, even when its last
members end at the same moment in several processes."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
from psycopg.rows import dict_row

from jobqueue import JobSpec
from jobqueue.db import migrate
from jobqueue.db.queries import q
from jobqueue.tasks import Registry
from tests.support.finish_together import GO
from tests.support.helpers import ROOT, run_cli, wait_until


def keyed(n: int, prefix: str = "row") -> list[JobSpec]:
    return [JobSpec("chat", {"prompt": f"{prefix} {i}"}, idempotency_key=f"{prefix}-{i}",
                    metadata={"i": i}) for i in range(n)]


class TestDuplicates:
    def test_a_batch_of_only_duplicates_announces_its_completion(self, client, sql):
        """Nothing of it reaches `finished`, where batch.completed usually arises: the
        submit says it, once, to the owner's webhooks."""
        sql("INSERT INTO jobqueue.webhook_subscriptions (owner, url, events, secret) "
            "VALUES ('alice', 'http://127.0.0.1:9/hook', ARRAY['batch.completed'], 's')")
        client.submit_batch(keyed(3), queue="openai", owner="alice")
        again, _ = client.submit_batch(keyed(3), queue="openai", owner="alice")
        events = sql("SELECT event_id, body FROM jobqueue.webhook_deliveries")
        assert [e["event_id"] for e in events] == [f"batch.completed:{again}"]
        assert events[0]["body"]["data"]["batch"]["counts"] == {"duplicate": 3}

    def test_a_resubmitted_batch_counts_duplicates_and_is_done_at_once(self, client, db_url):
        """Re-firing a batch used to hang `batch wait` and export an empty file while
        saying "total 300". Now its rows are duplicates: done, pointing at the old jobs."""
        first, _ = client.submit_batch(keyed(300), queue="openai")
        again, total = client.submit_batch(keyed(300), queue="openai")
        assert total == 300
        counts = client.batch(again)
        assert counts["duplicates"] == 300 and counts["waiting"] == 0
        old = [r["id"] for r in client.batch_jobs(first)]
        waited = run_cli("batch", "wait", str(again), "--timeout", "5", url=db_url)
        assert waited.returncode == 0, waited.stderr
        assert "300 duplicates" in waited.stdout
        shown = json.loads(run_cli("batch", "show", str(again), url=db_url).stdout)
        assert shown["duplicates"] == 300 and shown["total"] == 300
        export = run_cli("batch", "export", str(again), url=db_url)
        records = [json.loads(line) for line in export.stdout.splitlines()]
        assert [r["duplicate_of"] for r in records] == old  # in input order
        assert {r["state"] for r in records} == {"duplicate"}
        assert [r["metadata"]["i"] for r in records] == list(range(300))

    def test_a_partly_new_batch_mixes_jobs_and_duplicates_in_input_order(self, client):
        client.submit_batch(keyed(2), queue="openai")
        batch, _ = client.submit_batch(keyed(4), queue="openai")
        rows = client.batch_jobs(batch)
        assert [r["state"] for r in rows] == ["duplicate", "duplicate", "waiting", "waiting"]
        assert [r["metadata"]["i"] for r in rows] == [0, 1, 2, 3]
        page = client.batch_jobs(batch, after=rows[1]["place"], limit=1)
        assert [r["metadata"]["i"] for r in page] == [2]
        counts = client.batch(batch)
        assert (counts["duplicates"], counts["waiting"], counts["total"]) == (2, 2, 4)

    def test_keys_are_scoped_by_queue_as_well_as_owner(self, client):
        """The same prompt file on two platforms makes two sets of jobs."""
        a, _ = client.submit_batch(keyed(3), queue="openai", owner="olga")
        b, _ = client.submit_batch(keyed(3), queue="gemini", owner="olga")
        c, _ = client.submit_batch(keyed(3), queue="gemini", owner="ivan")
        assert [client.batch(x)["duplicates"] for x in (a, b, c)] == [0, 0, 0]
        assert client.enqueue("k", queue="x", idempotency_key="same") == client.enqueue(
            "k", queue="x", idempotency_key="same")
        assert client.enqueue("k", queue="x", idempotency_key="same") != client.enqueue(
            "k", queue="y", idempotency_key="same")


class TestOnComplete:
    def test_fires_once_with_the_batch_id_and_counts(self, client, start_worker, sql):
        from jobqueue import Permanent

        def work(payload):
            if payload["fail"]:
                raise Permanent("no")
            return {"ok": True}

        tasks = Registry()
        tasks.register("work", work)
        client.submit_batch([JobSpec("work", {"fail": False}, idempotency_key="old")],
                            queue="w")
        batch, _ = client.submit_batch(
            [JobSpec("work", {"fail": i == 0}, idempotency_key=f"k{i}") for i in range(5)]
            + [JobSpec("work", {"fail": False}, idempotency_key="old")],
            queue="w", on_complete=JobSpec("summarise", {"report": "r1"}, queue="cb"))
        assert client.batch(batch)["completed_at"] is None
        start_worker(tasks, queue="w")
        wait_until(lambda: client.batch(batch)["completed_at"] is not None)
        (callback,) = sql("SELECT * FROM jobqueue.all_jobs WHERE queue = 'cb'")
        assert callback["id"] == client.batch(batch)["on_complete_job"]
        assert callback["state"] == "waiting"
        assert callback["payload"] == {"report": "r1", "batch_id": batch, "counts": {
            "total": 6, "succeeded": 4, "dead": 1, "cancelled": 0, "duplicates": 1}}

    def test_a_batch_of_duplicates_only_completes_at_once(self, client, sql):
        client.submit_batch(keyed(3), queue="openai")
        batch, _ = client.submit_batch(keyed(3), queue="openai",
                                       on_complete=JobSpec("summarise", queue="cb"))
        assert client.batch(batch)["completed_at"] is not None
        (callback,) = sql("SELECT state, payload FROM jobqueue.all_jobs WHERE queue = 'cb'")
        assert callback["state"] == "waiting"
        assert callback["payload"]["counts"]["duplicates"] == 3

    def test_exactly_once_when_the_last_members_end_together_in_several_processes(
            self, client, db_url, sql):
        """Four processes each claim a quarter of a batch, wait at a shared gate, and end
        their share in one completion statement at the same moment: one callback, with
        the right counts, for every batch (ten rounds)."""
        processes, share = 4, 25
        for _ in range(10):
            batch, _ = client.submit_batch(
                [JobSpec("k", {"n": i}) for i in range(processes * share)], queue="race",
                on_complete=JobSpec("summarise", queue="cb"))
            with psycopg.connect(db_url, autocommit=True) as gate:
                gate.execute("SELECT pg_advisory_lock(%s)", (GO,))
                procs = [subprocess.Popen(
                    [sys.executable, "-m", "tests.support.finish_together", db_url, "race",
                     str(share)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
                    for _ in range(processes)]
                claimed = [int(p.stdout.readline()) for p in procs]
                assert claimed == [share] * processes
                wait_until(lambda: sql(
                    "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' "
                    "AND NOT granted")[0]["n"] == processes)
                gate.execute("SELECT pg_advisory_unlock(%s)", (GO,))
            for p in procs:
                out, _ = p.communicate(timeout=30)
                assert out.strip() == "done" and p.returncode == 0
            callbacks = sql("SELECT payload FROM jobqueue.jobs WHERE queue = 'cb' "
                            "AND (payload ->> 'batch_id')::bigint = %s", (batch,))
            assert len(callbacks) == 1
            counts = callbacks[0]["payload"]["counts"]
            ended = client.batch(batch)
            assert counts["succeeded"] == ended["succeeded"] and counts["dead"] == ended["dead"]
            assert counts["succeeded"] + counts["dead"] == processes * share

    def test_a_schedule_or_any_caller_can_attach_a_callback_to_an_existing_batch(
            self, client, sql):
        """workflows.attach_batch_callback in the caller's own transaction: members that
        ended already count at once."""
        from jobqueue import workflows

        batch, _ = client.submit_batch([JobSpec("k", {}) for _ in range(2)], queue="s")
        (first, _) = [r["id"] for r in client.batch_jobs(batch)]
        worker = "00000000-0000-0000-0000-0000000000ab"
        (claimed,) = sql(q("claim"), {"queue": "s", "limit": 1, "worker": worker,
                                      "lease_seconds": 30})
        sql(q("finish_jobs"), {"id": [first], "execution": [claimed["execution_id"]],
                               "state": ["succeeded"], "result": ["{}"], "error": [None],
                               "worker": worker})
        with client.pool.connection() as conn, conn.transaction():
            job = workflows.attach_batch_callback(conn, batch, JobSpec("summarise", queue="cb"))
        assert client.get(job).state == "blocked"
        assert client.cancel([r["id"] for r in client.batch_jobs(batch)][1]) == "cancelled"
        assert client.get(job).payload["counts"] == {
            "total": 2, "succeeded": 1, "dead": 0, "cancelled": 1, "duplicates": 0}


def test_the_migration_gives_existing_keys_the_queue_of_their_job(empty_db_url):
    """0015 scopes keys by queue: a key made before it takes its job's queue, and keeps
    returning that job on that queue."""
    from jobqueue.client import Client

    files = migrate.available()
    with psycopg.connect(empty_db_url, autocommit=True, row_factory=dict_row) as conn:
        for m in files:
            if m.version < 15:
                conn.execute(m.path.read_text())
        conn.execute("INSERT INTO jobqueue.jobs (id, queue, kind, idempotency_key) "
                     "VALUES (nextval('jobqueue.job_id_seq'), 'emails', 'send', 'k1')")
        conn.execute("INSERT INTO jobqueue.idempotency_keys (owner, key, job_id) "
                     "SELECT '', 'k1', id FROM jobqueue.jobs")
        conn.execute("INSERT INTO jobqueue.idempotency_keys (owner, key, job_id) "
                     "VALUES ('', 'orphan', 999999)")
        for m in files:
            if m.version >= 15:
                conn.execute(m.path.read_text())
        keys = conn.execute("SELECT owner, queue, key FROM jobqueue.idempotency_keys").fetchall()
        assert keys == [{"owner": "", "queue": "emails", "key": "k1"}]
    with Client(empty_db_url) as c:
        assert c.enqueue_many([JobSpec("send", queue="emails", idempotency_key="k1")]) == [1]
        assert c.enqueue_many([JobSpec("send", queue="sms", idempotency_key="k1")]) != [1]
