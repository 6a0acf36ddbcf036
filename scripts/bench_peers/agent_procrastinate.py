"""procrastinate's side of scripts/bench_queue.py (runs in the peers' venv).

Worker: `procrastinate --app agent_procrastinate.app worker --queues bench ...` with this
folder on PYTHONPATH and BENCH_DB_URL set. Agent: `cli(["setup"])`, `cli(["enqueue", N])`,
`cli(["enqueue-io", N, SECONDS])`, `cli(["latency", N, RATE, WORKERS])` (run through
`python -c` so that the app is not defined in __main__), one JSON line out.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import bench_record
import procrastinate

QUEUE = "bench"
POOL_MAX = int(os.environ.get("BENCH_PROCRASTINATE_POOL", "10"))

app = procrastinate.App(connector=procrastinate.PsycopgConnector(
    conninfo=os.environ.get("BENCH_DB_URL", ""), min_size=min(4, POOL_MAX),
    max_size=POOL_MAX))


@app.task(name="bench_noop", queue=QUEUE)
async def bench_noop():
    bench_record.drain_job()


@app.task(name="bench_io", queue=QUEUE)
async def bench_io(sec):
    await bench_record.io_job(sec)


@app.task(name="bench_latency", queue=QUEUE)
async def bench_latency(t, seq):
    now = time.time()
    bench_record.latency_job(now, t, seq)


async def main(argv: list[str]) -> dict:
    command, *rest = argv
    async with app.open_async():
        if command == "setup":
            await app.schema_manager.apply_schema_async()
            return {"ok": True}
        async with app.connector.pool.connection():  # the pool is connected before timing
            pass
        if command == "enqueue":
            n = int(rest[0])
            started = time.perf_counter()
            ids = await bench_noop.batch_defer_async(*[{} for _ in range(n)])
            seconds = time.perf_counter() - started
            return {"count": len(ids), "seconds": seconds}
        if command == "enqueue-io":
            n, sec = int(rest[0]), float(rest[1])
            at, started = time.time(), time.perf_counter()
            ids = await bench_io.batch_defer_async(*[{"sec": sec} for _ in range(n)])
            return {"count": len(ids), "seconds": time.perf_counter() - started, "at": at}
        if command == "latency":
            n, rate, workers = int(rest[0]), float(rest[1]), int(rest[2])

            async def enqueue(t: float, seq: int) -> None:
                await bench_latency.defer_async(t=t, seq=seq)

            return await bench_record.produce_latency_jobs(enqueue, n, rate, workers)
    raise SystemExit(f"unknown command {command!r}")


def cli(argv: list[str]) -> None:
    print(json.dumps(asyncio.run(main(argv))))


if __name__ == "__main__":
    cli(sys.argv[1:])
