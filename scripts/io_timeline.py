#!/usr/bin/env python
"""Where an I/O-bound drain's time goes, job by job: bench_queue.py's io phase, traced.

    python scripts/io_timeline.py                      # 2,000 x sleep(0.1), 2 x 50, --prefetch 50
    python scripts/io_timeline.py --repeat 5 -- --concurrency 50 --claim-batch 50

bench_queue.py reports one figure for the io phase: jobs / (queue empty - the first handler
call of either process). This script runs the same workload (2 `jobqueue worker` processes,
jobs that each `await asyncio.sleep(0.1)`) with a handler that also appends its own start and
end times to a per-process file, and splits that figure into its parts:
- start skew: how much later the second process ran its first job (the two processes are
  spawned together; importing and connecting take ~0.2-0.4 s, and on a busy machine one may
  get the CPU later). No job can make it up: every concurrency slot runs the same number of
  jobs back to back, so the last process to start is the last to finish;
- each process's own rate: its jobs / (its last handler end - its first handler start), as a
  share of its ideal (concurrency / seconds): what the worker achieves once it runs;
- the handler's sleep as measured around it (asyncio's timers overshoot: the "asyncio alone"
  row of bench_queue.py);
- the gap between a job's end and the start of the job that takes its slot (the worker's part);
- the tail: last handler end -> queue empty as the orchestrator sees it (the last outcome's
  write and the 5 ms poll).
Trailing arguments after `--` replace the worker options. Uses DATABASE_URL (default the local
server) and a database of its own, `io_timeline`, dropped and created on every repetition.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobqueue import task

QUEUE = "io_timeline"
_trace_fd: int | None = None


@task("io_timeline_sleep")
async def traced_sleep(payload):
    """The io phase's job, with its start and end appended to this process's trace file."""
    global _trace_fd
    started = time.time()
    await asyncio.sleep(payload["sec"])
    ended = time.time()
    if _trace_fd is None:
        path = os.path.join(os.environ["IO_TIMELINE_DIR"], f"trace-{os.getpid()}.txt")
        _trace_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(_trace_fd, f"{started!r} {ended!r}\n".encode())


def run_once(args, worker_options: list[str]) -> dict:
    import psycopg
    from psycopg.conninfo import make_conninfo

    from jobqueue import Client

    admin = make_conninfo(args.database_url, dbname="postgres")
    url = make_conninfo(args.database_url, dbname="io_timeline")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS io_timeline WITH (FORCE)")
        conn.execute("CREATE DATABASE io_timeline")
    with Client(url) as jq:
        jq.migrate()
        jq.enqueue_payloads("io_timeline_sleep", [{"sec": args.seconds}] * args.jobs,
                            queue=QUEUE)
    trace_dir = Path(tempfile.mkdtemp(prefix="io-timeline-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env |= {"DATABASE_URL": url, "IO_TIMELINE_DIR": str(trace_dir),
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                           env.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "jobqueue", "--log-level", "WARNING", "worker", "--queue",
           QUEUE, "--import", "io_timeline", *worker_options]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
        pending = "SELECT EXISTS (SELECT 1 FROM jobqueue.jobs)"
        conn.execute(pending)
        spawned = time.time()
        workers = [subprocess.Popen(cmd, env=env) for _ in range(args.processes)]
        try:
            while conn.execute(pending).fetchone()[0]:
                time.sleep(0.005)
            emptied = time.time()
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(30)
    traces = [[tuple(map(float, line.split())) for line in path.read_text().splitlines()]
              for path in sorted(trace_dir.glob("trace-*.txt"))]
    for path in trace_dir.iterdir():
        path.unlink()
    trace_dir.rmdir()
    return analyse(args, worker_options, traces, spawned, emptied)


def analyse(args, worker_options, traces, spawned, emptied) -> dict:
    concurrency = int(_option(worker_options, "--concurrency", "1"))
    first = min(start for trace in traces for start, _ in trace)
    last_end = max(end for trace in traces for _, end in trace)
    firsts = sorted(min(start for start, _ in trace) for trace in traces)
    out = {"jobs": sum(len(t) for t in traces), "spawn_to_first": first - spawned,
           "after_first": args.jobs / (emptied - first),
           "ideal": args.processes * concurrency / args.seconds,
           "skew": firsts[-1] - firsts[0], "tail": emptied - last_end, "processes": []}
    for trace in traces:
        starts = sorted(s for s, _ in trace)
        ends = sorted(e for _, e in trace)
        # The slot a job takes is the one freed by the (i - concurrency)-th end: FIFO.
        gaps = [starts[i] - ends[i - concurrency] for i in range(concurrency, len(starts))]
        own_rate = len(trace) / (ends[-1] - starts[0])
        out["processes"].append({
            "jobs": len(trace), "first": starts[0] - first, "last_end": ends[-1] - first,
            "own_share": own_rate / (concurrency / args.seconds),
            "sleep_p50": statistics.median(e - s for s, e in trace),
            "gap_p50": statistics.median(gaps) if gaps else 0.0,
            "gap_p99": sorted(gaps)[int(0.99 * (len(gaps) - 1))] if gaps else 0.0})
    return out


def _option(options: list[str], name: str, default: str) -> str:
    return options[options.index(name) + 1] if name in options else default


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    worker_options = ["--concurrency", "50", "--claim-batch", "50", "--prefetch", "50"]
    if "--" in argv:
        at = argv.index("--")
        argv, worker_options = argv[:at], argv[at + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=0.1, help="each job's asyncio.sleep")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--database-url", default=os.environ.get(
        "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = p.parse_args(argv)
    print(f"# io timeline: {args.jobs:,} jobs x asyncio.sleep({args.seconds}), "
          f"{args.processes} processes, worker options {' '.join(worker_options)}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{os.getloadavg()[0]:.2f}")
    print("| run | after first job, % of ideal | start skew ms | tail ms | per process: "
          "jobs, own % of ideal, first job ms, last end ms, sleep p50 ms, slot gap p50/p99 "
          "ms |")
    print("|--:|--:|--:|--:|---|")
    for rep in range(1, args.repeat + 1):
        r = run_once(args, worker_options)
        procs = "; ".join(
            f"{p['jobs']}, {p['own_share']:.1%}, +{p['first'] * 1000:.1f}, "
            f"{p['last_end'] * 1000:.0f}, "
            f"{p['sleep_p50'] * 1000:.2f}, {p['gap_p50'] * 1000:.2f}/{p['gap_p99'] * 1000:.2f}"
            for p in r["processes"])
        print(f"| {rep} | {r['after_first'] / r['ideal']:.1%} | {r['skew'] * 1000:.1f} | "
              f"{r['tail'] * 1000:.1f} | {procs} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
