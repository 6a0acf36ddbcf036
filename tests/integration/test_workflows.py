"""Workflows: jobs that wait for other jobs (depends_on), released inside the transaction
that ends their parents; the policy when a parent fails; every path that ends jobs (worker
completion, cancel, rescue of expired leases, delete); and the race between enqueueing a
child and its parent ending."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg.rows import dict_row

from jobqueue import InvalidJob, JobSpec, Permanent
from jobqueue.db.queries import q
from jobqueue.tasks import Registry
from tests.support.helpers import wait_until

WORKER = "00000000-0000-0000-0000-00000000f00d"


def claim(sql, queue: str, limit: int = 1000) -> dict[int, str]:
    """Lease runnable jobs of `queue` as WORKER: {id: execution id}."""
    return {r["id"]: r["execution_id"] for r in sql(q("claim"), {
        "queue": queue, "limit": limit, "worker": WORKER, "lease_seconds": 30})}


def finish(sql, executions: dict[int, str], state: str = "succeeded") -> list[int]:
    """The worker's completion statement (finish_jobs) for these executions."""
    ids = list(executions)
    return [r["id"] for r in sql(q("finish_jobs"), {
        "id": ids, "execution": [executions[i] for i in ids], "state": [state] * len(ids),
        "result": ['{"ok": true}' if state == "succeeded" else None] * len(ids),
        "error": [None if state == "succeeded" else '{"type": "E"}'] * len(ids),
        "worker": WORKER})]


def states(client, *ids) -> list[str]:
    return [client.get(i).state for i in ids]


class TestRelease:
    def test_a_child_is_blocked_until_its_parents_succeed_then_released_by_the_completion(
            self, client, sql):
        """Blocked while any parent is unfinished; the completion statement of the last
        parent moves it to `jobs` (waiting) in the same statement: no poller involved."""
        a, b = client.enqueue("k", queue="p"), client.enqueue("k", queue="p")
        child = client.enqueue("k", queue="c", depends_on=[a, b])
        assert states(client, a, b, child) == ["waiting", "waiting", "blocked"]
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs WHERE id = %s", (child,)) == [
            {"n": 0}]  # out of the hot table, so out of the claim's index
        assert claim(sql, "c") == {}
        running = claim(sql, "p")
        finish(sql, {a: running[a]})
        assert states(client, a, child) == ["succeeded", "blocked"]
        finish(sql, {b: running[b]})
        assert states(client, b, child) == ["succeeded", "waiting"]
        assert list(claim(sql, "c")) == [child]
        assert sql("SELECT count(*) AS n FROM jobqueue.job_dependencies") == [{"n": 0}]

    def test_a_real_worker_runs_a_chain_in_order(self, client, start_worker):
        """ask -> extract -> report through a worker: each step starts after the previous
        one finished."""
        seen: list[str] = []
        tasks = Registry()
        for name in ("ask", "extract", "report"):
            tasks.register(name, lambda payload, name=name: seen.append(name) or {"n": name})
        ids = client.enqueue_many([
            JobSpec("ask", queue="w", ref="ask"),
            JobSpec("extract", queue="w", ref="extract", depends_on=["ask"]),
            JobSpec("report", queue="w", depends_on=["extract"])])
        start_worker(tasks, queue="w")
        wait_until(lambda: states(client, *ids) == ["succeeded"] * 3)
        jobs = [client.get(i) for i in ids]
        assert seen == ["ask", "extract", "report"]
        assert jobs[1].started_at >= jobs[0].finished_at
        assert jobs[2].started_at >= jobs[1].finished_at

    def test_a_parent_that_ended_already(self, client, sql):
        """Succeeded: the child is runnable at once. Dead: it follows its policy at once."""
        ok, bad = client.enqueue("k", queue="p"), client.enqueue("k", queue="p")
        running = claim(sql, "p")
        finish(sql, {ok: running[ok]})
        finish(sql, {bad: running[bad]}, "dead")
        after_ok = client.enqueue("k", queue="c", depends_on=[ok])
        after_bad = client.enqueue("k", queue="c", depends_on=[bad])
        anyway = client.enqueue("k", queue="c", depends_on=[bad], on_parent_failure="run")
        assert states(client, after_ok, after_bad, anyway) == [
            "waiting", "cancelled", "waiting"]

    def test_unknown_or_foreign_parents_are_refused(self, client, sql):
        mine = client.enqueue("k", owner="olga")
        with pytest.raises(InvalidJob, match="depends_on: no job 999999"):
            client.enqueue("k", depends_on=[999999])
        with pytest.raises(InvalidJob, match=f"depends_on: no job {mine} of owner 'ivan'"):
            client.enqueue("k", owner="ivan", depends_on=[mine])
        with pytest.raises(InvalidJob, match="on_parent_failure"):
            client.enqueue("k", owner="olga", depends_on=[mine], on_parent_failure="maybe")
        with pytest.raises(InvalidJob, match="depends_on\\[0\\]"):
            client.enqueue("k", depends_on=[True])
        with pytest.raises(InvalidJob, match="no earlier job of this call has the ref 'x'"):
            client.enqueue_many([JobSpec("k", depends_on=["x"]), JobSpec("k", ref="x")])
        assert sql("SELECT count(*) AS n FROM jobqueue.blocked") == [{"n": 0}]


    def test_a_fan_out_of_payloads_waits_for_the_same_parent(self, client, sql):
        parent = client.enqueue("k", queue="p")
        ids = client.enqueue_payloads("k", [{"n": n} for n in range(3)], queue="c",
                                      depends_on=[parent])
        assert states(client, *ids) == ["blocked"] * 3
        finish(sql, claim(sql, "p"))
        assert states(client, *ids) == ["waiting"] * 3
        with pytest.raises(InvalidJob, match="ref: one ref cannot name many jobs"):
            client.enqueue_payloads("k", [{}], ref="x")


class TestParentFailure:
    def test_dead_parent_cancels_by_default_runs_with_policy_run_and_cascades(
            self, client, sql):
        parent = client.enqueue("k", queue="p")
        cancelled, grandchild, anyway = client.enqueue_many([
            JobSpec("k", queue="c", depends_on=[parent], ref="child"),
            JobSpec("k", queue="c", depends_on=["child"], on_parent_failure="run"),
            JobSpec("k", queue="c", depends_on=[parent], on_parent_failure="run"),
        ])
        running = claim(sql, "p")
        finish(sql, running, "dead")
        assert states(client, cancelled, grandchild, anyway) == [
            "cancelled", "waiting", "waiting"]
        error = client.get(cancelled).errors[-1]
        assert error["type"] == "ParentFailed" and "1 of the jobs" in error["message"]

    def test_a_cancel_policy_child_is_cancelled_while_other_parents_still_run(
            self, client, sql):
        a, b = client.enqueue("k", queue="p"), client.enqueue("k", queue="p")
        child = client.enqueue("k", queue="c", depends_on=[a, b])
        running = claim(sql, "p")
        finish(sql, {a: running[a]}, "dead")
        assert states(client, child) == ["cancelled"]
        finish(sql, {b: running[b]})  # the other parent's end finds nothing to release
        assert states(client, child) == ["cancelled"]
        assert sql("SELECT count(*) AS n FROM jobqueue.job_dependencies") == [{"n": 0}]


class TestEveryPathThatEndsJobs:
    def test_cancel_of_a_waiting_parent_and_of_a_blocked_child(self, client):
        parent = client.enqueue("k", queue="p")
        child, grandchild, runner = client.enqueue_many([
            JobSpec("k", queue="c", depends_on=[parent], ref="child"),
            JobSpec("k", queue="c", depends_on=["child"]),
            JobSpec("k", queue="c", depends_on=[parent], on_parent_failure="run")])
        assert client.cancel(child) == "cancelled"  # a blocked job can be cancelled
        assert states(client, child, grandchild, runner) == [
            "cancelled", "cancelled", "blocked"]
        assert client.cancel(parent) == "cancelled"
        assert states(client, runner) == ["waiting"]

    def test_a_running_parent_cancelled_by_its_worker(self, client, start_worker):
        started = threading.Event()

        async def hold(payload, ctx):
            import asyncio
            started.set()
            await asyncio.sleep(60)

        tasks = Registry()
        tasks.register("hold", hold)
        parent = client.enqueue("hold", queue="w")
        child = client.enqueue("k", queue="c", depends_on=[parent])
        start_worker(tasks, queue="w")
        assert started.wait(10)
        assert client.cancel(parent) == "requested"
        wait_until(lambda: states(client, parent, child) == ["cancelled", "cancelled"])

    def test_rescue_of_an_expired_lease_that_used_every_attempt(self, client, sql):
        parent = client.enqueue("k", queue="p", max_attempts=1)
        child = client.enqueue("k", queue="c", depends_on=[parent], on_parent_failure="run")
        claim(sql, "p")
        sql("UPDATE jobqueue.jobs SET lease_expires_at = now() - interval '1 second' "
            "WHERE id = %s", (parent,))
        assert [r["id"] for r in sql(q("rescue_dead"))] == [parent]
        assert states(client, parent, child) == ["dead", "waiting"]

    def test_delete_of_a_parent(self, client):
        parent = client.enqueue("k", queue="p")
        child = client.enqueue("k", queue="c", depends_on=[parent])
        from jobqueue.db import store
        with client.pool.connection() as conn:
            assert store.delete(conn, store.JobFilter(ids=[parent])) == 1
        assert states(client, child) == ["cancelled"]

    def test_a_worker_failing_a_parent_for_good(self, client, start_worker):
        def fail(payload):
            raise Permanent("no")

        tasks = Registry()
        tasks.register("fail", fail)
        parent = client.enqueue("fail", queue="w")
        child = client.enqueue("k", queue="c", depends_on=[parent])
        start_worker(tasks, queue="w")
        wait_until(lambda: states(client, parent, child) == ["dead", "cancelled"])


class TestRaces:
    def test_a_child_enqueued_while_its_parent_finishes_is_never_left_blocked(
            self, client, sql, db_url):
        """The enqueue flags and locks the parent; a completion that waited for that lock
        sees the child's edge (the release step reads with a fresh snapshot). Whichever
        commits first, the child ends up released, never blocked behind a finished parent."""
        rounds = 40
        parents = [client.enqueue("k", queue="p") for _ in range(rounds)]
        running = claim(sql, "p")
        children: list[int] = []
        with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as finisher:
            for parent in parents:
                go = threading.Barrier(2)

                def end(parent=parent, go=go):
                    go.wait()
                    finisher.execute(q("finish_jobs"), {
                        "id": [parent], "execution": [running[parent]],
                        "state": ["succeeded"], "result": ["{}"], "error": [None],
                        "worker": WORKER})

                t = threading.Thread(target=end)
                t.start()
                go.wait()
                children.append(client.enqueue("k", queue="c", depends_on=[parent]))
                t.join()
        assert set(states(client, *parents)) == {"succeeded"}
        assert set(states(client, *children)) == {"waiting"}


    def blocked_on_a_lock(self, sql, pid: int) -> bool:
        return sql("SELECT wait_event_type = 'Lock' AS waits FROM pg_stat_activity "
                   "WHERE pid = %s", (pid,))[0]["waits"]

    def test_completion_waiting_for_the_enqueue_sees_the_new_child(self, client, sql, db_url):
        """The enqueue holds the parent's row lock; the completion waits for it, and after
        the enqueue commits, releases the child it could not see when it started."""
        from jobqueue.client import insert_specs

        parent = client.enqueue("k", queue="p")
        running = claim(sql, "p")
        with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as enqueuer, \
                psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as finisher:
            with enqueuer.transaction():
                ((child, _),) = insert_specs(enqueuer, [JobSpec("k", queue="c",
                                                                depends_on=[parent])])
                done = []
                t = threading.Thread(target=lambda: done.append(finisher.execute(
                    q("finish_jobs"), {"id": [parent], "execution": [running[parent]],
                                       "state": ["succeeded"], "result": ["{}"],
                                       "error": [None], "worker": WORKER}).fetchall()))
                t.start()
                wait_until(lambda: self.blocked_on_a_lock(sql, finisher.info.backend_pid))
            t.join(10)
        assert done == [[{"id": parent}]]
        assert states(client, parent, child) == ["succeeded", "waiting"]

    def test_enqueue_waiting_for_the_completion_finds_the_parent_finished(
            self, client, sql, db_url):
        """The completion holds the parent's row; the enqueue waits, finds it gone from the
        hot table, looks again and sees it finished: the child is runnable at once."""
        parent = client.enqueue("k", queue="p")
        running = claim(sql, "p")
        with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as finisher:
            with finisher.transaction():
                finisher.execute(q("finish_jobs"), {
                    "id": [parent], "execution": [running[parent]], "state": ["dead"],
                    "result": [None], "error": ['{"type": "E"}'], "worker": WORKER})
                made = []
                t = threading.Thread(target=lambda: made.append(client.enqueue(
                    "k", queue="c", depends_on=[parent], on_parent_failure="run")))
                t.start()
                wait_until(lambda: sql(
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = "
                    "'Lock' AND datname = current_database()")[0]["n"] == 1)
            t.join(10)
        assert states(client, parent, made[0]) == ["dead", "waiting"]


class TestScale:
    def test_ten_thousand_children_release_in_one_completion(self, client, sql):
        parent = client.enqueue("k", queue="p")
        children = client.enqueue_many(
            JobSpec("k", queue="c", depends_on=[parent]) for _ in range(10_000))
        assert sql("SELECT count(*) AS n FROM jobqueue.blocked") == [{"n": 10_000}]
        running = claim(sql, "p")
        started = time.perf_counter()
        assert finish(sql, running) == [parent]
        elapsed = time.perf_counter() - started
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs WHERE queue = 'c'") == [
            {"n": 10_000}]
        assert sql("SELECT count(*) AS n FROM jobqueue.blocked") == [{"n": 0}]
        assert client.get(children[-1]).state == "waiting"
        print(f"released 10,000 children in {elapsed:.3f} s")
