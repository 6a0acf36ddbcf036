"""Caps and fairness with real worker processes: four processes sampled every 10 ms never run
more than a queue's fleet-wide caps, and one owner's backlog of 10,000 does not hold up another
owner's 10 jobs (issue 11, points 3 and 4)."""

from __future__ import annotations

import subprocess
import time

import psycopg
import pytest

from jobqueue import JobSpec
from jobqueue import queues as queue_settings
from tests.support.helpers import jobqueue_cmd, wait_until


@pytest.fixture
def workers(db_url):
    """workers(n, queue:concurrency) -> worker processes, killed at teardown."""
    started: list[subprocess.Popen] = []

    def start(n: int, spec: str, *args: str) -> list[subprocess.Popen]:
        new = [jobqueue_cmd("--log-level", "WARNING", "worker", "--queue", spec,
                            "--import", "tests.support.worker_tasks", "--poll-seconds", "1",
                            *args, url=db_url, stderr=subprocess.DEVNULL) for _ in range(n)]
        started.extend(new)
        return new

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def registered(conn, n: int) -> bool:
    return conn.execute("SELECT count(*) FROM jobqueue.workers").fetchone()[0] >= n


class TestCapsAcrossProcesses:
    def test_four_processes_never_pass_the_caps(self, db_url, client, workers):
        """4 processes x 10 slots on a queue capped at 6 running, 2 per owner; 4 owners with
        short jobs. A sampler counts running rows every 10 ms until the queue is empty: the
        total and each owner stay within the caps (and reach them), and every job succeeds."""
        with client.pool.connection() as conn:
            queue_settings.change(conn, "capped", max_running=6, max_running_per_owner=2)
        ids = client.enqueue_many([
            JobSpec(kind="nap", queue="capped", owner=f"o{i % 4}", payload={"seconds": 0.02})
            for i in range(400)])
        workers(4, "capped:10")
        peak_total = peak_owner = samples = 0
        with psycopg.connect(db_url, autocommit=True) as conn:
            deadline = time.monotonic() + 120
            while conn.execute("SELECT EXISTS (SELECT 1 FROM jobqueue.jobs)").fetchone()[0]:
                rows = conn.execute(
                    "SELECT owner, count(*) FROM jobqueue.jobs WHERE lease_owner IS NOT NULL "
                    "GROUP BY owner").fetchall()
                peak_total = max(peak_total, sum(n for _, n in rows))
                peak_owner = max([peak_owner] + [n for _, n in rows])
                samples += 1
                assert time.monotonic() < deadline, "the capped queue did not drain"
                time.sleep(0.01)
            workers_seen = conn.execute(
                "SELECT count(DISTINCT lease_owner) FROM jobqueue.jobs").fetchone()[0]
        assert samples > 50 and workers_seen == 0
        assert (peak_total, peak_owner) == (6, 2)
        assert {j.state for j in map(client.get, ids)} == {"succeeded"}


class TestFairnessAcrossProcesses:
    def test_a_small_owner_is_not_held_up_by_a_big_backlog(self, db_url, client, workers):
        """A enqueues 10,000 jobs of 50 ms, then B enqueues 10; 2 processes x 20 slots. B's 10
        all finish within 1 s of being enqueued (first come, first served: ~12.5 s)."""
        with client.pool.connection() as conn:
            queue_settings.change(conn, "fair", fair=True)
        with psycopg.connect(db_url, autocommit=True) as conn:
            workers(2, "fair:20")
            wait_until(lambda: registered(conn, 2), timeout=30)
            client.enqueue_many([JobSpec(kind="nap", queue="fair", owner="A",
                                         payload={"seconds": 0.05}) for _ in range(10_000)])
            wait_until(lambda: conn.execute(
                "SELECT count(*) FROM jobqueue.finished WHERE owner = 'A'").fetchone()[0] >= 200,
                timeout=30)  # A's backlog is being worked
            b_ids = client.enqueue_many([JobSpec(kind="nap", queue="fair", owner="B",
                                                 payload={"seconds": 0.05}) for _ in range(10)])
            wait_until(lambda: conn.execute(
                "SELECT count(*) FROM jobqueue.finished WHERE id = ANY(%s)",
                (b_ids,)).fetchone()[0] == 10, timeout=30)
            span, a_left = conn.execute(
                "SELECT extract(epoch FROM max(finished_at) - min(created_at)), "
                "       (SELECT count(*) FROM jobqueue.jobs WHERE owner = 'A') "
                "FROM jobqueue.finished WHERE id = ANY(%s)", (b_ids,)).fetchone()
        assert a_left > 5000, "A's backlog should still be there when B is done"
        assert span < 1.0, f"B's jobs took {span:.2f}s from enqueue to the last finish"
