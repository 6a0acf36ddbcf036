"""Webhooks end to end against a real HTTP receiver on loopback: events from the completion
path (job.succeeded, job.dead, batch.completed) and from emit(), signed requests, retries
through the queue's own backoff, dead letters, redirects not followed, private addresses
refused, redelivery; and alerts evaluated by the maintenance leader."""

from __future__ import annotations

import asyncio
import json
import re

import psycopg
import pytest

from jobqueue import db, webhooks
from jobqueue.errors import InvalidWebhook
from jobqueue.jobs import JobSpec
from jobqueue.tasks import Permanent, Registry
from jobqueue.webhooks import alerts, signing, subscriptions
from jobqueue.webhooks.delivery import deliver
from jobqueue.worker.config import QueueConfig
from tests.support.helpers import wait_finished, wait_until
from tests.support.receiver import Receiver


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(autouse=True)
def loopback_allowed(monkeypatch, db_url):
    """The receiver is on loopback, which webhooks refuse unless allowed; the delivery task
    finds the database through DATABASE_URL, as `jobqueue worker` does."""
    monkeypatch.setenv("JOBQUEUE_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8")
    monkeypatch.setenv("JOBQUEUE_WEBHOOK_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("DATABASE_URL", db_url)


def tasks() -> Registry:
    registry = Registry()
    registry.register("webhook.deliver", deliver)
    registry.register("ok", lambda payload: {"echo": payload})

    def broken(payload):
        raise Permanent("broken on purpose")

    registry.register("broken", broken)
    return registry


@pytest.fixture
def worker(start_worker):
    """A worker serving `default` and `webhooks`."""
    def start(**config):
        return start_worker(tasks(), queues=(QueueConfig("default"), QueueConfig("webhooks")),
                            **config)
    return start


def subscribe(client, url, events, owner="alice", **options) -> dict:
    with client.pool.connection() as conn:
        return subscriptions.create(conn, owner, url, events, **options)


def deliveries(client, **filters) -> list[dict]:
    with client.pool.connection() as conn:
        return subscriptions.deliveries(conn, None, **filters)


def latest_state(client) -> str | None:
    found = deliveries(client)
    return found[0]["state"] if found else None


class TestDelivery:
    def test_a_finished_job_is_posted_signed_with_its_event_id(self, client, receiver, worker):
        """job.succeeded reaches the owner's subscription: the signature verifies with the
        secret shown at creation, the event id is the idempotency key, the body names the
        job and its result; another owner's job sends nothing."""
        sub = subscribe(client, receiver.url, ["job.succeeded"])
        job_id = client.enqueue("ok", {"n": 1}, owner="alice")
        other = client.enqueue("ok", {"n": 2}, owner="bob")
        worker()
        wait_finished(client, [job_id, other])
        (got,) = receiver.wait(1)
        assert signing.verify(sub["secret"], got.headers["Jobqueue-Signature"], got.body)
        assert not signing.verify(sub["secret"], got.headers["Jobqueue-Signature"],
                                  got.body + b" ")
        assert not signing.verify("whsec_wrong", got.headers["Jobqueue-Signature"], got.body)
        t = got.headers["Jobqueue-Signature"].split(",")[0]  # a non-ASCII signature: False,
        assert not signing.verify(sub["secret"], f"{t},{signing.SCHEME}=é", got.body)  # no error
        event = json.loads(got.body)
        assert event["type"] == "job.succeeded"
        assert event["data"]["job"]["id"] == job_id
        assert event["data"]["job"]["result"] == {"echo": {"n": 1}}
        assert got.headers["Jobqueue-Event-Id"] == event["id"] == got.headers["Idempotency-Key"]
        assert got.path == "/hook"
        wait_until(lambda: latest_state(client) == "succeeded")
        (row,) = deliveries(client)
        assert (row["attempts"], row["response_code"]) == (1, 200)
        with client.pool.connection() as conn:  # the secret is never read back
            assert "secret" not in subscriptions.get(conn, sub["id"], "alice")

    def test_a_500_is_retried_with_the_same_event_id(self, client, receiver, worker):
        receiver.answers = [500]
        sub = subscribe(client, receiver.url, ["job.dead"])
        job_id = client.enqueue("broken", {}, owner="alice")
        worker()
        first, second = receiver.wait(2)
        assert first.headers["Jobqueue-Event-Id"] == second.headers["Jobqueue-Event-Id"]
        assert first.body == second.body
        assert json.loads(second.body)["data"]["job"]["id"] == job_id
        assert json.loads(second.body)["data"]["job"]["error"]["message"] == "broken on purpose"
        assert signing.verify(sub["secret"], second.headers["Jobqueue-Signature"], second.body)
        assert second.headers["Jobqueue-Delivery-Attempt"] == "2"
        wait_until(lambda: latest_state(client) == "succeeded")
        assert deliveries(client)[0]["attempts"] == 2

    def test_dead_after_max_attempts_and_no_event_about_itself(self, client, receiver,
                                                                 worker, sql):
        """A receiver that always fails: max_attempts requests, then the delivery and its job
        are dead; the dead delivery job raises no job.dead of its own (it would feed itself),
        even for a subscription of jobs without an owner."""
        receiver.default = 500
        subscribe(client, receiver.url, ["job.succeeded"], max_attempts=3)
        subscribe(client, receiver.url, ["job.dead"], owner="")
        client.enqueue("ok", {}, owner="alice")
        worker()
        receiver.wait(3)
        wait_until(lambda: latest_state(client) == "dead")
        (row,) = deliveries(client)
        assert (row["attempts"], row["response_code"]) == (3, 500)
        assert "HTTP 500" in row["last_error"]
        job = wait_finished(client, [row["job_id"]])[0]
        assert job.state == "dead" and job.attempts == 3
        assert len(receiver.requests) == 3
        assert sql("SELECT count(*) AS n FROM jobqueue.webhook_deliveries")[0]["n"] == 1

    def test_a_redirect_to_another_host_is_not_followed(self, client, receiver, worker):
        elsewhere = Receiver(host="127.0.0.2")
        try:
            receiver.default = (302, {"Location": elsewhere.url})
            subscribe(client, receiver.url, ["job.succeeded"], max_attempts=2)
            client.enqueue("ok", {}, owner="alice")
            worker()
            receiver.wait(2)
            wait_until(lambda: latest_state(client) == "dead")
            row = deliveries(client)[0]
            assert row["response_code"] == 302
            assert "not followed" in row["last_error"]
            assert elsewhere.requests == []
        finally:
            elsewhere.close()

    def test_private_addresses_are_refused_by_default(self, client, receiver, worker,
                                                       monkeypatch):
        """Without JOBQUEUE_WEBHOOK_ALLOW_PRIVATE, loopback, private and link-local URLs are
        refused at subscription; a subscription made while allowed is refused at delivery,
        unsent, and dead at once."""
        sub = subscribe(client, receiver.url, ["job.succeeded"])
        monkeypatch.delenv("JOBQUEUE_WEBHOOK_ALLOW_PRIVATE")
        for url in (receiver.url, "http://10.0.0.1/x", "http://169.254.169.254/latest",
                    "http://[::1]:8080/", "http://localhost:9/", "http://[::ffff:127.0.0.1]/",
                    "http://0.0.0.0/", "https://224.0.0.1/"):
            with pytest.raises(InvalidWebhook, match="url: "):
                subscribe(client, url, ["job.succeeded"])
        client.enqueue("ok", {}, owner="alice")
        worker()
        wait_until(lambda: latest_state(client) == "dead")
        row = deliveries(client)[0]
        assert row["attempts"] == 1 and row["response_code"] is None
        assert "loopback" in row["last_error"] and "127.0.0.1" in row["last_error"]
        job = wait_finished(client, [row["job_id"]])[0]
        assert job.attempts == 1  # Permanent: no retry
        assert receiver.requests == [] and sub["id"]

    def test_redeliver_sends_the_same_event_again(self, client, receiver, worker):
        sub = subscribe(client, receiver.url, ["job.succeeded"])
        client.enqueue("ok", {}, owner="alice")
        worker()
        receiver.wait(1)
        wait_until(lambda: latest_state(client) == "succeeded")
        delivery = deliveries(client)[0]
        # The delivery reads succeeded from inside its job; a redelivery is refused ("busy")
        # until that job's own outcome is written, so wait for that too.
        wait_until(lambda: client.get(delivery["job_id"]).state == "succeeded")
        with client.pool.connection() as conn:
            assert subscriptions.redeliver(conn, delivery["id"], "bob") == "not_found"
            assert subscriptions.redeliver(conn, delivery["id"], "alice") == "queued"
        first, again = receiver.wait(2)
        assert again.headers["Jobqueue-Event-Id"] == first.headers["Jobqueue-Event-Id"]
        assert signing.verify(sub["secret"], again.headers["Jobqueue-Signature"], again.body)
        wait_until(lambda: (deliveries(client) or [{}])[0].get("attempts") == 2)
        assert deliveries(client)[0]["state"] == "succeeded"

    def test_redeliver_while_queued_is_refused(self, client, receiver):
        """No worker runs: the delivery's job is still queued, so a redelivery would only
        send it twice."""
        subscribe(client, receiver.url, ["job.succeeded"])
        with client.pool.connection() as conn:
            webhooks.emit(conn, "job.succeeded", "alice", {"job": {"id": 1}})
            delivery = subscriptions.deliveries(conn, "alice")[0]
            assert subscriptions.redeliver(conn, delivery["id"], None) == "busy"

    def test_slack_format_posts_text(self, client, receiver, worker):
        subscribe(client, receiver.url, ["job.dead"], format="slack")
        job_id = client.enqueue("broken", {}, owner="alice")
        worker()
        (got,) = receiver.wait(1)
        body = json.loads(got.body)
        assert list(body) == ["text"]
        assert f"job {job_id} (broken on default) is dead" in body["text"]


class TestEvents:
    def test_batch_completed_once_with_its_counts(self, client, receiver, worker):
        subscribe(client, receiver.url, ["batch.completed"])
        specs = [JobSpec("ok", {"i": i}) for i in range(5)] + [JobSpec("broken", {})]
        batch_id, _ = client.submit_batch(specs, queue="default", name="nightly", owner="alice")
        worker(concurrency=3, claim_batch=1)
        (got,) = receiver.wait(1)
        event = json.loads(got.body)
        assert event["type"] == "batch.completed"
        assert event["data"]["batch"]["id"] == batch_id
        assert event["data"]["batch"]["counts"] == {"succeeded": 5, "dead": 1}
        wait_until(lambda: latest_state(client) == "succeeded")
        assert len(deliveries(client)) == 1

    def test_batch_completion_is_seen_by_exactly_one_of_two_concurrent_finishers(
            self, db_url, client, sql):
        """The last two jobs of a batch finish in two transactions at once: the batch's row
        lock orders them, and exactly one reports the batch (the second sees the first's job
        gone once it holds the lock)."""
        batch_id, _ = client.submit_batch([JobSpec("ok", {}), JobSpec("ok", {})],
                                          queue="default", owner="alice")
        ids = [r["id"] for r in sql("SELECT id FROM jobqueue.jobs ORDER BY id")]
        with psycopg.connect(db_url) as a, psycopg.connect(db_url) as b:
            a.execute("DELETE FROM jobqueue.jobs WHERE id = %s", (ids[0],))
            first = a.execute("SELECT jobqueue.batches_completed(ARRAY[%s]::bigint[])",
                              (batch_id,)).fetchall()
            b.execute("DELETE FROM jobqueue.jobs WHERE id = %s", (ids[1],))

            def second():
                return b.execute("SELECT jobqueue.batches_completed(ARRAY[%s]::bigint[])",
                                 (batch_id,)).fetchall()

            async def both():
                waiting = asyncio.get_running_loop().run_in_executor(None, second)
                await asyncio.sleep(0.2)  # b is blocked on a's lock (nothing to await)
                assert not waiting.done()
                a.commit()
                return await waiting

            later = asyncio.run(both())
            b.commit()
        assert first == [] and later == [(batch_id,)]

    def test_emit_reaches_the_owners_subscriptions_in_the_callers_transaction(
            self, client, receiver, worker):
        """schedule.failed (the scheduler's) through emit(): a rolled-back emit sends
        nothing; an event id already delivered to a subscription is not sent again."""
        subscribe(client, receiver.url, ["schedule.failed"])
        subscribe(client, receiver.url, ["job.succeeded"], owner="bob")
        with client.pool.connection() as conn, conn.transaction():
            assert webhooks.emit(conn, "schedule.failed", "alice", {"x": 1}) == 1
            raise psycopg.Rollback()
        with client.pool.connection() as conn:
            assert webhooks.emit(conn, "schedule.failed", "alice", {"schedule": "daily"},
                                 event_id="sched-1") == 1
            assert webhooks.emit(conn, "schedule.failed", "alice", {"schedule": "daily"},
                                 event_id="sched-1") == 0
            assert webhooks.emit(conn, "schedule.failed", "carol", {}) == 0
            # no owner: the subscriptions of jobs without one, never everyone's
            assert webhooks.emit(conn, "schedule.failed", None, {}) == 0
            with pytest.raises(InvalidWebhook, match="event_type"):
                webhooks.emit(conn, "job.exploded", "alice", {})
        worker()
        (got,) = receiver.wait(1)
        assert json.loads(got.body)["data"] == {"schedule": "daily"}
        assert got.headers["Jobqueue-Event-Id"] == "sched-1"

    def test_nothing_is_queued_without_subscriptions(self, client, worker, sql):
        ids = [client.enqueue("ok", {}, owner="alice") for _ in range(20)]
        worker()
        wait_finished(client, ids)
        assert sql("SELECT count(*) AS n FROM jobqueue.webhook_deliveries")[0]["n"] == 0
        assert sql("SELECT count(*) AS n FROM jobqueue.all_jobs WHERE queue = 'webhooks'"
                   )[0]["n"] == 0


class TestAlerts:
    def test_depth_fires_once_stays_quiet_then_resolves(self, client, receiver, worker, sql):
        """The maintenance leader evaluates the rule on its own: over the threshold, one
        message; still over for several passes, nothing more; back under, one resolved."""
        with client.pool.connection() as conn:
            alerts.set_rule(conn, "emails", "depth", 2)
        subscribe(client, receiver.url, ["alert.firing", "alert.resolved"], owner="",
                  admin=True, format="slack")
        ids = [client.enqueue("ok", {}, queue="emails") for _ in range(3)]
        worker(maintenance_seconds=0.05)
        (fired,) = receiver.wait(1)
        assert json.loads(fired.body) == {
            "text": ":rotating_light: FIRING: queue emails: waiting jobs 3, over 2"}

        def evaluated_after(moment):
            row = sql("SELECT evaluated_at > %s AS later FROM jobqueue.alert_rules",
                      (moment,))[0]
            return row["later"]

        for _ in range(3):  # three more passes while still firing
            (now,) = sql("SELECT clock_timestamp() AS t")
            wait_until(lambda now=now: evaluated_after(now["t"]))
        assert len(receiver.requests) == 1
        client.cancel(ids[0])
        client.cancel(ids[1])
        resolved = receiver.wait(2)[1]
        text = json.loads(resolved.body)["text"]
        # The leader may evaluate between the two cancels: back to 2 is already resolved.
        assert re.match(r":white_check_mark: RESOLVED: queue emails: waiting jobs [12], "
                        r"back to 2 or under", text), text
        (now,) = sql("SELECT clock_timestamp() AS t")
        wait_until(lambda: evaluated_after(now["t"]))
        assert len(receiver.requests) == 2

    def test_rules_latency_and_dead_measures(self, client, db_url, sql):
        with client.pool.connection() as conn:
            alerts.set_rule(conn, "reports", "latency", alerts.parse_duration("1m"))
            alerts.set_rule(conn, "reports", "dead", 0)
            with pytest.raises(InvalidWebhook, match="metric"):
                alerts.set_rule(conn, "reports", "speed", 1)
        sql("""INSERT INTO jobqueue.jobs (queue, kind, run_at) VALUES
               ('reports', 'x', now() - interval '90 seconds')""")

        async def once():
            async with await db.connect_async(db_url) as conn:
                return await alerts.evaluate(conn)

        flips = {(r[1], r[2]) for r in asyncio.run(once())}
        assert flips == {("latency", "alert.firing")}
        assert asyncio.run(once()) == []
        with client.pool.connection() as conn:
            assert alerts.remove_rules(conn, "reports", "latency") == ["latency"]
            assert [r["metric"] for r in alerts.list_rules(conn)] == ["dead"]


def test_durations_parse():
    assert alerts.parse_duration("60s") == 60 and alerts.parse_duration("5m") == 300
    assert alerts.parse_duration("1.5h") == 5400 and alerts.parse_duration("30") == 30
    with pytest.raises(InvalidWebhook):
        alerts.parse_duration("soon")


def test_a_failing_fan_out_never_costs_a_job_its_outcome(client, worker, sql):
    """Should queueing the events fail, the outcome batch still commits (without them)."""
    subscribe(client, "http://127.0.0.1:9/hook", ["job.succeeded"])
    sql("""CREATE OR REPLACE FUNCTION jobqueue.webhook_fan_out(
               event_ids text[], event_types text[], owners text[], data jsonb[])
           RETURNS integer LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'fan-out broken on purpose'; END $$""")
    job_id = client.enqueue("ok", {}, owner="alice")
    worker()
    assert wait_finished(client, [job_id])[0].state == "succeeded"
    assert sql("SELECT count(*) AS n FROM jobqueue.webhook_deliveries")[0]["n"] == 0
