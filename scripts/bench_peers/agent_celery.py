"""Celery's side of scripts/bench_queue.py (runs in the peers' venv): the I/O-bound phase only.

Broker: Redis at $BENCH_REDIS_URL (a database number of its own, flushed by the orchestrator
before and after), no result backend (task_ignore_result: jobqueue's outcome rows have no
counterpart the benchmark would read). Celery has no asyncio tasks, so the task runs the same
async handler as the other systems (bench_record.io_job) on an event loop of its worker thread.

Worker: `celery -A agent_celery worker --pool threads --concurrency 50 -Q bench
--without-gossip --without-mingle --without-heartbeat` with this folder on PYTHONPATH.
Why the threads pool: Celery's documented pools are prefork (one process per slot: 50
processes per worker for 50 concurrent sleeps, not comparable), solo (one at a time),
eventlet/gevent (monkey-patched green threads: they can only wait concurrently in code the
patch reaches, not on an asyncio loop) and threads (a ThreadPoolExecutor, 50 OS threads that
each block in their own job). For an async handler the threads pool is the one that runs 50 of
them at once without monkey-patching; each thread keeps one asyncio.Runner, so a job costs no
new event loop. gossip/mingle/heartbeat are cluster chatter a one-queue benchmark does not
need (mingle alone waits for other workers' replies at start-up). Prefetch is Celery's default
(worker_prefetch_multiplier 4: 200 messages reserved per process), acks early (the default).

Each job INCRs `bench:done` in the broker's database after its handler returned: that is how
the orchestrator sees the queue drained (Celery keeps no table of unfinished jobs).

Agent: `python agent_celery.py enqueue-io N SECONDS` sends N jobs (apply_async one by one:
Celery has no batch enqueue), one JSON line out.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time

import bench_record
import redis
from celery import Celery

QUEUE = "bench"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
DONE_KEY = "bench:done"

app = Celery("bench", broker=REDIS_URL)
app.conf.update(task_ignore_result=True, task_default_queue=QUEUE,
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)

_local = threading.local()
_counter = redis.Redis.from_url(REDIS_URL)


def _runner() -> asyncio.Runner:
    runner = getattr(_local, "runner", None)
    if runner is None:
        runner = _local.runner = asyncio.Runner()
    return runner


@app.task(name="bench_io")
def bench_io(sec: float) -> None:
    _runner().run(bench_record.io_job(sec))
    _counter.incr(DONE_KEY)


def main(argv: list[str]) -> dict:
    command, *rest = argv
    if command == "enqueue-io":
        n, sec = int(rest[0]), float(rest[1])
        with app.connection_for_write() as conn:
            conn.ensure_connection()  # connected before the clock starts
            at, started = time.time(), time.perf_counter()
            with app.producer_or_acquire() as producer:
                for _ in range(n):
                    bench_io.apply_async((sec,), producer=producer)
            seconds = time.perf_counter() - started
        return {"count": n, "seconds": seconds, "at": at}
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
