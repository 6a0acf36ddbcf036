"""Where retries go in the claim order (0024, issue 15): by default before new work of the
same priority, so a failing job's retries (and its death) show while a backlog still runs;
with a queue's retry_order 'last', after the backlog, as before. The claim keeps its index."""

from __future__ import annotations

import asyncio
import threading
import uuid

import psycopg
import pytest

from jobqueue import queues
from jobqueue.db import store
from jobqueue.db.queries import q
from jobqueue.errors import InvalidQueueSettings
from jobqueue.tasks import Registry
from tests.support.helpers import run_cli, wait_until

BACKLOG = 1000


def run_backlog(client, start_worker, retry_order: str | None) -> tuple[list, list[int]]:
    """A failing job (3 attempts) enqueued first, then 1,000 new jobs of the same priority,
    drained by one worker; returns (the start order of every execution as ("F", attempt) or
    ("B", n), the failing job's final state)."""
    started: list = []
    lock = threading.Lock()
    reg = Registry()

    async def flaky(payload):
        with lock:
            started.append(("F", None))
        raise RuntimeError("always fails")

    async def work(payload):
        with lock:
            started.append(("B", payload["n"]))
        await asyncio.sleep(0.002)

    reg.register("flaky", flaky)
    reg.register("work", work)
    if retry_order is not None:
        with client.pool.connection() as conn:
            queues.change(conn, "q", retry_order=retry_order)
    failing = client.enqueue("flaky", {}, queue="q", max_attempts=3)
    client.enqueue_payloads("work", [{"n": i} for i in range(BACKLOG)], queue="q")
    # maintenance moves a retry ahead once its backoff is over (0030): often, in this test
    start_worker(reg, queue="q", concurrency=4, retry_base_seconds=0.01,
                 retry_max_seconds=0.05, maintenance_seconds=0.05)
    wait_until(lambda: client.get(failing).state == "dead"
               and len([s for s in started if s[0] == "B"]) == BACKLOG, timeout=60)
    return started, failing


def positions(started: list) -> tuple[list[int], int]:
    """Where the failing job's executions started, and where the last backlog job did."""
    fails = [i for i, s in enumerate(started) if s[0] == "F"]
    last_backlog = max(i for i, s in enumerate(started) if s[0] == "B")
    return fails, last_backlog


class TestRetryOrder:
    def test_default_retries_run_before_the_backlog_ends(self, client, start_worker):
        """Default ('first'): all three attempts start while most of the backlog waits; the
        job is dead long before the last backlog job starts."""
        started, _ = run_backlog(client, start_worker, None)
        fails, last_backlog = positions(started)
        assert len(fails) == 3
        assert fails[-1] < BACKLOG // 2, fails  # a backoff of ~10-50 ms against ~0.5 s+
        assert fails[-1] < last_backlog

    def test_last_puts_retries_after_the_backlog(self, client, start_worker):
        """retry_order 'last': the retries start only after every backlog job started."""
        started, _ = run_backlog(client, start_worker, "last")
        fails, last_backlog = positions(started)
        assert len(fails) == 3
        assert fails[0] < 10  # the first attempt was the first job enqueued
        assert fails[1] > last_backlog and fails[2] > last_backlog, (fails, last_backlog)

    def test_rescued_jobs_are_retries_too(self, client, sql):
        """A job whose worker vanished comes back in the retry lane of its queue's order."""
        job = client.enqueue("k", queue="q")
        sql("UPDATE jobqueue.jobs SET lease_owner = gen_random_uuid(), attempts = 1, "
            "lease_expires_at = now() - interval '1 second' WHERE id = %(id)s", {"id": job})
        sql(q("rescue_retry"))
        assert sql("SELECT lane FROM jobqueue.jobs WHERE id = %(id)s", {"id": job}) == [
            {"lane": 0}]


class TestSetting:
    def test_set_list_and_refuse(self, client):
        with client.pool.connection() as conn:
            assert queues.list_settings(conn, "q")[0]["retry_order"] == "first"
            assert queues.change(conn, "q", retry_order="last")["retry_order"] == "last"
            with pytest.raises(InvalidQueueSettings, match="retry_order: first or last"):
                queues.change(conn, "q", retry_order="sideways")
            # Other changes keep it.
            assert queues.change(conn, "q", max_running=5)["retry_order"] == "last"

    def test_cli_sets_and_lists_it(self, db_url):
        out = run_cli("queues", "set", "q", "--retries", "last", url=db_url)
        assert out.returncode == 0 and "retries last" in out.stdout, out.stderr
        listed = run_cli("queues", "list", url=db_url).stdout.splitlines()
        assert listed[0].split()[-1] == "RETRIES" and listed[1].split()[-1] == "last"
        bad = run_cli("queues", "set", "q", "--retries", "sideways", url=db_url)
        assert bad.returncode == 2 and "--retries" in bad.stderr


class TestClaimPlan:
    def test_the_claim_is_one_ordered_scan_of_the_claim_index(self, client, sql):
        """With retries in both lanes, the plain claim's rows come from jobs_claim_idx in
        its order (no Sort node): the lane costs the claim nothing."""
        client.enqueue_payloads("k", [{}] * 2000, queue="q")
        sql("UPDATE jobqueue.jobs SET lane = 0 WHERE id % 7 = 0")
        sql("ANALYZE jobqueue.jobs")
        plan = "\n".join(r["QUERY PLAN"] for r in sql(
            "EXPLAIN " + q("claim").replace("%(queue)s", "'q'").replace("%(limit)s", "10")
            .replace("%(worker)s", "gen_random_uuid()").replace("%(lease_seconds)s", "30")))
        picked = plan[plan.index("CTE picked"):plan.index("CTE claimed")]
        assert "jobs_claim_idx" in picked and "Sort" not in picked, plan

    @pytest.mark.parametrize("statement", ["claim", "claim_fair", "claim_capped"])
    def test_a_prepared_claim_settles_on_one_generic_plan(self, client, db_url, statement):
        """A worker's claims are prepared; over a backlog each must stop being planned anew
        (0.6 ms a claim over 200,000 jobs). Postgres counts the plans it made."""
        client.enqueue_payloads("k", [{}] * 5000, queue="q")
        worker = uuid.uuid4()
        with psycopg.connect(db_url, autocommit=True, prepare_threshold=0) as conn:
            conn.execute("ANALYZE jobqueue.jobs")
            for _ in range(8):
                conn.execute(q(statement), {"queue": "q", "limit": 1, "worker": worker,
                                            "lease_seconds": 30}).fetchall()
            (plans,) = conn.execute(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE starts_with(statement, %s)", (q(statement).splitlines()[0],)).fetchall()
        assert plans[0] >= 2 and plans[1] <= 5, plans


def queue_reads(sql, statement: str, params: dict | None = None) -> list[dict]:
    """Run `statement` under EXPLAIN ANALYZE: its plan nodes that read jobqueue.queues."""
    plan = sql("EXPLAIN (ANALYZE, FORMAT JSON) " + q(statement), params)[0]["QUERY PLAN"]
    nodes, found = [plan[0]["Plan"]], []
    while nodes:
        node = nodes.pop()
        nodes.extend(node.get("Plans", []))
        if node.get("Relation Name") == "queues":
            found.append(node)
    return found


class TestLaneLookup:
    """retry_jobs and rescue_retry read the queues' retry_order once per statement, not with
    a probe of `queues` for every row they put back."""

    def leased(self, client, sql) -> tuple[list[int], uuid.UUID]:
        """Five jobs of two queues ('late': retry_order last; 'early': no settings row),
        leased by one worker whose lease has expired."""
        with client.pool.connection() as conn:
            queues.change(conn, "late", retry_order="last")
        ids = [client.enqueue("k", queue=name)
               for name in ("late", "early", "late", "early", "late")]
        worker = uuid.uuid4()
        sql("UPDATE jobqueue.jobs SET lease_owner = %(worker)s, attempts = 1, "
            "execution_id = gen_random_uuid(), lease_expires_at = now() - interval '1 second' "
            "WHERE id = ANY(%(ids)s)", {"worker": worker, "ids": ids})
        return ids, worker

    def lanes(self, sql, ids: list[int]) -> set[tuple[str, int]]:
        return {(r["queue"], r["lane"]) for r in sql(
            "SELECT queue, lane FROM jobqueue.jobs WHERE id = ANY(%(ids)s) "
            "AND lease_owner IS NULL", {"ids": ids})}

    def test_retry_jobs_reads_the_settings_once(self, client, sql):
        ids, worker = self.leased(client, sql)
        executions = [r["e"] for r in sql(
            "SELECT execution_id::text AS e FROM jobqueue.jobs WHERE id = ANY(%(ids)s) "
            "ORDER BY array_position(%(ids)s, id)", {"ids": ids})]
        reads = queue_reads(sql, "retry_jobs", {
            "id": ids, "execution": executions, "delay": [0.0] * len(ids),
            "error": ['{"type": "E"}'] * len(ids), "worker": worker})
        assert [node["Actual Loops"] for node in reads] == [1], reads
        assert self.lanes(sql, ids) == {("late", 1), ("early", 0)}

    def test_rescue_retry_reads_the_settings_once(self, client, sql):
        ids, _ = self.leased(client, sql)
        reads = queue_reads(sql, "rescue_retry")
        assert [node["Actual Loops"] for node in reads] == [1], reads
        assert self.lanes(sql, ids) == {("late", 1), ("early", 0)}


class TestParkedRetries:
    """A retry backing off is parked (lane 2) after the due work, and moved ahead (lane 0) by
    maintenance once due (0030): the claim's scan no longer steps over retries that are not
    due yet, as it did when they waited in lane 0."""

    def retried(self, client, sql, n: int, delay: float) -> list[int]:
        """n jobs of queue q, claimed by one worker and failed with `delay` seconds of
        backoff through the worker's own retry statement."""
        ids = client.enqueue_payloads("k", [{}] * n, queue="q")
        worker = uuid.uuid4()
        sql("UPDATE jobqueue.jobs SET lease_owner = %(w)s, attempts = 1, "
            "execution_id = gen_random_uuid(), lease_expires_at = now() + interval '1 minute' "
            "WHERE id = ANY(%(ids)s)", {"w": worker, "ids": ids})
        rows = sql("SELECT id, execution_id::text AS e FROM jobqueue.jobs "
                   "WHERE id = ANY(%(ids)s) ORDER BY id", {"ids": ids})
        sql(q("retry_jobs"), {"id": [r["id"] for r in rows], "execution": [r["e"] for r in rows],
                              "delay": [delay] * n, "error": ['{"type": "E"}'] * n,
                              "worker": worker})
        return ids

    def lanes(self, sql, ids: list[int]) -> dict[int, int]:
        return {r["lane"]: r["n"] for r in sql(
            "SELECT lane, count(*) AS n FROM jobqueue.jobs WHERE id = ANY(%(ids)s) "
            "GROUP BY lane", {"ids": ids})}

    def test_a_backed_off_retry_is_parked_and_moved_ahead_once_due(self, client, sql):
        later = self.retried(client, sql, 3, 3600.0)
        now = self.retried(client, sql, 2, 0.0)
        assert self.lanes(sql, later) == {2: 3} and self.lanes(sql, now) == {0: 2}
        sql("UPDATE jobqueue.jobs SET run_at = now() - interval '1 second' "
            "WHERE id = %(id)s", {"id": later[0]})  # its backoff is over
        with client.pool.connection() as conn:
            assert conn.execute(q("promote_retries"), {"limit": 100}).rowcount == 1
        assert sql("SELECT id FROM jobqueue.jobs WHERE lane = 0 AND id = ANY(%(ids)s)",
                   {"ids": later}) == [{"id": later[0]}]
        assert self.lanes(sql, later) == {0: 1, 2: 2}

    def test_the_claim_does_not_step_over_retries_still_backing_off(self, client, sql):
        """10,000 retries backing off and 2,000 due jobs: the claim of 10 reads a handful
        of claim-index pages (it read every backed-off retry's entry when they were lane 0)."""
        self.retried(client, sql, 10_000, 3600.0)
        client.enqueue_payloads("k", [{}] * 2000, queue="q")
        sql("VACUUM ANALYZE jobqueue.jobs")  # the entries of the rows' earlier versions go
        plan = sql("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + q("claim"), {
            "queue": "q", "limit": 10, "worker": uuid.uuid4(), "lease_seconds": 30})
        nodes, scans = [plan[0]["QUERY PLAN"][0]["Plan"]], []
        while nodes:
            node = nodes.pop()
            nodes.extend(node.get("Plans", []))
            if node.get("Index Name") == "jobs_claim_idx":
                scans.append(node)
        [scan] = scans
        assert scan["Actual Rows"] == 10
        pages = scan["Shared Hit Blocks"] + scan["Shared Read Blocks"]
        assert pages < 20, pages  # ~10,000 entries stepped over are 30+ pages

    def test_a_row_put_off_leaves_lane_0_and_a_row_made_due_takes_it(self, client, sql):
        """Lane 0 holds only due rows: a retry handed back until later (over budget) is parked,
        and a parked retry that an operator runs now goes ahead of new work at once."""
        [due] = self.retried(client, sql, 1, 0.0)
        [parked] = self.retried(client, sql, 1, 3600.0)
        worker = uuid.uuid4()
        sql("UPDATE jobqueue.jobs SET lease_owner = %(w)s, lease_expires_at = now() + "
            "interval '1 minute' WHERE id = %(id)s", {"w": worker, "id": due})
        sql(q("hand_back_later"), {"ids": [due], "delays": [30.0],
                                   "progress": ['{"paused": "over budget"}'], "worker": worker})
        with client.pool.connection() as conn:
            assert store.run_now(conn, parked)
        assert self.lanes(sql, [due]) == {2: 1} and self.lanes(sql, [parked]) == {0: 1}
