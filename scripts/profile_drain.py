#!/usr/bin/env python
"""Where a drain's CPU goes: one worker, in this process, on no-op jobs (or a little real work).

    python scripts/profile_drain.py                     # 100,000 jobs, CPU split
    python scripts/profile_drain.py --cprofile 25       # and the 25 costliest functions
    python scripts/profile_drain.py --handler real --concurrency 1000 --claim-batch 500
    py-spy record -o drain.svg -- python scripts/profile_drain.py --handler real

Enqueues --jobs jobs in a fresh database and runs one Worker in this process (its
garbage collector tuned as `jobqueue worker` tunes it) until they are all finished.
--handler noop: the handler does nothing ({} payloads). --handler real: bench_queue.py's "real"
phase: the payload is {"i": n, "t": <enqueue time>, "s": <--payload-chars chars>} and the
handler appends "<i> <t> <s>" to a file with one os.write (opened once, O_APPEND; the file is
in a temporary directory, removed afterwards). Prints
the wall time and the CPU per job spent by this process (the worker) and by every Postgres
process together (read from /proc, so Postgres must run on this machine). The benchmark
(scripts/bench_queue.py) gives the figures to compare with peers; this script says which side
of the connection to work on, in CPU, which varies less than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from jobqueue import Client, Worker, WorkerConfig, task

try:  # not public names: jobqueue is being split into sub-packages
    from jobqueue import logs
except ImportError:
    logs = None
try:
    from jobqueue.worker import tune_gc
except ImportError:
    def tune_gc() -> None:
        """What `jobqueue worker` does to the collector (jobqueue.worker.tune_gc)."""
        gc.freeze()
        _, middle, old = gc.get_threshold()
        gc.set_threshold(10_000, middle, old)

TICKS = os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> dict[int, float]:
    """User + system CPU of every live process named postgres, by pid. Compare two with
    cpu_delta: a backend that exits in between (the enqueueing client's, closing as the run
    starts) is left out, not subtracted, as a plain sum did."""
    total = {}
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit():
            continue
        try:
            if (pid / "comm").read_text().strip() != "postgres":
                continue
            fields = (pid / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total[int(pid.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return total


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(c - before.get(pid, 0.0) for pid, c in after.items())


def backend_cpu(url: str, names: dict[int, str] | None = None) -> dict[int, float]:
    """CPU seconds of each Postgres backend connected to the profiled database (the worker's
    connections), but the one asking: what the worker costs Postgres, without the machine's
    other users of the same server. `names` gets each backend's last statement (its role)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()").fetchall()
    if names is not None:
        names.update({pid: " ".join(query.split())[:50] for pid, query in rows})
    got = {}
    for pid, _ in rows:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        got[pid] = (int(fields[11]) + int(fields[12])) / TICKS
    return got


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=100000)
    p.add_argument("--handler", choices=("noop", "real"), default="noop")
    p.add_argument("--payload-chars", type=int, default=100,
                   help="--handler real: length of the payload's string s")
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
    p.add_argument("--no-gc", action="store_true",
                   help="disable the cyclic garbage collector (what it costs, at most)")
    p.add_argument("--uvloop", action="store_true",
                   help="run the worker on uvloop (pip install uvloop) instead of asyncio's "
                        "default loop")
    args = p.parse_args()
    if logs is not None:
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
            if args.handler == "real":
                now = time.time()
                s = ("abcdefghij" * (args.payload_chars // 10 + 1))[:args.payload_chars]
                payloads = [{"i": i, "t": now, "s": s} for i in range(args.jobs)]
            else:
                payloads = [{}] * args.jobs
            jq.enqueue_payloads(f"profile_{args.handler}", payloads, queue="profile")
            with jq.pool.connection() as conn:
                conn.execute("ANALYZE jobqueue.jobs")
        run(url, args)
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def run(url: str, args: argparse.Namespace) -> None:
    out = tempfile.TemporaryDirectory(prefix="profile_drain_")
    fd = os.open(os.path.join(out.name, "real.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    @task("profile_noop")
    async def noop(payload):
        pass

    @task("profile_real")
    async def real(payload):  # = bench_queue.py's real phase (bench_record.real_job)
        os.write(fd, f"{payload['i']} {payload['t']!r} {payload['s']}\n".encode())

    worker = Worker(url, WorkerConfig(queue="profile", concurrency=args.concurrency,
                                      claim_batch=args.claim_batch))
    marks: dict[str, Any] = {}
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}
    names: dict[int, str] = {}

    async def watch() -> None:
        # The worker's own count, not a query: polling the table would add Postgres CPU.
        while worker.finished < args.jobs:
            await asyncio.sleep(0.002)
        marks.update(wall=time.perf_counter(), me=self_cpu_seconds(),
                     pg=postgres_cpu_seconds())
        ends.update(backend_cpu(url, names))  # synchronous: the worker has nothing left
        worker.stop()

    async def started() -> None:
        # The worker's backends exist once it claimed (the first jobs are still running).
        while worker.claim_rounds == 0:
            await asyncio.sleep(0.0005)
        starts.update(await asyncio.to_thread(backend_cpu, url))

    async def go() -> None:
        first = asyncio.create_task(started())
        watcher = asyncio.create_task(watch())
        await worker.run()
        await watcher
        await first

    if not args.default_gc:
        tune_gc()
    if args.no_gc:
        gc.disable()
    runner = asyncio.run
    if args.uvloop:
        import uvloop

        runner = uvloop.run
    profiler = cProfile.Profile() if args.cprofile else None
    start_wall, start_me, start_pg = time.perf_counter(), self_cpu_seconds(), \
        postgres_cpu_seconds()
    if profiler:
        profiler.enable()
    runner(go())
    if profiler:
        profiler.disable()
    os.close(fd)
    out.cleanup()
    n = args.jobs
    wall = marks["wall"] - start_wall
    print(f"{n:,} {args.handler} jobs in {wall:.3f} s = {n / wall:,.0f} jobs/s (one worker, "
          f"concurrency {args.concurrency}, claim batch {args.claim_batch}; "
          f"{worker.claim_rounds} claims; Python {sys.version.split()[0]}"
          + (", uvloop" if args.uvloop else "") + (", no GC" if args.no_gc else "") + ")")
    print(f"worker CPU   {(marks['me'] - start_me) / n * 1e6:6.1f} µs/job "
          f"(a watcher task wakes every 2 ms)")
    own = cpu_delta(starts, ends)
    print(f"Postgres CPU {own / n * 1e6:6.1f} µs/job (the worker's backends, from its first "
          "claim)")
    for pid, c in sorted(ends.items(), key=lambda kv: starts.get(kv[0], 0.0) - kv[1]):
        print(f"  backend {pid}: {(c - starts.get(pid, 0.0)) / n * 1e6:6.1f} µs/job, last "
              f"statement: {names.get(pid, '?')}")
    print(f"  all postgres processes {cpu_delta(start_pg, marks['pg']) / n * 1e6:6.1f} µs/job (WAL "
          "writer, checkpointer... and whoever else uses this server)")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.cprofile)


if __name__ == "__main__":
    main()
