"""jobqueue's side of scripts/bench_queue.py: the bench tasks, and the agent commands.

Workers load the tasks with `--import scripts.bench_tasks` (run from the repo root). The
orchestrator runs the agent as `python -m scripts.bench_tasks COMMAND ...` with BENCH_DB_URL
set:
    setup                      create the schema
    enqueue N                  enqueue N no-op jobs with one enqueue_payloads call
    enqueue-io N SECONDS       N bench_io jobs (each sleeps SECONDS), one call
    enqueue-real N SIZE        N bench_real jobs ({"i", "t", "s"}, `s` SIZE chars), one call
    latency N RATE WORKERS     warm up, then N single enqueues at RATE per second
Each command prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from jobqueue import task

try:  # a baseline checkout (bench_queue.py --jobqueue-baseline) puts bench_peers on the path,
    import bench_record  # so that this copy is used, not the baseline's own
except ImportError:
    from scripts.bench_peers import bench_record

QUEUE = "bench"


@task("bench_noop")
async def bench_noop(payload):
    bench_record.drain_job()


@task("bench_io")
async def bench_io(payload):
    await bench_record.io_job(payload["sec"])


@task("bench_real")
async def bench_real(payload):
    bench_record.drain_job()
    bench_record.real_job(payload["i"], payload["t"], payload["s"])


@task("bench_latency")
async def bench_latency(payload):
    now = time.time()
    bench_record.latency_job(now, payload["t"], payload["seq"])


def main(argv: list[str]) -> dict:
    from jobqueue import Client

    command, *rest = argv
    with Client(os.environ["BENCH_DB_URL"]) as jq:
        jq.pool.wait()  # connected before anything is timed, as on the peers' side
        if command == "setup":
            jq.migrate()
            return {"ok": True}
        if command == "enqueue":
            n = int(rest[0])
            started = time.perf_counter()
            ids = jq.enqueue_payloads("bench_noop", [{}] * n, queue=QUEUE)
            seconds = time.perf_counter() - started
            return {"count": len(ids), "seconds": seconds}
        if command in ("enqueue-io", "enqueue-real"):
            n, arg = int(rest[0]), float(rest[1])
            now = time.time()
            if command == "enqueue-io":
                payloads = [{"sec": arg}] * n
                kind = "bench_io"
            else:
                payloads = [bench_record.real_payload(i, now, int(arg)) for i in range(n)]
                kind = "bench_real"
            at, started = time.time(), time.perf_counter()
            ids = jq.enqueue_payloads(kind, payloads, queue=QUEUE)
            return {"count": len(ids), "seconds": time.perf_counter() - started, "at": at}
        if command == "latency":
            n, rate, workers = int(rest[0]), float(rest[1]), int(rest[2])

            async def enqueue(t: float, seq: int) -> None:
                jq.enqueue("bench_latency", {"t": t, "seq": seq}, queue=QUEUE)

            return asyncio.run(bench_record.produce_latency_jobs(enqueue, n, rate, workers))
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
