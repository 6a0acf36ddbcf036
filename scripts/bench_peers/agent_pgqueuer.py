"""pgqueuer's side of scripts/bench_queue.py (runs in the peers' venv).

Worker: `python agent_pgqueuer.py worker BATCH_SIZE [MAX_CONCURRENT_TASKS]` with BENCH_DB_URL
set: what `pgq run agent_pgqueuer:create --batch-size N [--max-concurrent-tasks M]` does
(pgqueuer.run() on uvloop), without the CLI, whose option parsing fails with typer 0.29
("'str' object has no attribute 'name'"). One asyncpg connection per worker, as pgqueuer's
performance guide recommends for the QueueManager. Agent: `python agent_pgqueuer.py COMMAND
...` (enqueue N | enqueue-io N SECONDS | enqueue-real N SIZE | latency N RATE WORKERS), one
JSON line out; the schema is installed with `pgq install`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time

import asyncpg
import bench_record
import pgqueuer
import uvloop
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries

URL = os.environ.get("BENCH_DB_URL", "")


@contextlib.asynccontextmanager
async def create():
    conn = await asyncpg.connect(URL)
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("bench_noop")
    async def bench_noop(job: Job) -> None:
        bench_record.drain_job()

    @pgq.entrypoint("bench_io")
    async def bench_io(job: Job) -> None:
        await bench_record.io_job(json.loads(job.payload)["sec"])

    @pgq.entrypoint("bench_real")
    async def bench_real(job: Job) -> None:
        bench_record.drain_job()
        data = json.loads(job.payload)
        bench_record.real_job(data["i"], data["t"], data["s"])

    @pgq.entrypoint("bench_latency")
    async def bench_latency(job: Job) -> None:
        now = time.time()
        data = json.loads(job.payload)
        bench_record.latency_job(now, data["t"], data["seq"])

    try:
        yield pgq
    finally:
        await conn.close()


async def main(argv: list[str]) -> dict:
    command, *rest = argv
    conn = await asyncpg.connect(URL)
    try:
        queries = Queries(AsyncpgDriver(conn))
        if command == "enqueue":
            n = int(rest[0])
            started = time.perf_counter()
            ids = await queries.enqueue(["bench_noop"] * n, [None] * n, [0] * n)
            seconds = time.perf_counter() - started
            return {"count": len(ids), "seconds": seconds}
        if command in ("enqueue-io", "enqueue-real"):
            n, arg = int(rest[0]), float(rest[1])
            now = time.time()
            if command == "enqueue-io":
                kind, payloads = "bench_io", [json.dumps({"sec": arg}).encode()] * n
            else:
                kind = "bench_real"
                payloads = [json.dumps(bench_record.real_payload(i, now, int(arg))).encode()
                            for i in range(n)]
            at, started = time.time(), time.perf_counter()
            ids = await queries.enqueue([kind] * n, payloads, [0] * n)
            return {"count": len(ids), "seconds": time.perf_counter() - started, "at": at}
        if command == "latency":
            n, rate, workers = int(rest[0]), float(rest[1]), int(rest[2])

            async def enqueue(t: float, seq: int) -> None:
                await queries.enqueue("bench_latency", json.dumps({"t": t, "seq": seq}).encode())

            return await bench_record.produce_latency_jobs(enqueue, n, rate, workers)
    finally:
        await conn.close()
    raise SystemExit(f"unknown command {command!r}")


def worker(batch_size: int, max_concurrent_tasks: int | None = None) -> None:
    uvloop.run(pgqueuer.run(create, batch_size=batch_size,
                            max_concurrent_tasks=max_concurrent_tasks))


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(*(int(a) for a in sys.argv[2:4]))
    else:
        print(json.dumps(asyncio.run(main(sys.argv[1:]))))
