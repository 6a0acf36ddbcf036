"""The worker runtime, in-process: handlers, retries, dead letters, timeouts, cancellation,
LISTEN wake-ups, poll-only mode, leases, fencing, shutdown, maintenance."""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta

import pytest

from jobqueue import JobSpec, Permanent, Retry
from jobqueue.db.queries import q
from jobqueue.tasks import Registry
from jobqueue.worker import GC_YOUNG_THRESHOLD, backoff
from jobqueue.worker.config import QueueConfig
from jobqueue.worker.executor import Executor
from tests.support.helpers import wait_finished, wait_until


def registry(**funcs) -> Registry:
    reg = Registry()
    for name, func in funcs.items():
        reg.register(name, func)
    return reg


class TestHandlers:
    def test_sync_and_async_handlers_store_their_results(self, client, start_worker):
        async def add(payload):
            return payload["a"] + payload["b"]

        def shout(payload, ctx):
            return {"text": payload["text"].upper(), "job": ctx.job_id}

        start_worker(registry(add=add, shout=shout))
        a = client.enqueue("add", {"a": 2, "b": 3})
        b = client.enqueue("shout", {"text": "hi"})
        job_a, job_b = wait_finished(client, [a, b])
        assert (job_a.state, job_a.result, job_a.attempts) == ("succeeded", 5, 1)
        assert job_b.result == {"text": "HI", "job": b}

    def test_priority_then_run_at_then_id_decides_the_order(self, client, start_worker):
        order = []

        def work(payload):
            order.append(payload["n"])

        specs = [JobSpec("work", {"n": n}, priority=p) for n, p in
                 [(1, "low"), (2, None), (3, "high"), (4, None), (5, "high")]]
        ids = client.enqueue_many(specs)
        start_worker(registry(work=work), concurrency=1)
        wait_finished(client, ids)
        assert order == [3, 5, 2, 4, 1]

    def test_progress_is_recorded(self, client, start_worker):
        release = threading.Event()

        def slow(payload, ctx):
            ctx.set_progress({"done": 1, "total": 2})
            release.wait(10)

        start_worker(registry(slow=slow))
        job_id = client.enqueue("slow")
        wait_until(lambda: client.get(job_id).progress == {"done": 1, "total": 2})
        release.set()
        assert wait_finished(client, [job_id])[0].progress == {"done": 1, "total": 2}

    def test_unknown_task_is_dead_letters_with_a_clear_error(self, client, start_worker):
        start_worker(registry())
        job_id = client.enqueue("nobody_knows_me")
        job = wait_finished(client, [job_id])[0]
        assert job.state == "dead" and job.attempts == 1
        assert "no task named 'nobody_knows_me'" in job.errors[0]["message"]


    def test_jobs_that_finish_without_waiting_and_jobs_that_wait_both_complete(
            self, client, start_worker):
        # Jobs start eagerly: one that never waits gets no Task; one that waits gets one.
        async def instant(payload):
            return payload["n"]

        async def waits(payload):
            for _ in range(3):
                await asyncio.sleep(0.001)
            await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.001)
            return payload["n"] * 10

        start_worker(registry(instant=instant, waits=waits))
        ids = client.enqueue_many([JobSpec(kind, {"n": n}) for n in range(20)
                                   for kind in ("instant", "waits")])
        results = [job.result for job in wait_finished(client, ids)]
        assert results == [r for n in range(20) for r in (n, n * 10)]

    def test_a_context_variable_set_by_one_job_is_not_seen_by_the_next(
            self, client, start_worker):
        var = contextvars.ContextVar("var", default="unset")

        async def setter(payload):
            var.set(payload["value"])  # returns without waiting: runs eagerly

        async def reader(payload):
            return var.get()

        start_worker(registry(setter=setter, reader=reader), concurrency=1)
        first = client.enqueue("setter", {"value": "leaked"})
        wait_finished(client, [first])
        second = client.enqueue("reader")
        assert wait_finished(client, [second])[0].result == "unset"


class TestRetries:
    def test_failures_retry_with_backoff_then_dead_letter_keeping_every_error(
            self, client, start_worker):
        def flaky(payload, ctx):
            raise ValueError(f"boom {ctx.attempt}")

        start_worker(registry(flaky=flaky), retry_base_seconds=0.2)
        job_id = client.enqueue("flaky", max_attempts=3)
        job = wait_finished(client, [job_id])[0]
        assert (job.state, job.attempts) == ("dead", 3)
        assert [e["attempt"] for e in job.errors] == [1, 2, 3]
        assert [e["message"] for e in job.errors] == ["boom 1", "boom 2", "boom 3"]
        assert all(e["type"] == "ValueError" and "Traceback" in e["traceback"]
                   for e in job.errors)
        at = [datetime.fromisoformat(e["at"]) for e in job.errors]
        # attempt 2 waits 0.1-0.2 s, attempt 3 waits 0.2-0.4 s (equal jitter around 2^n)
        assert (at[1] - at[0]).total_seconds() >= 0.1
        assert (at[2] - at[1]).total_seconds() >= 0.2

    def test_success_after_a_failure(self, client, start_worker):
        def second_time_lucky(payload, ctx):
            if ctx.attempt == 1:
                raise ConnectionError("transient")
            return "ok"

        start_worker(registry(lucky=second_time_lucky))
        job = wait_finished(client, [client.enqueue("lucky")])[0]
        assert (job.state, job.result, job.attempts, len(job.errors)) == ("succeeded", "ok", 2, 1)

    def test_permanent_errors_skip_the_remaining_attempts(self, client, start_worker):
        def bad_input(payload):
            raise Permanent("payload has no address")

        start_worker(registry(bad=bad_input))
        job = wait_finished(client, [client.enqueue("bad", max_attempts=5)])[0]
        assert (job.state, job.attempts) == ("dead", 1)

    def test_retry_exception_sets_the_delay(self, client, start_worker, sql):
        def later(payload, ctx):
            raise Retry("come back later", delay=3600)

        start_worker(registry(later=later))
        job_id = client.enqueue("later")
        job = wait_until(lambda: (j := client.get(job_id)).errors and j.state == "retrying" and j)
        assert (job.run_at - datetime.fromisoformat(job.errors[0]["at"])).total_seconds() > 3500

    def test_backoff_grows_exponentially_with_jitter_and_a_cap(self):
        for attempt, (lo, hi) in {1: (0.5, 1), 2: (1, 2), 3: (2, 4), 10: (30, 60)}.items():
            values = [backoff(attempt, 1.0, 60.0) for _ in range(200)]
            assert lo <= min(values) and max(values) <= hi
            assert max(values) - min(values) > (hi - lo) / 4  # it really is jittered


class TestTimeoutAndCancel:
    def test_a_job_over_its_timeout_fails_that_attempt(self, client, start_worker):
        async def slow(payload):
            await asyncio.sleep(30)

        start_worker(registry(slow=slow))
        job = wait_finished(client, [client.enqueue("slow", timeout=0.2, max_attempts=1)])[0]
        assert job.state == "dead"
        assert job.errors[0]["type"] == "TimeoutError"
        assert "timeout" in job.errors[0]["message"]

    def test_a_handlers_own_asyncio_timeout_is_its_own(self, client, start_worker):
        """asyncio.timeout() entered before the first await binds to the job's Task: it
        fails that job, and the worker (whose own task it must not touch) goes on."""
        async def strict(payload):
            async with asyncio.timeout(0.05):
                await asyncio.sleep(5)

        async def fine(payload):
            return "ok"

        worker = start_worker(registry(strict=strict, fine=fine))
        job = wait_finished(client, [client.enqueue("strict", max_attempts=1)])[0]
        assert (job.state, job.errors[0]["type"]) == ("dead", "TimeoutError")
        assert wait_finished(client, [client.enqueue("fine")])[0].result == "ok"
        assert worker.thread.is_alive() and worker.error is None

    def test_a_job_cancelled_before_its_first_step_is_recorded_not_stranded(
            self, client, start_worker, monkeypatch):
        """A cancellation handled in the same loop pass as the claim cancels the job's Task
        before it runs: the job must still end cancelled (not stay leased forever)."""
        ran = threading.Event()

        async def never(payload):
            ran.set()
            await asyncio.sleep(60)

        original = Executor.start

        def start_then_cancel(self, row, now):
            original(self, row, now)
            self.stop_job(row[0], "cancelled")

        monkeypatch.setattr(Executor, "start", start_then_cancel)
        start_worker(registry(never=never))
        job = wait_finished(client, [client.enqueue("never")], timeout=10)[0]
        assert job.state == "cancelled" and job.errors[-1]["type"] == "JobCancelled"

    def test_cancelling_a_running_async_job_interrupts_the_handler(self, client, start_worker):
        started, observed = threading.Event(), threading.Event()

        async def long(payload):
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                observed.set()
                raise

        start_worker(registry(long=long))
        job_id = client.enqueue("long")
        assert started.wait(10)
        assert client.cancel(job_id) == "requested"
        job = wait_finished(client, [job_id], timeout=5)[0]
        assert observed.is_set()
        assert job.state == "cancelled" and job.errors[-1]["type"] == "JobCancelled"

    def test_a_sync_handler_observes_cancellation_through_its_context(
            self, client, start_worker):
        started, observed = threading.Event(), threading.Event()

        def long(payload, ctx):
            started.set()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not ctx.cancelled:
                time.sleep(0.01)
            if ctx.cancelled:
                observed.set()
            ctx.check_cancelled()

        start_worker(registry(long=long))
        job_id = client.enqueue("long")
        assert started.wait(10)
        client.cancel(job_id)
        assert wait_finished(client, [job_id], timeout=5)[0].state == "cancelled"
        assert observed.wait(5)

    def test_poll_only_workers_learn_of_cancellation_from_the_heartbeat(
            self, client, start_worker):
        started = threading.Event()

        async def long(payload):
            started.set()
            await asyncio.sleep(60)

        start_worker(registry(long=long), listen=False, lease_seconds=1.5)
        job_id = client.enqueue("long")
        assert started.wait(10)
        client.cancel(job_id)
        assert wait_finished(client, [job_id], timeout=5)[0].state == "cancelled"


class TestWakeUp:
    def test_listen_wakes_an_idle_worker_long_before_its_poll(self, client, start_worker):
        """Poll every 30 s, yet each job is picked up within a fraction of a second."""
        picked = []

        async def stamp(payload):
            picked.append(time.time() - payload["t"])

        tw = start_worker(registry(stamp=stamp), poll_seconds=30)
        assert tw.worker.listening.wait(10)
        for _ in range(5):
            job_id = client.enqueue("stamp", {"t": time.time()})
            wait_finished(client, [job_id])
        assert len(picked) == 5 and max(picked) < 0.5

    def test_poll_only_mode_still_finds_work(self, client, start_worker):
        tw = start_worker(registry(ok=lambda p: 1), listen=False, poll_seconds=0.05)
        assert tw.worker.config.listen is False
        assert wait_finished(client, [client.enqueue("ok")])[0].state == "succeeded"

    def test_scheduled_jobs_run_when_due(self, client, start_worker):
        """An idle worker polling every 30 s learns the due time from the insert's
        notification, and runs the job on time without asking the database."""
        tw = start_worker(registry(ok=lambda p: 1), poll_seconds=30)
        assert tw.worker.listening.wait(10)
        wait_until(lambda: tw.worker.claim_rounds >= 2)  # idle after the listener's catch-up
        job_id = client.enqueue("ok", delay=0.5)
        assert client.get(job_id).state == "scheduled"
        job = wait_finished(client, [job_id], timeout=5)[0]
        assert job.started_at >= job.run_at


class TestLeases:
    def test_an_expired_lease_is_rescued_and_the_job_runs_again(self, client, start_worker,
                                                                sql):
        """A worker that vanished (no heartbeat) loses its jobs after the lease time."""
        ghost = uuid.uuid4()
        job_id = client.enqueue("ok", queue="q")
        sql(q("claim"), {"queue": "q", "limit": 1, "worker": ghost, "lease_seconds": 0.3})
        start_worker(registry(ok=lambda p: "done"), queue="q", maintenance_seconds=0.2)
        job = wait_finished(client, [job_id], timeout=10)[0]
        assert (job.state, job.result, job.attempts) == ("succeeded", "done", 2)
        assert job.errors[0]["type"] == "LeaseExpired" and job.errors[0]["worker"] == str(ghost)

    def test_an_expired_lease_on_the_last_attempt_dead_letters(self, client, start_worker,
                                                               sql):
        job_id = client.enqueue("ok", queue="q", max_attempts=1)
        sql(q("claim"), {"queue": "q", "limit": 1, "worker": uuid.uuid4(), "lease_seconds": 0.2})
        start_worker(registry(ok=lambda p: "done"), queue="q", maintenance_seconds=0.2)
        job = wait_finished(client, [job_id], timeout=10)[0]
        assert job.state == "dead" and job.errors[-1]["type"] == "LeaseExpired"

    def test_the_heartbeat_keeps_a_long_job_leased(self, client, start_worker, sql):
        """A job running for several lease periods is not rescued from a live worker."""
        async def long(payload):
            await asyncio.sleep(1.5)
            return "finished"

        start_worker(registry(long=long), lease_seconds=0.5, maintenance_seconds=0.1)
        job = wait_finished(client, [client.enqueue("long")], timeout=10)[0]
        assert (job.state, job.attempts, job.errors) == ("succeeded", 1, [])

    def test_a_beat_renews_only_leases_set_over_renew_after_ago(self, client, sql):
        """renew_leases leaves a lease set moments ago as it is (no row rewritten: the beat
        right after the first claims costs no write), still reports it held with its cancel
        flag, extends the older ones, and hands back unknown rows however fresh."""
        worker = uuid.uuid4()
        client.enqueue_many([JobSpec("x", queue="q") for _ in range(4)])
        ids = sorted(r["id"] for r in sql(q("claim"), {"queue": "q", "limit": 4,
                                                       "worker": worker, "lease_seconds": 30}))
        fresh, old, unknown = ids[:2], ids[2], ids[3]
        sql("UPDATE jobqueue.jobs SET cancel_requested = true WHERE id = %(id)s",
            {"id": fresh[0]})
        sql("UPDATE jobqueue.jobs SET lease_expires_at = now() + interval '20 seconds' "
            "WHERE id = %(id)s", {"id": old})
        before = {r["id"]: (r["xmin"], r["lease_expires_at"]) for r in sql(
            "SELECT id, xmin::text, lease_expires_at FROM jobqueue.jobs")}
        answer = sql(q("renew_leases"), {"worker": worker, "known": [*fresh, old],
                                         "lease_seconds": 30, "renew_after": 5})
        assert {r["id"]: (r["cancel_requested"], r["released"]) for r in answer} == {
            fresh[0]: (True, False), fresh[1]: (False, False), old: (False, False),
            unknown: (False, True)}
        after = {r["id"]: (r["xmin"], r["lease_expires_at"], r["lease_owner"]) for r in sql(
            "SELECT id, xmin::text, lease_expires_at, lease_owner FROM jobqueue.jobs")}
        for job_id in fresh:
            assert after[job_id][:2] == before[job_id]  # not rewritten
        assert after[old][1] > before[old][1] + timedelta(seconds=9)  # 20 s left -> 30 s
        assert after[unknown][2] is None  # back in the queue

    def test_a_stale_worker_cannot_overwrite_the_new_owners_outcome(self, client, sql):
        """Fencing: once a lease expired and another worker took the job over, the first
        worker's late success, failure or hand-back changes nothing."""
        stale, fresh = uuid.uuid4(), uuid.uuid4()
        job_id = client.enqueue("x", queue="q")
        first = sql(q("claim"), {"queue": "q", "limit": 1, "worker": stale,
                                 "lease_seconds": 0.01})[0]["execution_id"]
        time.sleep(0.05)  # let the 10 ms lease run out (nothing to await: it is wall time)
        assert sql(q("rescue_retry"))[0]["rescued"] == 1
        second = sql(q("claim"), {"queue": "q", "limit": 1, "worker": fresh,
                                  "lease_seconds": 30})[0]["execution_id"]
        assert first != second

        late = {"id": [job_id], "execution": [first], "worker": stale}
        assert sql(q("finish_jobs"), late | {"state": ["succeeded"], "result": ['"stale"'],
                                             "error": [None]}) == []
        assert sql(q("retry_jobs"), late | {"delay": [0.0], "error": ['{"x": 1}']}) == []
        assert sql(q("hand_back"), {"ids": [job_id], "worker": stale})[0]["released"] == 0
        # Even with the right worker id, an old execution is refused.
        old_execution = late | {"worker": fresh, "state": ["succeeded"], "result": ['"old"'],
                                "error": [None]}
        assert sql(q("finish_jobs"), old_execution) == []
        assert client.get(job_id).state == "running"

        done = {"id": [job_id], "execution": [second], "worker": fresh, "state": ["succeeded"],
                "result": ['"fresh"'], "error": [None]}
        assert sql(q("finish_jobs"), done) == [{"id": job_id}]
        assert sql(q("finish_jobs"), late | {"state": ["dead"], "result": [None],
                                             "error": [None]}) == []
        job = client.get(job_id)
        assert (job.state, job.result) == ("succeeded", "fresh")

    def test_a_worker_that_lost_its_lease_stops_the_job_and_writes_nothing(
            self, client, start_worker, sql):
        """The heartbeat notices the lease went elsewhere and abandons the handler."""
        started, stopped = threading.Event(), threading.Event()

        async def long(payload):
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                stopped.set()
                raise

        tw = start_worker(registry(long=long), lease_seconds=0.6)
        job_id = client.enqueue("long")
        assert started.wait(10)
        other = uuid.uuid4()
        sql("UPDATE jobqueue.jobs SET lease_owner = %s WHERE id = %s", (other, job_id))
        assert stopped.wait(5)
        wait_until(lambda: tw.worker._in_flight == {})
        job = client.get(job_id)
        assert job.state == "running" and job.lease_owner == other


class TestShutdown:
    def test_warm_stop_lets_running_jobs_finish(self, client, start_worker):
        started = threading.Event()

        async def short(payload):
            started.set()
            await asyncio.sleep(0.3)
            return "done"

        tw = start_worker(registry(short=short), grace_seconds=10)
        job_id = client.enqueue("short")
        assert started.wait(10)
        tw.stop()
        job = client.get(job_id)
        assert (job.state, job.result) == ("succeeded", "done")

    def test_after_the_grace_period_jobs_are_handed_back_unspent(self, client, start_worker):
        started = threading.Event()

        async def endless(payload):
            started.set()
            await asyncio.sleep(60)

        tw = start_worker(registry(endless=endless), grace_seconds=0.3)
        job_id = client.enqueue("endless")
        assert started.wait(10)
        t0 = time.monotonic()
        tw.stop()
        assert time.monotonic() - t0 < 5
        job = client.get(job_id)
        assert (job.state, job.attempts, job.errors) == ("waiting", 0, [])

    def test_a_hard_stop_hands_back_at_once(self, client, start_worker):
        started = threading.Event()

        async def endless(payload):
            started.set()
            await asyncio.sleep(60)

        tw = start_worker(registry(endless=endless), grace_seconds=60)
        job_id = client.enqueue("endless")
        assert started.wait(10)
        t0 = time.monotonic()
        tw.stop(hard=True)
        assert time.monotonic() - t0 < 5
        assert client.get(job_id).state == "waiting"


class TestRegistrationAndMaintenance:
    def test_worker_row_exists_while_running_and_goes_at_stop(self, client, start_worker):
        release = threading.Event()
        tw = start_worker(registry(wait=lambda p: release.wait(10)), queue="w", concurrency=7,
                          lease_seconds=0.6)
        client.enqueue("wait", queue="w")
        row = wait_until(lambda: [w for w in client.workers() if w["in_flight"] == 1])[0]
        assert (row["queue"], row["concurrency"], row["id"]) == ("w", 7, tw.worker.id)
        release.set()
        tw.stop()
        assert client.workers() == []

    def test_maintenance_prunes_old_finished_jobs_and_stale_workers(self, client,
                                                                    start_worker, sql):
        old = client.enqueue("x", idempotency_key="old")
        client.cancel(old)
        sql("UPDATE jobqueue.finished SET finished_at = now() - interval '8 days'")
        sql("INSERT INTO jobqueue.workers (id, host, pid, queue, concurrency, last_seen_at) "
            "VALUES (%s, 'gone', 1, 'q', 1, now() - interval '1 hour')", (uuid.uuid4(),))
        tw = start_worker(registry(), maintenance_seconds=0.1, retention_seconds=7 * 86400)
        wait_until(lambda: client.get(old) is None)
        wait_until(lambda: [w["id"] for w in client.workers()] == [tw.worker.id])
        assert sql("SELECT count(*) AS n FROM jobqueue.idempotency_keys")[0]["n"] == 0


@pytest.mark.parametrize("jobs", [2000])
def test_one_worker_drains_a_backlog_exactly_once(client, start_worker, jobs):
    seen: list[int] = []

    async def count(payload, ctx):
        seen.append(ctx.job_id)

    ids = client.enqueue_many([JobSpec("count") for _ in range(jobs)])
    start_worker(registry(count=count), concurrency=100, claim_batch=100)
    wait_until(lambda: len(seen) >= jobs and client.status()[0]["succeeded"] == jobs)
    assert sorted(seen) == ids


def test_a_worker_process_tunes_the_garbage_collector():
    """run_worker freezes start-up objects and collects the young generation less often (a
    third of a no-op job's worker CPU went to the collector); a subprocess, so the test
    process keeps Python's defaults."""
    code = (
        "import gc\n"
        "from jobqueue import worker\n"
        "async def run(self, install_signals=False):\n"
        "    print(gc.get_threshold()[0], gc.get_freeze_count() > 1000)\n"
        "worker.Worker.run = run\n"
        "worker.run_worker('postgresql://unused', worker.WorkerConfig())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(GC_YOUNG_THRESHOLD), "True"]


class TestManyQueues:
    def test_each_queue_keeps_its_own_slots_and_a_slow_one_starves_no_other(
            self, client, sql, start_worker):
        """One process serves two queues: `slow` (1 slot) is stuck on a job, `fast` (5 slots)
        drains meanwhile; neither exceeds its own concurrency."""
        release = threading.Event()
        running = {"slow": 0, "fast": 0}
        peak = {"slow": 0, "fast": 0}
        lock = threading.Lock()

        def work(payload, ctx):
            with lock:
                running[ctx.queue] += 1
                peak[ctx.queue] = max(peak[ctx.queue], running[ctx.queue])
            try:
                if ctx.queue == "slow":
                    release.wait(20)
                else:
                    time.sleep(0.02)
            finally:
                with lock:
                    running[ctx.queue] -= 1

        slow = [client.enqueue("work", queue="slow") for _ in range(3)]
        fast = [client.enqueue("work", queue="fast") for _ in range(30)]
        start_worker(registry(work=work), queues=(QueueConfig("slow", 1), QueueConfig("fast", 5)))
        assert all(j.state == "succeeded" for j in wait_finished(client, fast))
        assert [client.get(i).state for i in slow].count("running") == 1
        release.set()
        wait_finished(client, slow)
        assert peak == {"slow": 1, "fast": 5}

    def test_a_worker_uses_three_connections_whatever_the_number_of_queues(
            self, sql, start_worker):
        def count():
            return sql("SELECT count(*) AS n FROM pg_stat_activity "
                       "WHERE datname = current_database()")[0]["n"]

        before = count()
        tw = start_worker(registry(), queues=tuple(QueueConfig(f"q{i}", 2) for i in range(8)))
        assert tw.worker.listening.wait(10)
        wait_until(lambda: tw.worker.claim_rounds >= 8)
        assert count() - before <= 3


class TestPrefetch:
    def test_jobs_claimed_ahead_wait_their_turn_and_go_back_at_a_stop(
            self, client, sql, start_worker):
        """With prefetch, a worker claims jobs beyond its free slots; they start only as slots
        free (concurrency holds), a cancelled one ends cancelled without running, and a stop
        hands the rest back at once instead of keeping them leased."""
        release = threading.Event()
        started = []

        def work(payload):
            started.append(payload["n"])
            release.wait(20)

        ids = [client.enqueue("work", {"n": n}) for n in range(6)]
        tw = start_worker(registry(work=work), concurrency=2, prefetch=2)
        wait_until(lambda: sql("SELECT count(*) AS n FROM jobqueue.jobs "
                               "WHERE lease_owner IS NOT NULL")[0]["n"] == 4)
        # The two handlers run in the worker's thread pool: leased first, started a moment
        # later (on a busy machine, after this test looked).
        wait_until(lambda: sorted(started) == [0, 1], message="the first two started")
        client.cancel(ids[2])  # claimed ahead, not started
        wait_until(lambda: client.get(ids[2]).state == "cancelled")
        tw.worker.stop()  # warm: the two running finish, the one claimed ahead goes back
        wait_until(lambda: client.get(ids[3]).state == "waiting", message="handed back")
        release.set()
        tw.thread.join(20)
        assert sorted(started) == [0, 1]
        assert [client.get(i).state for i in ids] == [
            "succeeded", "succeeded", "cancelled", "waiting", "waiting", "waiting"]
        assert client.get(ids[3]).attempts == 0


class TestUntilIdle:
    """WorkerConfig(until_idle=True): drain what is runnable, then stop by itself."""

    @staticmethod
    def ended(tw, timeout: float = 20.0) -> float:
        """Wait for the worker to stop by itself; returns how long that took."""
        t0 = time.monotonic()
        tw.thread.join(timeout)
        assert not tw.thread.is_alive(), "the worker did not stop by itself"
        assert tw.error is None
        return time.monotonic() - t0

    def test_it_drains_every_queue_and_follow_ups_then_stops(self, client, sql,
                                                             start_worker):
        """Two queues; each `parent` job enqueues a `child` on the other queue as it ends;
        one job asks to be retried in an hour, one is due in an hour. Without LISTEN and with
        a 30 s poll, the worker runs every parent and child and stops: the children were
        found because each queue claims again once the last job's outcome is written, and
        work scheduled for later keeps nobody waiting."""
        def parent(payload):
            time.sleep(0.2)
            client.enqueue("child", queue=payload["to"])

        def later(payload):
            raise Retry("not now", delay=3600)

        parents = [client.enqueue("parent", {"to": "b"}, queue="a") for _ in range(5)]
        parents += [client.enqueue("parent", {"to": "a"}, queue="b") for _ in range(5)]
        retried = client.enqueue("later", queue="a")
        scheduled = client.enqueue("child", queue="b", delay=3600)
        tw = start_worker(registry(parent=parent, child=lambda p: "ok", later=later),
                          queues=(QueueConfig("a", 3), QueueConfig("b", 3)),
                          until_idle=True, listen=False, poll_seconds=30)
        assert self.ended(tw) < 15
        assert [client.get(i).state for i in parents] == ["succeeded"] * 10
        assert sql("SELECT queue, count(*) AS n FROM jobqueue.finished WHERE kind = 'child' "
                   "AND state = 'succeeded' GROUP BY queue ORDER BY queue") == [
            {"queue": "a", "n": 5}, {"queue": "b", "n": 5}]
        assert (client.get(retried).state, client.get(scheduled).state) == (
            "retrying", "scheduled")
        assert tw.worker.finished == 21  # 10 parents, 10 children, 1 attempt to retry

    def test_with_nothing_runnable_it_stops_at_once(self, client, start_worker):
        client.enqueue("ok", delay=3600)
        tw = start_worker(registry(ok=lambda p: 1), until_idle=True,
                          queues=(QueueConfig("default"), QueueConfig("other")))
        assert self.ended(tw) < 10
        assert tw.worker.claimed == 0

    def test_a_stop_while_draining_is_still_a_warm_stop(self, client, start_worker):
        """A stop (SIGTERM) before it is idle: running jobs finish, the rest go back."""
        started = threading.Event()

        async def slow(payload):
            started.set()
            await asyncio.sleep(0.3)
            return "done"

        ids = [client.enqueue("slow") for _ in range(3)]
        tw = start_worker(registry(slow=slow), concurrency=1, until_idle=True)
        assert started.wait(10)
        tw.stop()
        states = [client.get(i).state for i in ids]
        assert states[0] == "succeeded" and states[1:] == ["waiting", "waiting"]


class TestStartAndStop:
    def test_on_start_runs_once_the_connections_are_open_and_the_link_is_reset(self, db_url):
        """on_start (a platform's runtime borrowing the finish connection) runs after the
        worker's connections opened with their retries and it registered; when the worker
        stops, the task that awaited it no longer sees its lent link."""
        from jobqueue import Worker, WorkerConfig
        from jobqueue.worker import link

        seen = {}

        async def main():
            worker = Worker(db_url, WorkerConfig(queue="nothing", poll_seconds=0.1,
                                                 until_idle=True), tasks=registry())

            async def on_start():
                seen["registered"] = worker._started
                async with link.current.get().connection() as conn:
                    seen["answer"] = (await (await conn.execute("SELECT 1")).fetchone())[0]

            worker.on_start = on_start
            before = link.current.get()
            await worker.run()
            seen["after"] = link.current.get() is before

        asyncio.run(main())
        assert seen == {"registered": True, "answer": 1, "after": True}
