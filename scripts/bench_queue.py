#!/usr/bin/env python
"""Benchmark jobqueue against procrastinate, pgqueuer and Celery on one Postgres server.

    python scripts/bench_queue.py            # full size: enqueue, drain, latency
    /tmp/venv/bin/python scripts/bench_queue.py --jobs 2000 --latency-jobs 100   # quick look
    python scripts/bench_queue.py --phases io --repeat 3        # I/O-bound, with Celery
    python scripts/bench_queue.py --phases real --only jobqueue,pgqueuer --repeat 3
    git worktree add /tmp/jq-base main && python scripts/bench_queue.py \
        --jobqueue-baseline /tmp/jq-base --only jobqueue,jobqueue@base   # before/after

Three workloads per system by default (--phases enqueue,drain,latency), each system in its own
freshly created database; two more on request (io, real: below):
(a) batch enqueue: N no-op jobs with the system's fastest documented batch API, in one call
    (jobqueue `Client.enqueue_payloads`, procrastinate `Task.batch_defer_async`,
    pgqueuer `Queries.enqueue` with lists: one kind, one payload per job; until 2026-11-28
    jobqueue's agent built a `JobSpec` per job for `Client.enqueue_many`). Timed inside the
    agent process around that one call (the arguments built inside the timing), the
    connection already open.
(b) drain: those N jobs, by 2 worker processes of the system started after the enqueue.
    "drain jobs/s" = N / (queue empty - workers spawned): process start, imports and
    connecting included, nothing subtracted. The queue counts as empty when no job is left
    unfinished in the system's own tables (outcomes written), polled every --poll-ms (5 ms:
    a drain of 20,000 jobs takes 0.2-0.6 s after start-up, and a 25 ms poll, as used until
    2026-11-28, added up to 12% to the fastest system's time: jobqueue/pgqueuer steady came
    out 2.8x at 25 ms and 3.2x at 5 ms, same code, minutes apart).
    "worker start s" is spawn -> first handler call (the earliest of both processes), and
    "after first job" = N / (queue empty - first handler call): the steady drain rate.
    ANALYZE runs after the enqueue for every system (as autovacuum would in production).
    Every timed enqueue and drain starts right after a CHECKPOINT (see checkpoint()).
(c) pickup latency: 2 idle worker processes; warm-up single enqueues until both processes
    have run a job (at least 20), then --latency-jobs single enqueues at --rate per second on a
    fixed schedule. Latency = handler's first-line time.time() - time.time() taken just before
    the enqueue call (carried in the payload); the handler appends it to a per-process file,
    so no result storage or extra SQL is on the measured path. VACUUM ANALYZE and CHECKPOINT
    run first (then 1 s of quiet), so the drain's leftovers are not written meanwhile. The
    table also splits the latency's p50: the enqueue call alone (its return minus the same start
    time), and the time after it returned (latency - call, per job: the notification, the
    claim and the dispatch to the handler; it can be < 0, as NOTIFY goes out at commit).
(d) io, I/O-bound: --io-jobs (2,000) jobs that each `await asyncio.sleep(--io-seconds)` (0.1)
    and nothing else, enqueued in one call (Celery: one apply_async per job), drained by 2
    worker processes that each run --io-concurrency (50) jobs at a time: ideal 2 x 50 / 0.1 s
    = 1,000 jobs/s. Rates and "% of ideal" from spawn and after the first job, as in (b). A
    reference row, "asyncio alone", runs the same sleeps with no queue (2 processes, rounds
    of 50 asyncio.gather'ed sleeps): asyncio.sleep(0.1) itself overshoots by 1-2 ms on this
    machine, so about 98% of ideal is the ceiling, not 100%. Settings: jobqueue `--concurrency
    50 --claim-batch 50`; procrastinate `--concurrency 50`; pgqueuer max_concurrent_tasks=50
    (its cap on a worker's picked jobs) with batch_size=25 (pgqueuer requires the cap to be at
    least twice the batch); Celery 5 with Redis (broker redis://127.0.0.1:6379/13, a database
    of its own, FLUSHDB before and after; no result backend): `--pool threads --concurrency
    50`, each pool thread running the async handler on its own asyncio.Runner. Why threads:
    prefork would need 50 processes per worker for 50 concurrent sleeps; eventlet/gevent
    green threads only overlap code their monkey-patching reaches, not an asyncio handler;
    solo runs one job at a time; threads is Celery's documented pool that runs 50 blocking
    calls at once in one process (see scripts/bench_peers/agent_celery.py). Celery keeps its
    defaults otherwise (prefetch multiplier 4, early acks), without gossip/mingle/heartbeat
    (cluster chatter; mingle waits for other workers at start-up). Celery has no table of
    unfinished jobs: each job INCRs a counter in its Redis database, and the queue counts as
    empty when the counter reaches N.
    Then a second run with warm workers (skip with --no-io-warm), as a deployed fleet has
    them: the 2 workers are started, warmed up with zero-second jobs until both have run
    one, and idle when the N jobs are enqueued in one call. Its rates run from that call
    (the agent's wall time just before it) and from the first of these jobs' handler calls:
    process start-up, and the skew between two processes' start (2-113 ms here), are out.
(e) real, "a little real work": --real-jobs (200,000) jobs whose payload is {"i": n, "t":
    <enqueue time>, "s": <--real-payload-chars (100) chars>}; the async handler reads i, t
    and s and appends "<i> <t> <s>" to a per-process file with one os.write (the file opened
    once per process, O_APPEND; scripts/bench_peers/bench_record.py), and the line count is
    checked afterwards. jobqueue `--concurrency 1000 --claim-batch 500`; pgqueuer once per
    --real-pgqueuer-batches size (100, 500, 1000; no max_concurrent_tasks, as in (b)), each on
    a fresh database, so its best batch size is in the table. procrastinate is left out: at
    ~500 jobs/s, 200,000 jobs take 7 minutes per run. The table ends with jobqueue / the
    best pgqueuer row (after the first job); the target is 2.5x.
    Both phases report CPU per job: the worker processes' user+system CPU and that of the
    Postgres backends connected to the system's database (pg_stat_activity, the
    orchestrator's own poll connection excluded), read from /proc from the poll that first
    sees every worker's first handler call to the poll that sees the queue empty, divided
    by N. Backends that exit in between are not counted; WAL writer and checkpointer are
    not either (shared with everything else on the server). /proc ticks are 10 ms, so short
    runs (io: 2,000 jobs) give CPU in steps of 5 µs/job.

All handlers (scripts/bench_tasks.py for jobqueue, scripts/bench_peers/agent_*.py for the
peers) are async and share scripts/bench_peers/bench_record.py, so each does the same work.
The jobqueue side runs from the interpreter running this script; the peers run from a
separate venv (--peers-venv, default /tmp/venv-peers), created here when missing with
    python -m venv /tmp/venv-peers
    /tmp/venv-peers/bin/pip install procrastinate==3.10.0 'pgqueuer[asyncpg]==1.6.0'
Every worker and agent is a subprocess of this script; all are stopped (SIGTERM, then
SIGKILL) when it ends, whatever the outcome. Progress goes to stderr, the report to stdout.
The peers' venv also holds Celery (PEER_PACKAGES: celery[redis]==5.7.0 and redis-py).

--jobqueue-baseline PATH adds the system "jobqueue@base": another jobqueue checkout (a `git
worktree add` of the commit to compare with), measured in the same run as this one. Its
workers and agent run with this interpreter, cwd PATH and PYTHONPATH=PATH:scripts:
scripts/bench_peers, so they import PATH's jobqueue package but this checkout's bench tasks
(as top-level modules bench_tasks and bench_record, which a checkout cannot shadow); the
tasks use only public names (`from jobqueue import task`). It gets its own database
(bench_jobqueue_base) and every phase jobqueue has.

Worker settings (flags below): jobqueue `--concurrency 2000 --claim-batch 1000` for the drain
(twice the batch, so one batch runs while the outcomes of the last are written; 500/500 gave
~27k jobs/s after the first job here, 1000/500 ~39k, 2000/1000 ~44k at 100,000 jobs),
10/10 for latency. procrastinate `--concurrency 30` (the value its docs use; 1 to 200 all gave
~300-650 jobs/s here, within noise: it fetches one job per round trip) with a pool of 10, 10
for latency. pgqueuer batch_size 500 for the drain (its tuning guide: raise it for short jobs;
at 5,000 jobs 10 gave ~6.6k, 100 ~15k, 500 ~19k jobs/s after the first job), its default 10
for latency; its workers run pgqueuer.run() on uvloop, which is what `pgq run` does (that CLI
fails with typer 0.29). Numbers on a shared 2-core machine are noisy: --repeat 3 gives medians.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from benchkit import BenchError, Processes, log
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
PEERS_DIR = REPO / "scripts" / "bench_peers"
PEER_PACKAGES = ["procrastinate==3.10.0", "pgqueuer[asyncpg]==1.6.0", "celery[redis]==5.7.0"]
BASE = "jobqueue@base"  # a second jobqueue checkout (--jobqueue-baseline)
IO_FLOOR_ROW = "asyncio alone"  # the io phase's reference: no queue, only the sleeps
SYSTEMS = ("jobqueue", BASE, "procrastinate", "pgqueuer", "celery", "floor")
PEERS = ("procrastinate", "pgqueuer")  # "floor" is no queue: the machine's bare cost
ALL_PHASES = ("enqueue", "drain", "latency", "io", "real")
WORKERS = 2
TICKS = os.sysconf("SC_CLK_TCK")


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:]) or "    (empty log)"


def run_agent(cmd: list[str], cwd: Path, env: dict, timeout: float, what: str,
              expect_json: bool = True) -> dict:
    try:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what}: no answer after {timeout:.0f}s ({' '.join(cmd)})") from exc
    if done.returncode != 0:
        raise BenchError(f"{what} failed (exit {done.returncode}):\n"
                         f"{(done.stderr or done.stdout).strip()[-3000:]}")
    if done.stderr.strip():
        for line in done.stderr.strip().splitlines()[-5:]:
            log(f"  {what}: {line}")
    if not expect_json:
        return {}
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise BenchError(f"{what}: expected a JSON line, got {done.stdout[-500:]!r}") from exc


# -- the systems ----------------------------------------------------------------------------

@dataclass
class System:
    name: str
    python: str
    cwd: Path
    agent: list[str]  # command prefix of the agent
    pending_sql: str  # true while some bench job is unfinished
    succeeded_sql: str  # how many {kind} jobs succeeded
    drain_worker: list[str] | None
    latency_worker: list[str] | None
    settings: str
    extra_env: dict = field(default_factory=dict)
    setup_cmds: list[list[str]] = field(default_factory=list)  # default: `agent setup`
    io_worker: list[str] | None = None
    real_workers: list[tuple[str, list[str]]] = field(default_factory=list)  # (label, cmd)
    phase_settings: dict[str, str] = field(default_factory=dict)
    redis_url: str | None = None  # celery: no database; the broker counts finished jobs

    def phases(self) -> set[str]:
        got = set()
        if self.drain_worker:
            got |= {"enqueue", "drain"}
        if self.latency_worker:
            got.add("latency")
        if self.io_worker:
            got.add("io")
        if self.real_workers:
            got.add("real")
        return got


def jobqueue_system(args, name: str, cwd: Path, tasks_module: str, agent: list[str],
                    extra_env: dict) -> System:
    py = sys.executable
    jq_worker = [py, "-m", "jobqueue", "--log-level", "WARNING", "worker", "--queue", "bench",
                 "--import", tasks_module]
    for module in args.jq_import:
        jq_worker += ["--import", module]
    io, real_c, real_b = args.io_concurrency, args.real_jq_concurrency, args.real_jq_claim_batch
    # --prefetch (this checkout only: a baseline may predate it): claim the next wave of I/O
    # jobs while this one sleeps, so no claim round trip sits between a job and the next.
    io_prefetch = ["--prefetch", str(io)] if cwd == REPO and args.jq_io_prefetch else []
    return System(
        name=name, python=py, cwd=cwd, agent=agent, extra_env=extra_env,
        pending_sql="SELECT EXISTS (SELECT 1 FROM jobqueue.jobs)",
        succeeded_sql="SELECT count(*) FROM jobqueue.finished "
                      "WHERE state = 'succeeded' AND kind = '{kind}'",
        drain_worker=[*jq_worker, "--concurrency", str(args.jq_concurrency),
                      "--claim-batch", str(args.jq_claim_batch)],
        latency_worker=[*jq_worker, "--concurrency", str(args.jq_latency_concurrency),
                        "--claim-batch", str(args.jq_latency_concurrency)],
        io_worker=[*jq_worker, "--concurrency", str(io), "--claim-batch", str(io), *io_prefetch],
        real_workers=[(f"c{real_c}/b{real_b}", [*jq_worker, "--concurrency", str(real_c),
                                                 "--claim-batch", str(real_b)])],
        settings=(("" if cwd == REPO else f"the checkout {cwd} (PYTHONPATH), this "
                   "interpreter, this checkout's bench tasks; ")
                  + "".join(f"`--import {m}`; " for m in args.jq_import)
                  + f"drain: `--concurrency {args.jq_concurrency} --claim-batch "
                  f"{args.jq_claim_batch}`; latency: `--concurrency "
                  f"{args.jq_latency_concurrency} --claim-batch "
                  f"{args.jq_latency_concurrency}`; LISTEN/NOTIFY on, poll 1 s, psycopg "
                  "3 (4 connections per worker), asyncio default loop"),
        phase_settings={"io": f"`--concurrency {io} --claim-batch {io}"
                              + (f" --prefetch {io}" if io_prefetch else "") + "`",
                        "real": f"`--concurrency {real_c} --claim-batch {real_b}`"},
    )


def make_systems(args, peers_python: str | None) -> dict[str, System]:
    py = sys.executable
    systems = {"jobqueue": jobqueue_system(args, "jobqueue", REPO, "scripts.bench_tasks",
                                           [py, "-m", "scripts.bench_tasks"], {})}
    if args.jobqueue_baseline:
        base = args.jobqueue_baseline.resolve()
        # The baseline's jobqueue package, this checkout's bench tasks and bench_record: the
        # checkout comes first on PYTHONPATH (and is the cwd, which `-m` puts first of all);
        # the tasks are imported as top-level modules from scripts/ and scripts/bench_peers/,
        # which a jobqueue checkout does not shadow.
        path = os.pathsep.join([str(base), str(REPO / "scripts"), str(PEERS_DIR)])
        systems[BASE] = jobqueue_system(args, BASE, base, "bench_tasks",
                                        [py, str(REPO / "scripts" / "bench_tasks.py")],
                                        {"PYTHONPATH": path})
    floor = [py, "agent_floor.py"]
    systems["floor"] = System(
        name="floor", python=py, cwd=PEERS_DIR, agent=floor,
        pending_sql="SELECT EXISTS (SELECT 1 FROM floor_jobs)",
        succeeded_sql="SELECT n FROM floor_done",
        drain_worker=[*floor, "worker", str(args.jq_claim_batch)],
        latency_worker=[*floor, "worker", str(args.jq_latency_concurrency)],
        settings=(f"scripts/bench_peers/agent_floor.py, no queue: COPY to enqueue; a bare "
                  f"synchronous psycopg loop of one batch claim ({args.jq_claim_batch}, "
                  f"{args.jq_latency_concurrency} for latency; FOR UPDATE SKIP LOCKED, "
                  "synchronous_commit off) and one batch DELETE; LISTEN when empty"),
    )
    if peers_python:
        pp = peers_python
        proc_worker = [pp, "-m", "procrastinate", "--app", "agent_procrastinate.app", "worker",
                       "--queues", "bench"]
        pgq_worker = [pp, "agent_pgqueuer.py", "worker"]  # = pgq run (see that file)
        io = args.io_concurrency
        systems["procrastinate"] = System(
            name="procrastinate", python=pp, cwd=PEERS_DIR,
            # imported, not run as __main__, so the app lives in its own module
            agent=[pp, "-c", "import sys, agent_procrastinate as a; a.cli(sys.argv[1:])"],
            pending_sql="SELECT EXISTS (SELECT 1 FROM procrastinate_jobs "
                        "WHERE status IN ('todo', 'doing'))",
            succeeded_sql="SELECT count(*) FROM procrastinate_jobs "
                          "WHERE status = 'succeeded' AND task_name = '{kind}'",
            drain_worker=[*proc_worker, "--concurrency", str(args.procrastinate_concurrency)],
            latency_worker=[*proc_worker, "--concurrency",
                            str(args.procrastinate_latency_concurrency)],
            io_worker=[*proc_worker, "--concurrency", str(io)],
            phase_settings={"io": f"`worker --concurrency {io}`, pool max_size "
                                  f"{args.procrastinate_pool}"},
            extra_env={"BENCH_PROCRASTINATE_POOL": str(args.procrastinate_pool)},
            settings=(f"drain: `worker --concurrency {args.procrastinate_concurrency}`; "
                      f"latency: `--concurrency {args.procrastinate_latency_concurrency}`; "
                      f"PsycopgConnector pool max_size {args.procrastinate_pool}, "
                      "listen_notify on, delete_jobs never (finished rows kept, like "
                      "jobqueue's `finished`)"),
        )
        systems["pgqueuer"] = System(
            name="pgqueuer", python=pp, cwd=PEERS_DIR,
            agent=[pp, "agent_pgqueuer.py"],
            pending_sql="SELECT EXISTS (SELECT 1 FROM pgqueuer)",
            succeeded_sql="SELECT count(*) FROM pgqueuer_log "
                          "WHERE status = 'successful' AND entrypoint = '{kind}'",
            drain_worker=[*pgq_worker, str(args.pgqueuer_batch_size)],
            latency_worker=[*pgq_worker, str(args.pgqueuer_latency_batch_size)],
            # max_concurrent_tasks caps the jobs a worker holds; pgqueuer requires it to be at
            # least twice batch_size, so the largest batch for 50 slots is 25.
            io_worker=[*pgq_worker, str(max(1, io // 2)), str(io)],
            real_workers=[(f"batch {b}", [*pgq_worker, str(b)])
                          for b in args.real_pgqueuer_batches],
            phase_settings={
                "io": f"`batch_size={max(1, io // 2)}, max_concurrent_tasks={io}`",
                "real": "`batch_size` as labelled, no max_concurrent_tasks (as in the drain)"},
            setup_cmds=[[pp, "-m", "pgqueuer", "install"], [pp, "-m", "pgqueuer", "autovac"]],
            settings=(f"drain: `batch_size={args.pgqueuer_batch_size}`; latency: "
                      f"`batch_size={args.pgqueuer_latency_batch_size}` (pgqueuer.run(), as "
                      "`pgq run` does); dequeue_timeout 30 s (default); one asyncpg "
                      "connection per worker (AsyncpgDriver), no max_concurrent_tasks, "
                      "uvloop (pgq run's default), durability `durable` (default), "
                      "`pgq autovac` applied"),
        )
        systems["celery"] = System(
            name="celery", python=pp, cwd=PEERS_DIR, agent=[pp, "agent_celery.py"],
            pending_sql="", succeeded_sql="", drain_worker=None, latency_worker=None,
            io_worker=[pp, "-m", "celery", "-A", "agent_celery", "worker", "--pool", "threads",
                       "--concurrency", str(io), "-Q", "bench", "--loglevel", "WARNING",
                       "--without-gossip", "--without-mingle", "--without-heartbeat"],
            redis_url=args.celery_redis_url,
            extra_env={"BENCH_REDIS_URL": args.celery_redis_url},
            settings=(f"I/O phase only; Redis broker {args.celery_redis_url} (flushed before "
                      "and after), no result backend; see scripts/bench_peers/agent_celery.py"),
            phase_settings={"io": f"`worker --pool threads --concurrency {io} "
                                  "--without-gossip --without-mingle --without-heartbeat`, "
                                  "one asyncio.Runner per thread, default prefetch (4) and "
                                  "early acks"},
        )
    return systems


# -- the database ---------------------------------------------------------------------------

def db_url(base: str, dbname: str) -> str:
    parts = urlsplit(base)
    if parts.scheme not in ("postgres", "postgresql"):
        raise BenchError(f"--database-url must be a postgresql:// URL, got {base!r}")
    return urlunsplit(parts._replace(path="/" + dbname))


def recreate_db(admin_url: str, dbname: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(dbname)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def drop_db(admin_url: str, dbname: str) -> None:
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(dbname)))
    except psycopg.Error as exc:
        log(f"could not drop {dbname}: {exc}")


def execute(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def checkpoint(url: str, tag: str) -> None:
    """Write the dirty pages and start a new checkpoint now, so the timed step that follows
    neither pays for the previous ones' writes nor meets a checkpoint half way (after one,
    every page's first change is written to the WAL whole). Drains here vary by up to a fifth
    from run to run; a checkpoint falling inside one was a cause that can be removed."""
    try:
        execute(url, "CHECKPOINT")
    except psycopg.Error as exc:
        log(f"{tag} CHECKPOINT not allowed ({str(exc).strip()}): going on without it")


def scalar(url: str, query: str):
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchone()[0]


def redis_command(url: str, *words: str):
    """One command to Redis (RESP over a socket: this interpreter need not have redis-py)."""
    parts = urlsplit(url)
    db = (parts.path or "/0").strip("/") or "0"
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379),
                                  timeout=10) as sock:
        reader = sock.makefile("rb")

        def send(*args: str) -> None:
            out = [f"*{len(args)}\r\n".encode()]
            for a in args:
                data = a.encode()
                out.append(b"$%d\r\n%s\r\n" % (len(data), data))
            sock.sendall(b"".join(out))

        def answer():
            line = reader.readline().rstrip(b"\r\n")
            kind, rest = line[:1], line[1:]
            if kind == b"-":
                raise BenchError(f"redis {' '.join(words)}: {rest.decode()}")
            if kind == b":":
                return int(rest)
            if kind == b"$":
                size = int(rest)
                return None if size < 0 else reader.read(size + 2)[:-2].decode()
            return rest.decode()

        send("SELECT", db)
        answer()
        send(*words)
        return answer()


class RedisCounter:
    """The celery system's "queue empty" test: bench:done (INCR per finished job) reached N."""

    def __init__(self, url: str, jobs: int) -> None:
        self.url, self.jobs = url, jobs

    def done(self) -> int:
        return int(redis_command(self.url, "GET", "bench:done") or 0)


# -- CPU accounting from /proc (Postgres and the workers run on this machine) ----------------

def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of one process (its threads included), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_snapshot(pids: list[int]) -> dict[int, float]:
    return {pid: c for pid in pids if (c := cpu_seconds(pid)) is not None}


def cpu_now(workers: list, conn) -> tuple[dict[int, float], dict[int, float]]:
    """CPU so far of the worker processes, and of the database's backends (none for Redis)."""
    return (cpu_snapshot([w.pid for w in workers]),
            cpu_snapshot(backend_pids(conn)) if conn else {})


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two snapshots; a process that appeared in between counts whole, one
    that exited in between is lost (Postgres backends of the benchmark's own connections)."""
    return sum(c - before.get(pid, 0.0) for pid, c in after.items())


def backend_pids(conn) -> list[int]:
    """The Postgres backends connected to this benchmark's database, but this connection's
    (the orchestrator's queue-empty poll): the workers' (and autovacuum's, while it runs)."""
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()").fetchall()
    return [r[0] for r in rows]


# -- one system, one repetition -------------------------------------------------------------

@dataclass
class Result:
    enqueue_rate: float | None = None
    drain_rate: float | None = None
    steady_rate: float | None = None
    start_seconds: float | None = None
    latencies: list[float] = field(default_factory=list)
    enqueue_calls: list[float] = field(default_factory=list)  # ms, the latency producer's
    after_return: list[float] = field(default_factory=list)  # ms, latency - enqueue call
    latency_lost: int = 0
    notes: list[str] = field(default_factory=list)
    phase_runs: list[PhaseRun] = field(default_factory=list)  # io and real


@dataclass
class PhaseRun:
    phase: str
    label: str  # the worker settings that differ between runs of one system (pgqueuer batch)
    jobs: int
    drain_rate: float
    steady_rate: float
    start_seconds: float
    worker_cpu_us: float | None  # per job, from the first handler call to queue empty
    db_cpu_us: float | None  # Postgres backends of the benchmark's database, same window
    ideal: float | None = None  # jobs/s, for the I/O-bound phase


def env_for(system: System, url: str, out_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JOBQUEUE_", "PROCRASTINATE_", "PGQUEUER_", "PG"))}
    env.update(system.extra_env)
    env.update({"BENCH_DB_URL": url, "DATABASE_URL": url, "PGDSN": url,
                "BENCH_OUT_DIR": str(out_dir), "PYTHONUNBUFFERED": "1"})
    env.pop("LOG_FORMAT", None)
    if system.cwd == PEERS_DIR:
        env["PYTHONPATH"] = str(PEERS_DIR)
    return env


DB_PREFIX = ["bench_"]  # --db-prefix: runs at the same time on one server must not share


def db_name(system: System) -> str:
    return DB_PREFIX[0] + system.name.replace("@", "_")


def run_system(system: System, args, procs: Processes, tmp: Path, rep: int) -> Result:
    result = Result()
    dbname = db_name(system)
    url = db_url(args.database_url, dbname)
    tag = f"[{system.name}{f' #{rep + 1}' if args.repeat > 1 else ''}]"
    out = tmp / f"{system.name}-{rep}"
    out.mkdir()
    env = env_for(system, url, out)
    phases = set(args.phases.split(",")) & system.phases()

    if system.redis_url:
        # Celery: no database. Its Redis database starts empty (and is emptied again below).
        redis_command(system.redis_url, "FLUSHDB")
        try:
            if "io" in phases:
                io_phase(system, args, procs, url, env, out, tag, result)
        finally:
            redis_command(system.redis_url, "FLUSHDB")
        return result

    fresh_database(system, args, env, tag)

    if "enqueue" in phases:
        checkpoint(url, tag)
        got = run_agent([*system.agent, "enqueue", str(args.jobs)], system.cwd, env,
                        args.timeout, f"{tag} enqueue")
        if got["count"] != args.jobs:
            raise BenchError(f"{tag} enqueue returned {got['count']} ids, not {args.jobs}")
        result.enqueue_rate = args.jobs / got["seconds"]
        log(f"{tag} enqueue {args.jobs}: {got['seconds']:.3f}s = "
            f"{result.enqueue_rate:,.0f} jobs/s")
        execute(url, "ANALYZE")
        if "drain" in phases:
            drain(system, args, procs, url, env, out, tag, result)
        elif phases - {"enqueue"}:  # the enqueued jobs must not wait in a later phase's queue
            fresh_database(system, args, env, tag)

    if "latency" in phases:
        latency(system, args, procs, url, env, out, tag, result)
    if "io" in phases:
        io_phase(system, args, procs, url, env, out, tag, result)
    if "real" in phases:
        real_phase(system, args, procs, url, env, out, tag, result)
    if not args.keep:
        drop_db(args.database_url, dbname)
    return result


def fresh_database(system: System, args, env: dict, tag: str) -> None:
    """The system's database created anew, with its schema (and --jq-queue-settings)."""
    dbname = db_name(system)
    log(f"{tag} fresh database {dbname}")
    recreate_db(args.database_url, dbname)
    for cmd in system.setup_cmds or [[*system.agent, "setup"]]:
        run_agent(cmd, system.cwd, env, 120, f"{tag} schema ({' '.join(cmd[1:])})",
                  expect_json=False)
    if system.name == "jobqueue" and args.jq_queue_settings:
        apply_queue_settings(db_url(args.database_url, dbname), args.jq_queue_settings)
        log(f"{tag} queue bench: {args.jq_queue_settings}")


def apply_queue_settings(url: str, text: str) -> None:
    """--jq-queue-settings "fair,max_running=40": the bench queue's caps and fairness in this
    checkout (jobqueue/queues.py), set before the enqueue."""
    from jobqueue import queues

    changes: dict = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        changes[key] = True if key == "fair" and not value else (
            value.lower() in ("1", "true", "on") if key == "fair" else int(value))
    with psycopg.connect(url, autocommit=True) as conn:
        queues.change(conn, "bench", **changes)


def drain(system, args, procs, url, env, out, tag, result) -> None:
    got = timed_drain(system, args, procs, url, env, out / "drain", tag, "drain",
                      system.drain_worker, args.jobs, "bench_noop", result)
    result.drain_rate, result.steady_rate = got.drain_rate, got.steady_rate
    result.start_seconds = got.start_seconds


def io_phase(system, args, procs, url, env, out, tag, result) -> None:
    """The I/O-bound workload: --io-jobs jobs that each sleep --io-seconds."""
    n = args.io_jobs
    got = run_agent([*system.agent, "enqueue-io", str(n), repr(args.io_seconds)], system.cwd,
                    env, args.timeout, f"{tag} enqueue io")
    if got["count"] != n:
        raise BenchError(f"{tag} io enqueue returned {got['count']} ids, not {n}")
    if not system.redis_url:
        execute(url, "ANALYZE")
    run = timed_drain(system, args, procs, url, env, out / "io", tag, "io", system.io_worker,
                      n, "bench_io", result)
    run.ideal = WORKERS * args.io_concurrency / args.io_seconds
    log(f"{tag} io: {run.drain_rate / run.ideal:.1%} of the ideal {run.ideal:,.0f} jobs/s "
        f"from spawn, {run.steady_rate / run.ideal:.1%} after the first job")
    result.phase_runs.append(run)
    if args.io_warm:
        warm = warm_io_drain(system, args, procs, url, env, out / "io-warm", tag)
        warm.ideal = run.ideal
        log(f"{tag} io, warm workers: {warm.drain_rate / warm.ideal:.1%} of the ideal from the "
            f"enqueue call, {warm.steady_rate / warm.ideal:.1%} after the first job")
        result.phase_runs.append(warm)


WARM_LABEL = "warm: idle workers, timed from the enqueue call"


def warm_io_drain(system, args, procs, url, env, out_dir: Path, tag: str) -> PhaseRun:
    """The io phase again with workers that are already up and idle, as a deployed fleet's
    are: spawn WORKERS workers, warm them up with rounds of 100 zero-second jobs until every
    process has run one (they mark `warm-<pid>`, not `first-<pid>`) and the queue is empty,
    then enqueue --io-jobs jobs in one call. "From spawn" becomes from the enqueue call (the
    agent's wall time just before it), "after first job" is from the first of these jobs'
    handler calls; process start-up is out of both, so the start skew between two spawned
    processes (2-113 ms here: scripts/io_timeline.py) no longer counts."""
    out_dir.mkdir()
    env = env | {"BENCH_OUT_DIR": str(out_dir)}
    n, poll = args.io_jobs, args.poll_ms / 1000.0
    counter = RedisCounter(system.redis_url, n) if system.redis_url else None
    with contextlib.ExitStack() as stack:
        conn = None if counter else stack.enter_context(psycopg.connect(url, autocommit=True))

        def finished() -> int:
            if counter:
                return counter.done()
            return scalar(url, system.succeeded_sql.replace("{kind}", "bench_io"))

        def pending() -> bool:
            return (finished() < target) if counter else conn.execute(
                system.pending_sql).fetchone()[0]

        workers = [procs.spawn(system.io_worker, env, out_dir.parent /
                               f"{out_dir.name}-worker-{i}.log", cwd=system.cwd)
                   for i in range(WORKERS)]
        def wait_empty(since: float, what: str) -> None:
            while pending():
                for w in workers:
                    if w.poll() is not None:
                        raise BenchError(f"{tag} {what}: worker {w.pid} exited with "
                                         f"{w.returncode}:\n{tail(w.log_path)}")
                if time.time() - since > args.timeout:
                    raise BenchError(f"{tag} {what}: unfinished after {args.timeout:.0f}s")
                time.sleep(poll)

        try:
            began = time.time()
            target = finished()
            while len(list(out_dir.glob("warm-*"))) < WORKERS:
                if time.time() - began > 60:
                    raise BenchError(f"{tag} io warm-up: only "
                                     f"{len(list(out_dir.glob('warm-*')))} of {WORKERS} "
                                     "processes ran a job in 60 s")
                run_agent([*system.agent, "enqueue-io", "100", "-1"], system.cwd, env,
                          args.timeout, f"{tag} io warm-up")
                target += 100
                wait_empty(began, "io warm-up")
            target = finished() + n
            before = cpu_now(workers, conn)
            got = run_agent([*system.agent, "enqueue-io", str(n), repr(args.io_seconds)],
                            system.cwd, env, args.timeout, f"{tag} enqueue io (warm)")
            wait_empty(got["at"], "io (warm)")
            emptied = time.time()
            after = cpu_now(workers, conn)
        finally:
            procs.stop(workers)
        if finished() != target:
            raise BenchError(f"{tag} io (warm): {finished() - target + n} jobs succeeded, "
                             f"expected {n}")
    first = min(float(p.read_text()) for p in out_dir.glob("first-*"))
    return PhaseRun(phase="io", label=WARM_LABEL, jobs=n, drain_rate=n / (emptied - got["at"]),
                    steady_rate=n / (emptied - first), start_seconds=first - got["at"],
                    worker_cpu_us=cpu_delta(before[0], after[0]) / n * 1e6,
                    db_cpu_us=cpu_delta(before[1], after[1]) / n * 1e6 if conn else None)


IO_FLOOR = """
import asyncio, sys, time
rounds, slots, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
async def main():
    first = time.time()
    for _ in range(rounds):
        await asyncio.gather(*(asyncio.sleep(seconds) for _ in range(slots)))
    print(first, time.time())
asyncio.run(main())
"""


def io_floor(args, procs: Processes, tmp: Path) -> PhaseRun:
    """The I/O-bound phase with no queue: WORKERS processes that each run their share of the
    jobs as rounds of --io-concurrency concurrent asyncio.sleep() calls. What asyncio's timers
    allow on this machine (a sleep overshoots by 1-2 ms here, a few % of 0.1 s)."""
    slots = args.io_concurrency
    rounds = max(1, round(args.io_jobs / (WORKERS * slots)))
    outs = [tmp / f"io-floor-{i}.txt" for i in range(WORKERS)]
    cmd = [sys.executable, "-c", IO_FLOOR, str(rounds), str(slots), repr(args.io_seconds)]
    started = time.time()
    workers = []
    try:
        for out in outs:
            with open(out, "wb") as f:
                workers.append(subprocess.Popen(cmd, stdout=f, stdin=subprocess.DEVNULL))
        for w in workers:
            w.wait(args.timeout)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    times = [tuple(map(float, out.read_text().split())) for out in outs]
    first, last = min(t[0] for t in times), max(t[1] for t in times)
    n = rounds * slots * WORKERS
    run = PhaseRun(phase="io", label="no queue", jobs=n, drain_rate=n / (last - started),
                   steady_rate=n / (last - first), start_seconds=first - started,
                   worker_cpu_us=None, db_cpu_us=None,
                   ideal=WORKERS * slots / args.io_seconds)
    log(f"[asyncio alone] io {n}: {run.steady_rate:,.0f} jobs/s after the first sleep = "
        f"{run.steady_rate / run.ideal:.1%} of the ideal")
    return run


def real_phase(system, args, procs, url, env, out, tag, result) -> None:
    """A little real work: --real-jobs jobs whose handler appends a line to a file."""
    n = args.real_jobs
    for i, (label, cmd) in enumerate(system.real_workers):
        if i:  # the next batch size on a fresh database
            fresh_database(system, args, env, tag)
        got = run_agent([*system.agent, "enqueue-real", str(n), str(args.real_payload_chars)],
                        system.cwd, env, args.timeout, f"{tag} enqueue real")
        if got["count"] != n:
            raise BenchError(f"{tag} real enqueue returned {got['count']} ids, not {n}")
        log(f"{tag} real: enqueued {n} in {got['seconds']:.2f}s")
        execute(url, "ANALYZE")
        where = out / f"real-{i}"
        run = timed_drain(system, args, procs, url, env, where, f"{tag} ({label})", "real",
                          cmd, n, "bench_real", result)
        run.label = label
        lines = sum(p.read_bytes().count(b"\n") for p in where.glob("real-*.txt"))
        if lines != n:
            raise BenchError(f"{tag} real: the handlers wrote {lines} lines, expected {n}")
        result.phase_runs.append(run)


def timed_drain(system, args, procs, url, env, out_dir: Path, tag: str, phase: str,
                worker_cmd: list[str], n: int, kind: str, result: Result) -> PhaseRun:
    """Spawn WORKERS worker processes on N enqueued jobs of `kind`; time until the queue is
    empty. CPU of the workers and of the database's backends is counted from the poll that
    first sees every process's first handler call to the poll that sees the queue empty."""
    out_dir.mkdir()
    env = env | {"BENCH_OUT_DIR": str(out_dir)}
    poll = args.poll_ms / 1000.0
    checkpoint(url, tag)
    workers = []
    counter = RedisCounter(system.redis_url, n) if system.redis_url else None
    cpu_from: tuple[dict, dict] | None = None
    with contextlib.ExitStack() as stack:
        conn = None
        if counter is None:
            conn = stack.enter_context(psycopg.connect(url, autocommit=True))
            pending = lambda: conn.execute(system.pending_sql).fetchone()[0]  # noqa: E731
        else:
            pending = lambda: counter.done() < n  # noqa: E731
        try:
            pending()  # connected and planned before the clock starts
            spawned = time.time()
            workers = [procs.spawn(worker_cmd, env, out_dir.parent /
                                   f"{out_dir.name}-worker-{i}.log", cwd=system.cwd)
                       for i in range(WORKERS)]
            while pending():
                if cpu_from is None and len(list(out_dir.glob("first-*"))) >= WORKERS:
                    cpu_from = cpu_now(workers, conn)
                for w in workers:
                    if w.poll() is not None:
                        raise BenchError(f"{tag} {phase} worker {w.pid} exited with "
                                         f"{w.returncode}:\n{tail(w.log_path)}")
                if time.time() - spawned > args.timeout:
                    left = (n - counter.done()) if counter else conn.execute(
                        system.pending_sql.replace("SELECT EXISTS (SELECT 1",
                                                   "SELECT (SELECT count(*)")).fetchone()[0]
                    raise BenchError(f"{tag} {phase}: {left} jobs still unfinished after "
                                     f"{args.timeout:.0f}s")
                time.sleep(poll)
            emptied = time.time()
            cpu_to = cpu_now(workers, conn)
        finally:
            procs.stop(workers)
    firsts = [float(p.read_text()) for p in out_dir.glob("first-*")]
    if not firsts:
        raise BenchError(f"{tag} {phase}: the queue emptied but no handler ran")
    first = min(firsts)
    done = counter.done() if counter else scalar(url, system.succeeded_sql.replace("{kind}",
                                                                                   kind))
    if done != n:
        raise BenchError(f"{tag} {phase}: {done} jobs succeeded, expected {n}")
    if len(firsts) < WORKERS:
        result.notes.append(f"{phase}: only {len(firsts)} of {WORKERS} processes ran a job")
    worker_us = db_us = None
    if cpu_from is not None:
        worker_us = cpu_delta(cpu_from[0], cpu_to[0]) / n * 1e6
        db_us = cpu_delta(cpu_from[1], cpu_to[1]) / n * 1e6 if conn else None
    run = PhaseRun(phase=phase, label="", jobs=n, drain_rate=n / (emptied - spawned),
                   steady_rate=n / (emptied - first), start_seconds=first - spawned,
                   worker_cpu_us=worker_us, db_cpu_us=db_us)
    log(f"{tag} {phase} {n} with {WORKERS} processes: {emptied - spawned:.3f}s = "
        f"{run.drain_rate:,.0f} jobs/s (start {run.start_seconds:.2f}s; after the first "
        f"job {run.steady_rate:,.0f} jobs/s)"
        + (f"; CPU µs/job: workers {worker_us:.1f}" if worker_us is not None else "")
        + (f", Postgres {db_us:.1f}" if db_us is not None else ""))
    return run


def latency(system, args, procs, url, env, out, tag, result) -> None:
    lat_dir = out / "latency"
    lat_dir.mkdir()
    env = env | {"BENCH_OUT_DIR": str(lat_dir)}
    execute(url, "VACUUM ANALYZE")
    checkpoint(url, tag)  # the drain's dirty pages are written now, not during the measurement
    time.sleep(1.0)
    workers = [procs.spawn(system.latency_worker, env,
                           out / f"latency-worker-{i}.log", cwd=system.cwd)
               for i in range(WORKERS)]
    try:
        budget = args.latency_jobs / args.rate + 90
        cmd = [*system.agent, "latency", str(args.latency_jobs), str(args.rate), str(WORKERS)]
        sent = run_agent(cmd, system.cwd, env, budget, f"{tag} latency producer")
        for w in workers:
            if w.poll() is not None:
                raise BenchError(f"{tag} latency worker {w.pid} exited with {w.returncode}:\n"
                                 f"{tail(w.log_path)}")
        deadline = time.monotonic() + 15
        samples: dict[int, float] = {}
        while True:
            samples = read_latencies(lat_dir)
            if len(samples) >= args.latency_jobs or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        procs.stop(workers)
    result.latencies = list(samples.values())
    result.enqueue_calls = calls = sent.get("enqueue_call_ms", [])
    result.after_return = [ms - calls[seq] for seq, ms in samples.items() if seq < len(calls)]
    result.latency_lost = args.latency_jobs - len(samples)
    if result.latency_lost:
        result.notes.append(f"latency: {result.latency_lost} jobs not run within 15 s")
    if sent.get("max_producer_lag_ms", 0) > 1000 / args.rate:
        result.notes.append(f"latency: the producer fell behind its schedule by up to "
                            f"{sent['max_producer_lag_ms']} ms")
    pct = percentiles(result.latencies)
    log(f"{tag} pickup latency over {len(samples)} jobs ({sent['warmup_jobs']} warm-up): "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in pct.items())
        + f"; the enqueue call alone: p50 {percentiles(calls)['p50']:.2f} ms, after it "
        f"returned: p50 {percentiles(result.after_return)['p50']:.2f} ms")


def read_latencies(lat_dir: Path) -> dict[int, float]:
    samples = {}
    for path in lat_dir.glob("lat-*.txt"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and int(parts[0]) >= 0:
                samples[int(parts[0])] = float(parts[1])
    return samples


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:  # linear interpolation between closest ranks (numpy's default)
        pos = (len(ordered) - 1) * q
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": ordered[-1]}


# -- setup and report -----------------------------------------------------------------------

def ensure_peers(venv: Path, create: bool) -> str:
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import procrastinate, pgqueuer, asyncpg, celery, redis"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return str(python)
    if not create:
        raise BenchError(f"no peers venv at {venv}: create it with\n"
                         f"  {sys.executable} -m venv {venv}\n  {python.parent}/pip install "
                         + " ".join(f"'{p}'" for p in PEER_PACKAGES))
    log(f"creating the peers' venv {venv} ({', '.join(PEER_PACKAGES)})")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    if subprocess.run(probe, capture_output=True).returncode != 0:
        raise BenchError(f"{venv}: procrastinate/pgqueuer/celery still do not import")
    return str(python)


def versions(python: str, packages: list[str]) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            f"for p in {packages!r}:\n"
            "    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: out[p] = '-'\n"
            "out['python'] = sys.version.split()[0]\n"
            "print(json.dumps(out))")
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        return json.loads(done.stdout)
    except (subprocess.SubprocessError, json.JSONDecodeError, OSError):
        return {}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt_rate(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "-"
    text = f"{statistics.median(got):,.0f}"
    if len(got) > 1:
        text += f" ({min(got):,.0f}-{max(got):,.0f})"
    return text


def fmt_seconds(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    return f"{statistics.median(got):.2f}" if got else "-"


def report(args, systems, results, info) -> str:
    classic = any(r.drain_rate or r.enqueue_rate or r.latencies
                  for runs in results.values() for r in runs)
    lines = [
        "## Queue benchmark: jobqueue vs procrastinate, pgqueuer, Celery (and the bare floor)", "",
        f"- date: {info['date']}",
        f"- machine: {info['nproc']} cores ({info['cpu']}), load average at start "
        f"{info['load']}",
        f"- Postgres: {info['pg']} (synchronous_commit={info['sync']}, fsync={info['fsync']}, "
        f"shared_buffers={info['shared_buffers']}), on the same machine",
        f"- packages: {info['packages']}",
        f"- phases: {args.phases}"
        + (f"; {args.repeat} repetitions: median (min-max) of rates, latency percentiles "
           "over all samples" if args.repeat > 1 else ""),
    ]
    if classic:
        run = args.phases.split(",")
        parts = [text for phase, text in (
            ("enqueue", f"(a) {args.jobs:,} no-op jobs enqueued in one batch call"),
            ("drain", f"(b) drained by {WORKERS} worker processes"),
            ("latency", f"(c) {args.latency_jobs} single enqueues at {args.rate:g}/s to "
                        f"{WORKERS} idle worker processes")) if phase in run]
        lines += [f"- workload: {'; '.join(parts)}", ""]
        lines += classic_table(results)
    lines += phase_tables(args, results)
    lines += ["", "Settings:"]
    for name in results:
        if name not in systems:
            continue
        lines.append(f"- {name}: {systems[name].settings}")
        for phase, text in systems[name].phase_settings.items():
            if phase in args.phases.split(","):
                lines.append(f"  - {phase}: {text}")
    notes = [f"- {name}: {note}" for name, runs in results.items()
             for r in runs for note in r.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    lines += ["", "Method: see the docstring of scripts/bench_queue.py. Command: `"
              + " ".join([Path(sys.executable).as_posix(), "scripts/bench_queue.py",
                          *sys.argv[1:]]) + "`"]
    return "\n".join(lines)


def classic_table(results: dict[str, list[Result]]) -> list[str]:
    lines = [
        "| system | batch enqueue jobs/s | drain jobs/s (2 procs, from spawn) | "
        "drain jobs/s after first job | worker start s | pickup p50 ms | p95 ms | p99 ms | "
        "max ms | enqueue call p50 ms | after it returned p50 ms |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, runs in results.items():
        if not any(r.drain_rate or r.enqueue_rate or r.latencies for r in runs):
            continue  # a system (or the io reference row) that ran none of these phases
        lat = [v for r in runs for v in r.latencies]
        pct = percentiles(lat)
        cells = [name, fmt_rate([r.enqueue_rate for r in runs]),
                 fmt_rate([r.drain_rate for r in runs]),
                 fmt_rate([r.steady_rate for r in runs]),
                 fmt_seconds([r.start_seconds for r in runs])]
        cells += [f"{pct[k]:.2f}" if pct else "-" for k in ("p50", "p95", "p99", "max")]
        for attr in ("enqueue_calls", "after_return"):
            part = percentiles([v for r in runs for v in getattr(r, attr)])
            cells.append(f"{part['p50']:.2f}" if part else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + targets(results)


def phase_tables(args, results: dict[str, list[Result]]) -> list[str]:
    """The io and real phases: one row per system and worker setting, medians of repeats."""
    lines: list[str] = []
    titles = {
        "io": f"I/O-bound: {args.io_jobs:,} jobs that each await asyncio.sleep("
              f"{args.io_seconds:g}), {WORKERS} processes x {args.io_concurrency} concurrent "
              "jobs",
        "real": f"A little real work: {args.real_jobs:,} jobs, the handler reads i, t, s "
                f"(s: {args.real_payload_chars} chars) and appends a line to a file "
                f"(os.write); {WORKERS} processes",
    }
    for phase in ("io", "real"):
        rows: dict[tuple[str, str], list[PhaseRun]] = {}
        for name, runs in results.items():
            for r in runs:
                for pr in r.phase_runs:
                    if pr.phase == phase:
                        rows.setdefault((name, pr.label), []).append(pr)
        if not rows:
            continue
        ideal = next((pr.ideal for prs in rows.values() for pr in prs if pr.ideal), None)
        lines += ["", f"### {titles[phase]}", ""]
        head = ["system", "workers", "jobs/s from spawn"]
        head += ["% of ideal"] if ideal else []
        head += ["jobs/s after first job"] + (["% of ideal"] if ideal else [])
        head += ["worker start s", "worker CPU µs/job", "Postgres CPU µs/job"]
        lines += ["| " + " | ".join(head) + " |",
                  "|---|---|" + "--:|" * (len(head) - 2)]
        for (name, label), prs in rows.items():
            cells = [name, label or "-", fmt_rate([p.drain_rate for p in prs])]
            if ideal:
                cells.append(f"{statistics.median(p.drain_rate for p in prs) / ideal:.1%}")
            cells.append(fmt_rate([p.steady_rate for p in prs]))
            if ideal:
                cells.append(f"{statistics.median(p.steady_rate for p in prs) / ideal:.1%}")
            cells.append(fmt_seconds([p.start_seconds for p in prs]))
            for attr in ("worker_cpu_us", "db_cpu_us"):
                got = [getattr(p, attr) for p in prs if getattr(p, attr) is not None]
                cells.append(f"{statistics.median(got):.1f}" if got else "-")
            lines.append("| " + " | ".join(cells) + " |")
        if ideal:
            lines.append(f"\nIdeal: {ideal:,.0f} jobs/s ({WORKERS} x {args.io_concurrency} "
                         f"slots / {args.io_seconds:g} s). `{IO_FLOOR_ROW}`: no queue, "
                         f"{WORKERS} processes that run the same number of sleeps in rounds "
                         f"of {args.io_concurrency} (asyncio.gather): what asyncio's timers "
                         "allow on this machine. `warm` rows: the workers were up and "
                         "idle before the enqueue, and \"from spawn\" is from the enqueue call.")
        if phase == "real":
            best = {}
            for (name, _), prs in rows.items():
                rate = statistics.median(p.steady_rate for p in prs)
                best[name] = max(best.get(name, 0.0), rate)
            if "jobqueue" in best and "pgqueuer" in best:
                lines.append(f"\njobqueue / pgqueuer's best (after the first job): "
                             f"{best['jobqueue'] / best['pgqueuer']:.2f}x (target 2.5x)")
    return lines


def targets(results: dict[str, list[Result]]) -> list[str]:
    """The project's targets for jobqueue, checked against this run's numbers."""
    if "jobqueue" not in results or not any(n in PEERS for n in results):
        return []

    def med(name: str, attr: str) -> float | None:
        got = [getattr(r, attr) for r in results[name] if getattr(r, attr) is not None]
        return statistics.median(got) if got else None

    def pct(name: str) -> dict[str, float]:
        return percentiles([v for r in results[name] for v in r.latencies])

    peers = [n for n in results if n in PEERS and results[n][0].drain_rate is not None]
    if not peers:
        return []
    out = ["", "Targets for jobqueue (this run):"]
    for attr, label in (("drain_rate", "drain (from spawn)"),
                        ("steady_rate", "drain (after first job)"),
                        ("enqueue_rate", "batch enqueue")):
        mine = med("jobqueue", attr)
        best = max((v for v in (med(n, attr) for n in peers) if v is not None), default=None)
        if mine and best:
            ok = "met" if mine >= 3 * best else "NOT met"
            out.append(f"- {label} >= 3x the fastest peer: {mine / best:.2f}x -> {ok}")
    mine = pct("jobqueue")
    if mine:
        lowest = {k: min((pct(n)[k] for n in peers if pct(n)), default=None)
                  for k in ("p50", "p99")}
        for key, limit in (("p50", 2.5), ("p99", 4.0)):
            below = lowest[key] is None or mine[key] < lowest[key]
            ok = "met" if mine[key] <= limit and below else "NOT met"
            out.append(f"- pickup {key} <= {limit} ms and below every peer: {mine[key]:.2f} ms "
                       f"(best peer {lowest[key]:.2f} ms) -> {ok}" if lowest[key] is not None
                       else f"- pickup {key} <= {limit} ms: {mine[key]:.2f} ms -> {ok}")
    return out


def machine_info(args, peers_python: str | None) -> dict:
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
        sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
        fsync = conn.execute("SHOW fsync").fetchone()[0]
        shared = conn.execute("SHOW shared_buffers").fetchone()[0]
    own = versions(sys.executable, ["jobqueue", "psycopg", "psycopg-binary"])
    packages = (f"Python {own.get('python', '?')}; jobqueue {own.get('jobqueue', '?')} "
                f"(psycopg {own.get('psycopg', '?')})")
    if peers_python:
        peer = versions(peers_python, ["procrastinate", "pgqueuer", "psycopg", "asyncpg",
                                       "uvloop", "celery", "redis"])
        packages += (f"; peers (Python {peer.get('python', '?')}): procrastinate "
                     f"{peer.get('procrastinate', '?')} (psycopg {peer.get('psycopg', '?')}), "
                     f"pgqueuer {peer.get('pgqueuer', '?')} (asyncpg {peer.get('asyncpg', '?')},"
                     f" uvloop {peer.get('uvloop', '?')}), celery {peer.get('celery', '?')} "
                     f"(redis-py {peer.get('redis', '?')})")
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu": cpu_model(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "pg": pg, "sync": sync, "fsync": fsync, "shared_buffers": shared,
        "packages": packages,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--jobs", type=int, default=20000, help="jobs to enqueue and drain")
    p.add_argument("--latency-jobs", type=int, default=500, help="single enqueues timed")
    p.add_argument("--rate", type=float, default=50.0, help="single enqueues per second")
    p.add_argument("--only", default=None,
                   help=f"comma-separated systems of {', '.join(SYSTEMS)} (default: all; "
                        f"{BASE} only with --jobqueue-baseline; a system runs only the "
                        "phases it has: celery only io, floor not io/real)")
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                   help="a database to connect to for CREATE/DROP DATABASE; each system gets "
                        "bench_<system> on the same server")
    p.add_argument("--phases", default="enqueue,drain,latency",
                   help="which of enqueue,drain,latency,io,real to run (drain needs "
                        "enqueue)")
    p.add_argument("--repeat", type=int, default=1, help="run everything this many times")
    p.add_argument("--peers-venv", type=Path, default=Path("/tmp/venv-peers"))
    p.add_argument("--no-create-peers", action="store_true",
                   help="fail instead of creating a missing peers venv")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per enqueue or drain")
    p.add_argument("--poll-ms", type=float, default=5.0, help="drain: queue-empty poll period")
    p.add_argument("--keep", action="store_true", help="keep the databases and worker logs")
    p.add_argument("--jobqueue-baseline", type=Path, metavar="PATH",
                   help=f"another jobqueue checkout (e.g. a `git worktree add` of main), run "
                        f"as the system {BASE}: its workers and agent use PATH's jobqueue "
                        "package (PYTHONPATH, cwd PATH), this interpreter and this checkout's "
                        "bench tasks, so a before/after of a change runs side by side")
    p.add_argument("--db-prefix", default="bench_",
                   help="prefix of the databases created (one per system); give each of "
                        "several runs at the same time on one server its own")
    p.add_argument("--jq-queue-settings", default="", metavar="SETTINGS",
                   help="this checkout's bench queue settings before the enqueue, e.g. "
                        "'fair' or 'max_running=40' or 'fair,max_running_per_owner=5' "
                        "(caps and fairness: jobqueue/queues.py); not the baseline's")
    g = p.add_argument_group("io phase (I/O-bound jobs)")
    g.add_argument("--io-jobs", type=int, default=2000)
    g.add_argument("--io-seconds", type=float, default=0.1, help="each job's asyncio.sleep")
    g.add_argument("--no-io-warm", dest="io_warm", action="store_false",
                   help="skip the io phase's second run with warm (already idle) workers")
    g.add_argument("--no-jq-io-prefetch", dest="jq_io_prefetch", action="store_false",
                   help="io phase: run jobqueue without --prefetch (its default)")
    g.add_argument("--io-concurrency", type=int, default=50,
                   help="concurrent jobs per worker process, every system (jobqueue claim "
                        "batch = this; pgqueuer max_concurrent_tasks = this, batch half)")
    g.add_argument("--celery-redis-url", default="redis://127.0.0.1:6379/13",
                   help="Celery's broker: a Redis database of its own, flushed before/after")
    g = p.add_argument_group("real phase (a little real work)")
    g.add_argument("--real-jobs", type=int, default=200000)
    g.add_argument("--real-payload-chars", type=int, default=100,
                   help="length of the payload's string s")
    g.add_argument("--real-jq-concurrency", type=int, default=1000)
    g.add_argument("--real-jq-claim-batch", type=int, default=500)
    g.add_argument("--real-pgqueuer-batches", default="100,500,1000",
                   help="pgqueuer runs once per batch size (comma-separated)")
    g = p.add_argument_group("worker settings")
    g.add_argument("--jq-concurrency", type=int, default=2000,
                   help="twice the claim batch: one batch runs while the last one's outcomes "
                        "are written")
    g.add_argument("--jq-claim-batch", type=int, default=1000)
    g.add_argument("--jq-latency-concurrency", type=int, default=10)
    g.add_argument("--jq-import", action="append", default=[], metavar="MODULE",
                   help="also --import MODULE in jobqueue's workers (to A/B a worker change; "
                        "put it on PYTHONPATH); repeatable")
    g.add_argument("--procrastinate-concurrency", type=int, default=30,
                   help="procrastinate's docs use 30 as their example")
    g.add_argument("--procrastinate-latency-concurrency", type=int, default=10)
    g.add_argument("--procrastinate-pool", type=int, default=10,
                   help="PsycopgConnector max_size per worker process")
    g.add_argument("--pgqueuer-batch-size", type=int, default=500,
                   help="pgqueuer's tuning guide: raise it for short jobs; = jobqueue's batch")
    g.add_argument("--pgqueuer-latency-batch-size", type=int, default=10)
    args = p.parse_args(argv)
    if args.only is None:
        args.only = ",".join(s for s in SYSTEMS if s != BASE or args.jobqueue_baseline)
    unknown = set(args.only.split(",")) - set(SYSTEMS)
    if unknown:
        p.error(f"--only: unknown system(s) {', '.join(sorted(unknown))}")
    if BASE in args.only.split(",") and not args.jobqueue_baseline:
        p.error(f"--only {BASE} needs --jobqueue-baseline PATH")
    if args.jobqueue_baseline and not (args.jobqueue_baseline / "jobqueue").is_dir():
        p.error(f"--jobqueue-baseline: no jobqueue package in {args.jobqueue_baseline}")
    try:
        args.real_pgqueuer_batches = [int(b) for b in args.real_pgqueuer_batches.split(",")]
    except ValueError:
        p.error("--real-pgqueuer-batches: comma-separated integers")
    bad = set(args.phases.split(",")) - set(ALL_PHASES)
    if bad:
        p.error(f"--phases: unknown phase(s) {', '.join(sorted(bad))}")
    if args.jobs < 1 or args.latency_jobs < 1 or args.rate <= 0 or args.repeat < 1:
        p.error("--jobs, --latency-jobs, --rate and --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    DB_PREFIX[0] = args.db_prefix
    wanted = [s for s in SYSTEMS if s in args.only.split(",")]
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="bench_queue_"))

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        db_url(args.database_url, "x")
        peers = None
        if any(s in (*PEERS, "celery") for s in wanted):
            peers = ensure_peers(args.peers_venv, not args.no_create_peers)
        info = machine_info(args, peers)
        systems = make_systems(args, peers)
        phases = set(args.phases.split(","))
        idle = [name for name in wanted if not systems[name].phases() & phases]
        if idle:
            log(f"no phase of {args.phases} for {', '.join(idle)}: skipped")
        wanted = [name for name in wanted if name not in idle]
        results: dict[str, list[Result]] = {name: [] for name in wanted}
        for rep in range(args.repeat):
            for name in wanted:
                results[name].append(run_system(systems[name], args, procs, tmp, rep))
            if "io" in phases:
                floor = results.setdefault(IO_FLOOR_ROW, [])
                floor.append(Result(phase_runs=[io_floor(args, procs, tmp)]))
        print(report(args, systems, results, info), flush=True)
        return 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"error: cannot use the database: {str(exc).strip()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            log(f"worker logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
