"""Fleet-wide caps and fair shares between owners, at the claim statement: which rows a claim
takes under each setting, that concurrent claimers never pass a cap, that every insert path
numbers the rows of a fair queue (enqueue, released children, webhook deliveries), and that
changing the settings is validated and safe."""

from __future__ import annotations

import asyncio
import threading
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from jobqueue import JobSpec, webhooks
from jobqueue import queues as queue_settings
from jobqueue.client import insert_specs
from jobqueue.db import store
from jobqueue.db.queries import q
from jobqueue.errors import InvalidQueueSettings
from jobqueue.webhooks import subscriptions
from tests.support.helpers import wait_until


def claim(url: str, queue: str, limit: int, worker: uuid.UUID | None = None,
          statement: str = "claim") -> store.Claimed:
    async def run():
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await store.claim(conn, queue, limit, worker or uuid.uuid4(), 30,
                                     statement)
    return asyncio.run(run())


def owners_of(sql, rows) -> list[str]:
    """The owners of the claimed rows, sorted (a claim returns its rows in no set order)."""
    ids = [r[0] for r in rows]
    by_id = {r["id"]: r["owner"] for r in sql(
        "SELECT id, owner FROM jobqueue.jobs WHERE id = ANY(%s)", (ids,))}
    return sorted((by_id[i] for i in ids), key=lambda o: (o is None, o))


def setting(client, queue: str, **changes) -> dict:
    with client.pool.connection() as conn:
        return queue_settings.change(conn, queue, **changes)


def enqueue(client, owner: str | None, n: int, queue: str = "q", **options) -> list[int]:
    return client.enqueue_many([JobSpec(kind="k", queue=queue, owner=owner, **options)
                                for _ in range(n)])


PLAIN_WORKER = "00000000-0000-0000-0000-0000000fa1e5"


def run_plain(sql, queue: str) -> list[int]:
    """Claim every runnable job of a plain queue and finish it (succeeded) in one statement,
    as a worker's completer does: the statement that releases children and raises
    job.succeeded. Returns the finished ids."""
    running = {r["id"]: r["execution_id"] for r in sql(q("claim"), {
        "queue": queue, "limit": 1000, "worker": PLAIN_WORKER, "lease_seconds": 30})}
    ids = sorted(running)
    sql(q("finish_jobs"), {
        "id": ids, "execution": [running[i] for i in ids], "state": ["succeeded"] * len(ids),
        "result": ["{}"] * len(ids), "error": [None] * len(ids), "worker": PLAIN_WORKER})
    return ids


def subscribe(client, monkeypatch, owner: str) -> None:
    """A job.succeeded subscription of `owner` (to a loopback address nothing listens on:
    these tests only queue deliveries, they never send them)."""
    monkeypatch.setenv("JOBQUEUE_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8")
    with client.pool.connection() as conn:
        subscriptions.create(conn, owner, "http://127.0.0.1:9/hook", ["job.succeeded"])


def rounds_of(sql, queue: str) -> dict:
    """{owner: [round of each waiting row, by id]} of a queue's waiting rows."""
    return {r["owner"]: r["rounds"] for r in sql(
        "SELECT coalesce(owner, '') AS owner, array_agg(fair_round ORDER BY id) AS rounds"
        " FROM jobqueue.jobs WHERE queue = %s AND lease_owner IS NULL GROUP BY 1", (queue,))}


UNNUMBERED = """
    SELECT count(*) FILTER (WHERE j.fair_round IS NULL) AS unnumbered, count(*) AS waiting
    FROM jobqueue.jobs j JOIN jobqueue.queues qs ON qs.name = j.queue
    WHERE qs.fair AND j.lease_owner IS NULL"""


class TestFairOrder:
    def test_owners_take_turns_within_a_priority_level(self, client, sql, db_url):
        """A's 10 jobs came first, B's 3 after: a fair claim alternates A and B."""
        setting(client, "q", fair=True)
        enqueue(client, "A", 10)
        enqueue(client, "B", 3)
        rows = claim(db_url, "q", 6)
        assert owners_of(sql, rows) == ["A", "A", "A", "B", "B", "B"]
        assert owners_of(sql, claim(db_url, "q", 4)) == ["A"] * 4

    def test_a_late_owner_starts_at_the_round_being_served(self, client, sql, db_url):
        """B arrives while A's backlog is being worked: B's jobs go to the head of the line,
        one per round, not behind A's whole backlog."""
        setting(client, "q", fair=True)
        enqueue(client, "A", 2000)  # the COPY path
        claim(db_url, "q", 500)
        b_ids = enqueue(client, "B", 10)
        rows = claim(db_url, "q", 20)
        assert owners_of(sql, rows) == ["A"] * 10 + ["B"] * 10
        assert {r[0] for r in rows} >= set(b_ids)

    def test_priority_still_comes_first(self, client, sql, db_url):
        setting(client, "q", fair=True)
        enqueue(client, "A", 5, priority=10)
        enqueue(client, "B", 2, priority=-10)
        rows = claim(db_url, "q", 3)
        assert owners_of(sql, rows) == ["A", "B", "B"]

    def test_every_insert_path_numbers_rows_of_a_fair_queue(self, client, sql):
        """Single insert, array insert, COPY, idempotent insert and revival all get rounds;
        rows of other queues get none."""
        setting(client, "q", fair=True)
        client.enqueue("k", queue="q", owner="A")
        enqueue(client, "A", 3)
        enqueue(client, "B", 1500)
        client.enqueue_many([JobSpec(kind="k", queue="q", owner="C", idempotency_key=f"k{i}")
                             for i in range(3)])
        enqueue(client, "A", 5, queue="other")
        rows = sql("SELECT queue, owner, fair_round FROM jobqueue.jobs")
        assert all(r["fair_round"] is not None for r in rows if r["queue"] == "q")
        assert all(r["fair_round"] is None for r in rows if r["queue"] == "other")
        a_rounds = sorted(r["fair_round"] for r in rows if r["owner"] == "A" and r["queue"] == "q")
        assert a_rounds == [1, 2, 3, 4]

    def test_every_enqueue_path_writes_each_row_of_a_fair_queue_once(self, client, db_url):
        """Rows of a fair queue are written with their round (one row version each), never
        numbered by an UPDATE afterwards: dead versions slow the drain until vacuum. The
        transaction's own counters (pg_stat_xact_user_tables) see every insert and update;
        a raw INSERT that brings no round shows that nothing numbers rows afterwards (the
        net trigger is gone since 0028: every insert path writes its rounds itself)."""
        setting(client, "q", fair=True)
        cancelled = client.enqueue("k", queue="q", owner="D")
        assert client.cancel(cancelled) == "cancelled"
        counters = ("SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables"
                    " WHERE relid = 'jobqueue.jobs'::regclass")
        with psycopg.connect(db_url, row_factory=dict_row) as conn:  # one transaction
            insert_specs(conn, [JobSpec(kind="k", queue="q", owner="A")])  # insert_job
            insert_specs(conn, [JobSpec(kind="k", queue="q", owner=o)
                                for o in ("A", "B", None)])  # insert_jobs
            insert_specs(conn, [JobSpec(kind="k", queue="q", owner=f"o{i % 7}")
                                for i in range(1500)])  # COPY
            insert_specs(conn, [JobSpec(kind="k", queue="q", owner="C",
                                        idempotency_key=f"k{i % 2}")
                                for i in range(3)])  # insert_jobs_idempotent, one duplicate
            assert store.revive(conn, store.JobFilter(ids=[cancelled]), ["cancelled"])
            assert conn.execute(counters).fetchone() == {
                "n_tup_ins": 1 + 3 + 1500 + 2 + 1, "n_tup_upd": 0, "n_tup_hot_upd": 0}
            unnumbered = conn.execute("SELECT count(*) AS n FROM jobqueue.jobs"
                                      " WHERE fair_round IS NULL").fetchone()
            assert unnumbered["n"] == 0
            conn.execute("INSERT INTO jobqueue.jobs (queue, kind, owner) VALUES ('q', 'k', 'E')")
            assert conn.execute(counters).fetchone()["n_tup_upd"] == 0  # no net numbers it
            raw = conn.execute("SELECT fair_round FROM jobqueue.jobs WHERE owner = 'E'")
            assert raw.fetchone() == {"fair_round": None}
            rounds = conn.execute("SELECT owner, array_agg(fair_round ORDER BY id) AS r"
                                  " FROM jobqueue.jobs WHERE owner IN ('A', 'C') GROUP BY owner"
                                  " ORDER BY owner").fetchall()
        # From round 2 (D's cancelled job took round 1); a duplicate takes no round.
        assert [r["r"] for r in rounds] == [[2, 3], [2, 3]]

    def test_turning_fairness_on_numbers_the_backlog_and_off_clears_it(
            self, client, sql, db_url):
        enqueue(client, "A", 6)
        enqueue(client, "B", 2)
        claim(db_url, "q", 1)  # a running row gets a round too: it may come back
        setting(client, "q", fair=True)
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs WHERE fair_round IS NULL")[0][
            "n"] == 0
        assert owners_of(sql, claim(db_url, "q", 4)) == ["A", "A", "B", "B"]
        setting(client, "q", fair=False)
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs WHERE fair_round IS NOT NULL")[0][
            "n"] == 0
        assert sql("SELECT count(*) AS n FROM jobqueue.fair_owners")[0]["n"] == 0
        assert len(claim(db_url, "q", 10)) == 3  # the plain claim sees the rest

    def test_a_queue_with_settings_but_no_fairness_claims_in_plain_order(
            self, client, sql, db_url):
        setting(client, "q", max_running=100)
        enqueue(client, "A", 4)
        enqueue(client, "B", 2)
        assert owners_of(sql, claim(db_url, "q", 6)) == ["A"] * 4 + ["B"] * 2



class TestRoundsOnEveryInsert:
    """Rows that enter `jobs` other than by enqueue (released children, webhook deliveries)
    bring their rounds too: nothing numbers a row after its insert (0028)."""

    def test_released_children_get_rounds_and_take_turns(self, client, sql, db_url):
        """A's 4 children are released by their parent's end, then B's 2 by theirs: each
        child gets its round as it leaves `blocked`, B's from the round being served, so the
        fair claim interleaves A and B instead of serving A's first."""
        setting(client, "c", fair=True)
        parent_a = client.enqueue("k", queue="pa", owner="A")
        parent_b = client.enqueue("k", queue="pb", owner="B")
        enqueue(client, "A", 4, queue="c", depends_on=[parent_a])
        enqueue(client, "B", 2, queue="c", depends_on=[parent_b])
        assert rounds_of(sql, "c") == {}  # all blocked
        assert run_plain(sql, "pa") == [parent_a]
        assert run_plain(sql, "pb") == [parent_b]
        assert rounds_of(sql, "c") == {"A": [1, 2, 3, 4], "B": [1, 2]}
        assert owners_of(sql, claim(db_url, "c", 4)) == ["A", "A", "B", "B"]
        assert owners_of(sql, claim(db_url, "c", 4)) == ["A", "A"]

    def test_webhook_deliveries_in_a_fair_webhooks_queue_get_rounds(
            self, client, sql, db_url, monkeypatch):
        """Deliveries queued by the finish statement's fan-out and by emit() are numbered as
        they are written, and the fair claim serves them."""
        setting(client, "webhooks", fair=True)
        subscribe(client, monkeypatch, "alice")
        subscribe(client, monkeypatch, "bob")
        client.enqueue("k", queue="p", owner="alice")
        client.enqueue("k", queue="p", owner="bob")
        assert len(run_plain(sql, "p")) == 2  # job.succeeded twice: two deliveries
        with client.pool.connection() as conn:
            assert webhooks.emit(conn, "job.succeeded", "alice", {"x": 1}) == 1
        assert rounds_of(sql, "webhooks") == {"": [1, 2, 3]}
        assert len(claim(db_url, "webhooks", 10)) == 3

    def test_a_redelivered_webhook_gets_a_round(self, client, sql, db_url, monkeypatch):
        setting(client, "webhooks", fair=True)
        subscribe(client, monkeypatch, "alice")
        with client.pool.connection() as conn:
            assert webhooks.emit(conn, "job.succeeded", "alice", {"x": 1}) == 1
            (delivery,) = subscriptions.deliveries(conn, "alice")
        assert client.cancel(delivery["job_id"]) == "cancelled"
        with client.pool.connection() as conn:
            assert subscriptions.redeliver(conn, delivery["id"], "alice") == "queued"
        assert rounds_of(sql, "webhooks") == {"": [2]}  # round 1 went to the cancelled job
        assert len(claim(db_url, "webhooks", 10)) == 1

    def test_no_insert_path_leaves_a_waiting_row_of_a_fair_queue_unnumbered(
            self, client, sql, db_url, monkeypatch):
        """After each path that writes into `jobs`, every waiting row of a fair queue has a
        round (it would be invisible to the fair claim otherwise), and the path did add
        one."""
        setting(client, "q", fair=True)
        setting(client, "webhooks", fair=True)
        subscribe(client, monkeypatch, "A")
        seen = [0]

        def check(path: str) -> None:
            found = sql(UNNUMBERED)[0]
            assert found["unnumbered"] == 0, path
            assert found["waiting"] > seen[0], path
            seen[0] = found["waiting"]

        cancelled = client.enqueue("k", queue="q", owner="A")
        check("insert_job")
        assert client.cancel(cancelled) == "cancelled"
        seen[0] -= 1
        enqueue(client, "B", 3)
        check("insert_jobs")
        enqueue(client, "C", 1500)
        check("COPY")
        client.enqueue_many([JobSpec(kind="k", queue="q", owner="D", idempotency_key=f"k{i}")
                             for i in range(3)])
        check("insert_jobs_idempotent")
        assert client.retry(cancelled)
        check("revive_jobs")
        parent = client.enqueue("k", queue="p", owner="A")
        enqueue(client, "A", 2, depends_on=[parent])
        run_plain(sql, "p")  # releases two children and queues a job.succeeded delivery
        check("release_ready, webhook_fan_out from the finish statement")
        with client.pool.connection() as conn:
            assert webhooks.emit(conn, "job.succeeded", "A", {}) == 1
            delivery = subscriptions.deliveries(conn, "A")[0]
        check("webhook_fan_out from emit()")
        assert client.cancel(delivery["job_id"]) == "cancelled"
        seen[0] -= 1
        with client.pool.connection() as conn:
            assert subscriptions.redeliver(conn, delivery["id"], "A") == "queued"
        check("webhook_redeliver")


class TestStatements:
    def test_each_claim_statement_refuses_a_queue_that_needs_another(self, client, db_url):
        """A worker that last used the plain claim on a queue made fair, then capped, then
        plain again, still claims by the queue's settings, and learns the statement to use."""
        enqueue(client, "A", 20)
        assert claim(db_url, "q", 1).statement == "claim"
        setting(client, "q", fair=True)
        rows = claim(db_url, "q", 2)
        assert (len(rows), rows.statement) == (2, "claim_fair")
        setting(client, "q", max_running=4)
        rows = claim(db_url, "q", 2, statement="claim_fair")
        assert (len(rows), rows.statement) == (1, "claim_capped")
        setting(client, "q", max_running=None)
        rows = claim(db_url, "q", 2, statement="claim_capped")
        assert (len(rows), rows.statement) == (2, "claim_fair")
        setting(client, "q", fair=False)
        rows = claim(db_url, "q", 2, statement="claim_fair")
        assert (len(rows), rows.statement) == (2, "claim")


class TestCaps:
    def test_max_running_counts_every_worker(self, client, db_url):
        setting(client, "q", max_running=5)
        enqueue(client, None, 20)
        first = claim(db_url, "q", 3)
        second = claim(db_url, "q", 3)
        third = claim(db_url, "q", 3)
        assert (len(first), len(second), len(third)) == (3, 2, 0)
        assert not first.held_back and second.held_back and third.held_back

    def test_a_claim_that_waited_for_the_queue_counts_what_the_other_claimed(
            self, client, sql, db_url):
        """Claim 1 holds the queue's row (not yet committed); claim 2 waits for it. Once claim
        1 commits, claim 2 must count its rows although its own snapshot predates them."""
        setting(client, "q", max_running=5)
        enqueue(client, None, 20)
        first = psycopg.connect(db_url)  # a transaction, held open
        params = {"queue": "q", "limit": 3, "worker": uuid.uuid4(), "lease_seconds": 30}
        assert len(first.execute(q("claim_capped"), params).fetchall()) == 3
        result: list = []
        waiter = threading.Thread(target=lambda: result.append(claim(db_url, "q", 5)))
        waiter.start()
        wait_until(lambda: sql("SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                               " AND wait_event_type = 'Lock'"), timeout=10)
        first.commit()
        first.close()
        waiter.join(10)
        assert len(result[0]) == 2 and result[0].held_back

    def test_a_place_frees_on_finish_retry_hand_back_and_rescue(self, client, sql, db_url):
        """Every path that ends a run gives its place back: the count comes from the table."""
        setting(client, "q", max_running=4)
        enqueue(client, None, 20)
        worker = uuid.uuid4()
        rows = claim(db_url, "q", 4, worker)
        assert len(claim(db_url, "q", 4)) == 0

        async def outcomes(items):
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                return await store.record_outcomes(conn, worker, items)
        finish, retry, back, lost = rows
        asyncio.run(outcomes([
            store.Outcome(finish[0], finish[6], "finish", state="succeeded", result="1"),
            store.Outcome(retry[0], retry[6], "retry", error='{"type": "X"}', delay=60),
            store.Outcome(back[0], back[6], "hand_back")]))
        sql("UPDATE jobqueue.jobs SET lease_expires_at = now() - interval '1 s' WHERE id = %s",
            (lost[0],))

        async def rescue():
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                return await store.rescue_expired(conn)
        assert asyncio.run(rescue()) == (0, 1)
        assert len(claim(db_url, "q", 10)) == 4

    def test_per_owner_cap_skips_owners_at_their_cap(self, client, sql, db_url):
        setting(client, "q", max_running_per_owner=2)
        enqueue(client, "A", 10)
        enqueue(client, "B", 1)
        enqueue(client, None, 3)
        rows = claim(db_url, "q", 10)
        assert owners_of(sql, rows) == ["A", "A", "B", None, None]
        assert rows.held_back
        assert len(claim(db_url, "q", 10)) == 0

    def test_a_paused_capped_queue_yields_nothing(self, client, db_url):
        setting(client, "q", max_running=5)
        enqueue(client, None, 3)
        with client.pool.connection() as conn:
            queue_settings.pause(conn, "q", True)
        assert len(claim(db_url, "q", 5)) == 0
        with client.pool.connection() as conn:
            queue_settings.pause(conn, "q", False)
        assert len(claim(db_url, "q", 5)) == 3

    def test_concurrent_claimers_never_pass_the_caps(self, client, sql, db_url):
        """Eight threads claim as fast as they can while a sampler counts running rows: the
        total and every owner's count stay within the caps, and reach them."""
        # Three owners at 2 each could run 6: both caps bind.
        setting(client, "q", max_running=5, max_running_per_owner=2)
        for owner in ("A", "B", "C"):
            enqueue(client, owner, 200)
        stop = threading.Event()
        seen = {"total": 0, "owner": 0}
        errors: list[BaseException] = []

        def claimer():
            async def loop():
                worker = uuid.uuid4()
                async with await psycopg.AsyncConnection.connect(
                        db_url, autocommit=True) as conn:
                    while not stop.is_set():
                        rows = await store.claim(conn, "q", 5, worker, 30)
                        if rows:  # run them briefly, so an excess would be seen
                            await asyncio.sleep(0.01)
                            await store.record_outcomes(conn, worker, [
                                store.Outcome(r[0], r[6], "finish", state="succeeded",
                                              result="1") for r in rows])
            try:
                asyncio.run(loop())
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=claimer) for _ in range(8)]
        for t in threads:
            t.start()
        with psycopg.connect(db_url, autocommit=True) as conn:
            while sql("SELECT count(*) AS n FROM jobqueue.jobs")[0]["n"] > 0 and not errors:
                rows = conn.execute(
                    "SELECT coalesce(owner, ''), count(*) FROM jobqueue.jobs "
                    "WHERE lease_owner IS NOT NULL GROUP BY 1").fetchall()
                seen["total"] = max(seen["total"], sum(n for _, n in rows))
                seen["owner"] = max([seen["owner"]] + [n for _, n in rows])
        stop.set()
        for t in threads:
            t.join(30)
        assert not errors
        assert seen == {"total": 5, "owner": 2}


class TestSettings:
    def test_a_per_owner_cap_turns_fairness_on_and_keeps_it(self, client):
        row = setting(client, "q", max_running_per_owner=2)
        assert row["fair"] is True and row["max_running_per_owner"] == 2
        with pytest.raises(InvalidQueueSettings, match=r"^fair: "):
            setting(client, "q", fair=False)
        row = setting(client, "q", max_running_per_owner=None, fair=False)
        assert row["fair"] is False and row["max_running_per_owner"] is None

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(value=st.one_of(st.integers(), st.text(max_size=5), st.floats(),
                           st.booleans(), st.none(), st.lists(st.integers(), max_size=2)))
    def test_caps_are_whole_numbers_from_1_or_null(self, client, value):
        """Any value is either stored as given or refused naming the field; never a
        database error."""
        valid = value is None or (type(value) is int and 1 <= value <= queue_settings.MAX_CAP)
        try:
            row = setting(client, "q", max_running=value)
        except InvalidQueueSettings as exc:
            assert not valid and str(exc).startswith("max_running: ")
        else:
            assert valid and row["max_running"] == value

    @given(text=st.text(max_size=12))
    def test_typed_caps_parse_or_name_the_field(self, text):
        try:
            value = queue_settings.parse_cap("--max-running", text)
        except InvalidQueueSettings as exc:
            assert str(exc).startswith("--max-running: ")
        else:
            assert value is None or 1 <= value <= queue_settings.MAX_CAP
