"""`jobqueue bench`: the queue's own speed on the configured database.

Batch enqueue, a drain by worker processes, and pickup latency into idle workers, all in a
queue of its own that is removed afterwards. scripts/bench_queue.py runs the same workloads
against procrastinate and pgqueuer for comparison.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
import uuid

import click

from jobqueue.cli.common import database_url, print_json
from jobqueue.client import Client
from jobqueue.db import store
from jobqueue.jobs import HOT_STATES


def run(url: str, jobs: int, processes: int, probes: int, rate: float) -> dict:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    env = os.environ | {"DATABASE_URL": url}
    with Client(url) as jq:
        started = time.perf_counter()
        jq.enqueue_payloads("noop", [{}] * jobs, queue=queue)
        enqueue_rate = jobs / (time.perf_counter() - started)
        click.echo(f"enqueue: {jobs} jobs at {enqueue_rate:,.0f} jobs/s")

        workers = [subprocess.Popen(
            [sys.executable, "-m", "jobqueue", "--log-level", "WARNING", "worker", "--queue",
             queue, "--concurrency", "1000", "--claim-batch", "500"], env=env)
            for _ in range(processes)]
        try:
            started = time.perf_counter()
            while _unfinished(jq, queue):
                time.sleep(0.01)
            drain_rate = jobs / (time.perf_counter() - started)
            click.echo(f"drain: {processes} processes at {drain_rate:,.0f} jobs/s "
                       "(process start included)")
            ids = []
            for _ in range(probes):
                ids.append(jq.enqueue("latency_probe", {"t": time.time()}, queue=queue))
                time.sleep(1 / rate)
            while _unfinished(jq, queue):
                time.sleep(0.05)
            latencies = sorted(jq.get(i).result["latency_ms"] for i in ids)
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(30)
            with jq.pool.connection() as conn:
                store.purge_queue(conn, queue)
    pct = statistics.quantiles(latencies, n=100, method="inclusive")
    result = {"enqueue_jobs_per_s": enqueue_rate, "drain_jobs_per_s": drain_rate,
              "pickup_p50_ms": pct[49], "pickup_p95_ms": pct[94], "pickup_p99_ms": pct[98],
              "pickup_max_ms": latencies[-1]}
    click.echo(f"pickup: p50 {pct[49]:.2f} ms, p95 {pct[94]:.2f} ms, p99 {pct[98]:.2f} ms, "
               f"max {latencies[-1]:.2f} ms ({probes} single enqueues at {rate:g}/s)")
    return result


def _unfinished(jq: Client, queue: str) -> int:
    row = next((r for r in jq.status() if r["queue"] == queue), None)
    return 0 if row is None else sum(row[state] for state in HOT_STATES)


@click.command("bench")
@click.option("--jobs", type=click.IntRange(100), default=20000)
@click.option("--processes", type=click.IntRange(1, 32), default=2)
@click.option("--probes", type=click.IntRange(10), default=200)
@click.option("--rate", type=click.FloatRange(1, 1000), default=50.0)
@click.option("--json", "as_json", is_flag=True)
def bench_command(jobs, processes, probes, rate, as_json) -> None:
    """Measure enqueue, drain and pickup latency here (scripts/bench_queue.py compares peers)."""
    result = run(database_url(), jobs, processes, probes, rate)
    if as_json:
        print_json(result)

