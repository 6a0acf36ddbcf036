#!/usr/bin/env python
"""Where a drain's CPU goes: one worker, in this process, on no-op jobs.

    python scripts/profile_drain.py                     # 100,000 jobs, CPU split
    python scripts/profile_drain.py --cprofile 25       # and the 25 costliest functions

Enqueues --jobs no-op jobs in a fresh database and runs one Worker in this process (its
garbage collector tuned as `jobqueue worker` tunes it) until they are all finished. Prints
the wall time and the CPU per job spent by this process (the worker) and by every Postgres
process together (read from /proc, so Postgres must run on this machine). The benchmark
(scripts/bench_queue.py) gives the figures to compare with peers; this script says which side
of the connection to work on, in CPU, which varies less than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import resource
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from jobqueue import Client, logs
from jobqueue.tasks import Registry
from jobqueue.worker import Worker, WorkerConfig, tune_gc

TICKS = os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """User + system CPU of every process named postgres (live ones; backends that exit
    during the run are not counted, and the worker's stay up until it stops)."""
    total = 0
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit():
            continue
        try:
            if (pid / "comm").read_text().strip() != "postgres":
                continue
            fields = (pid / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=100000)
    p.add_argument("--concurrency", type=int, default=2000)
    p.add_argument("--claim-batch", type=int, default=1000)
    p.add_argument("--database-url", default=os.environ.get(
        "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--cprofile", type=int, default=0, metavar="N",
                   help="profile the worker and print its N costliest functions")
    p.add_argument("--try-sql", action="append", default=[], metavar="STATEMENT",
                   help="run after migrating, before the enqueue (to try a schema change)")
    p.add_argument("--default-gc", action="store_true",
                   help="leave the garbage collector as Python sets it (run_worker tunes it)")
    args = p.parse_args()
    logs.configure("WARNING")

    name = f"profile_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(args.database_url, dbname=name)
    try:
        with Client(url) as jq:
            jq.migrate()
            with jq.pool.connection() as conn:
                for statement in args.try_sql:
                    conn.execute(statement)
            jq.enqueue_payloads("noop", [{}] * args.jobs, queue="profile")
            with jq.pool.connection() as conn:
                conn.execute("ANALYZE jobqueue.jobs")
        run(url, args)
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def run(url: str, args: argparse.Namespace) -> None:
    tasks = Registry()

    async def noop(payload):
        pass

    tasks.register("noop", noop)
    worker = Worker(url, WorkerConfig(queue="profile", concurrency=args.concurrency,
                                      claim_batch=args.claim_batch), tasks=tasks)
    marks: dict[str, float] = {}

    async def watch() -> None:
        # The worker's own count, not a query: polling the table would add Postgres CPU.
        while worker.finished < args.jobs:
            await asyncio.sleep(0.002)
        marks.update(wall=time.perf_counter(), me=self_cpu_seconds(),
                     pg=postgres_cpu_seconds())
        worker.stop()

    async def go() -> None:
        watcher = asyncio.create_task(watch())
        await worker.run()
        await watcher

    if not args.default_gc:
        tune_gc()
    profiler = cProfile.Profile() if args.cprofile else None
    start_wall, start_me, start_pg = time.perf_counter(), self_cpu_seconds(), \
        postgres_cpu_seconds()
    if profiler:
        profiler.enable()
    asyncio.run(go())
    if profiler:
        profiler.disable()
    n = args.jobs
    wall = marks["wall"] - start_wall
    print(f"{n:,} jobs in {wall:.3f} s = {n / wall:,.0f} jobs/s (one worker, "
          f"concurrency {args.concurrency}, claim batch {args.claim_batch}; "
          f"{worker.claim_rounds} claims)")
    print(f"worker CPU   {(marks['me'] - start_me) / n * 1e6:6.1f} µs/job "
          f"(a watcher task wakes every 2 ms)")
    print(f"Postgres CPU {(marks['pg'] - start_pg) / n * 1e6:6.1f} µs/job")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.cprofile)


if __name__ == "__main__":
    main()
