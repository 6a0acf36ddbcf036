#!/usr/bin/env python
"""Benchmark jobqueue against procrastinate and pgqueuer on one Postgres server.

    python scripts/bench_queue.py            # full size
    /tmp/venv/bin/python scripts/bench_queue.py --jobs 2000 --latency-jobs 100   # quick look

Three workloads per system, each system in its own freshly created database:
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
(c) pickup latency: 2 idle worker processes; warm-up single enqueues until both processes
    have run a job (at least 20), then --latency-jobs single enqueues at --rate per second on a
    fixed schedule. Latency = handler's first-line time.time() - time.time() taken just before
    the enqueue call (carried in the payload); the handler appends it to a per-process file,
    so no result storage or extra SQL is on the measured path. VACUUM ANALYZE and CHECKPOINT
    run first (then 1 s of quiet), so the drain's leftovers are not written meanwhile. The
    table also splits the latency's p50: the enqueue call alone (its return minus the same start
    time), and the time after it returned (latency - call, per job: the notification, the
    claim and the dispatch to the handler; it can be < 0, as NOTIFY goes out at commit).

All handlers (scripts/bench_tasks.py for jobqueue, scripts/bench_peers/agent_*.py for the
peers) are async and share scripts/bench_peers/bench_record.py, so each does the same work.
The jobqueue side runs from the interpreter running this script; the peers run from a
separate venv (--peers-venv, default /tmp/venv-peers), created here when missing with
    python -m venv /tmp/venv-peers
    /tmp/venv-peers/bin/pip install procrastinate==3.10.0 'pgqueuer[asyncpg]==1.6.0'
Every worker and agent is a subprocess of this script; all are stopped (SIGTERM, then
SIGKILL) when it ends, whatever the outcome. Progress goes to stderr, the report to stdout.

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
import datetime as dt
import json
import os
import platform
import shutil
import signal
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
PEER_PACKAGES = ["procrastinate==3.10.0", "pgqueuer[asyncpg]==1.6.0"]
SYSTEMS = ("jobqueue", "procrastinate", "pgqueuer", "floor")
PEERS = ("procrastinate", "pgqueuer")  # "floor" is no queue: the machine's bare cost
WORKERS = 2


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
    succeeded_sql: str  # how many bench_noop jobs succeeded
    drain_worker: list[str]
    latency_worker: list[str]
    settings: str
    extra_env: dict = field(default_factory=dict)
    setup_cmds: list[list[str]] = field(default_factory=list)  # default: `agent setup`


def make_systems(args, peers_python: str | None) -> dict[str, System]:
    py = sys.executable
    jq_worker = [py, "-m", "jobqueue", "--log-level", "WARNING", "worker", "--queue", "bench",
                 "--import", "scripts.bench_tasks"]
    for module in args.jq_import:
        jq_worker += ["--import", module]
    systems = {
        "jobqueue": System(
            name="jobqueue", python=py, cwd=REPO,
            agent=[py, "-m", "scripts.bench_tasks"],
            pending_sql="SELECT EXISTS (SELECT 1 FROM jobqueue.jobs)",
            succeeded_sql="SELECT count(*) FROM jobqueue.finished "
                          "WHERE state = 'succeeded' AND kind = 'bench_noop'",
            drain_worker=[*jq_worker, "--concurrency", str(args.jq_concurrency),
                          "--claim-batch", str(args.jq_claim_batch)],
            latency_worker=[*jq_worker, "--concurrency", str(args.jq_latency_concurrency),
                            "--claim-batch", str(args.jq_latency_concurrency)],
            settings=("".join(f"`--import {m}`; " for m in args.jq_import)
                      + f"drain: `--concurrency {args.jq_concurrency} --claim-batch "
                      f"{args.jq_claim_batch}`; latency: `--concurrency "
                      f"{args.jq_latency_concurrency} --claim-batch "
                      f"{args.jq_latency_concurrency}`; LISTEN/NOTIFY on, poll 1 s, psycopg "
                      "3 (4 connections per worker), asyncio default loop"),
        ),
    }
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
        systems["procrastinate"] = System(
            name="procrastinate", python=pp, cwd=PEERS_DIR,
            # imported, not run as __main__, so the app lives in its own module
            agent=[pp, "-c", "import sys, agent_procrastinate as a; a.cli(sys.argv[1:])"],
            pending_sql="SELECT EXISTS (SELECT 1 FROM procrastinate_jobs "
                        "WHERE status IN ('todo', 'doing'))",
            succeeded_sql="SELECT count(*) FROM procrastinate_jobs "
                          "WHERE status = 'succeeded' AND task_name = 'bench_noop'",
            drain_worker=[*proc_worker, "--concurrency", str(args.procrastinate_concurrency)],
            latency_worker=[*proc_worker, "--concurrency",
                            str(args.procrastinate_latency_concurrency)],
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
                          "WHERE status = 'successful' AND entrypoint = 'bench_noop'",
            drain_worker=[*pgq_worker, str(args.pgqueuer_batch_size)],
            latency_worker=[*pgq_worker, str(args.pgqueuer_latency_batch_size)],
            setup_cmds=[[pp, "-m", "pgqueuer", "install"], [pp, "-m", "pgqueuer", "autovac"]],
            settings=(f"drain: `batch_size={args.pgqueuer_batch_size}`; latency: "
                      f"`batch_size={args.pgqueuer_latency_batch_size}` (pgqueuer.run(), as "
                      "`pgq run` does); dequeue_timeout 30 s (default); one asyncpg "
                      "connection per worker (AsyncpgDriver), no max_concurrent_tasks, "
                      "uvloop (pgq run's default), durability `durable` (default), "
                      "`pgq autovac` applied"),
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


def scalar(url: str, query: str):
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchone()[0]


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


def run_system(system: System, args, procs: Processes, tmp: Path, rep: int) -> Result:
    result = Result()
    dbname = f"bench_{system.name}"
    url = db_url(args.database_url, dbname)
    tag = f"[{system.name}{f' #{rep + 1}' if args.repeat > 1 else ''}]"
    out = tmp / f"{system.name}-{rep}"
    out.mkdir()
    env = env_for(system, url, out)

    log(f"{tag} fresh database {dbname}")
    recreate_db(args.database_url, dbname)
    for cmd in system.setup_cmds or [[*system.agent, "setup"]]:
        run_agent(cmd, system.cwd, env, 120, f"{tag} schema ({' '.join(cmd[1:])})",
                  expect_json=False)

    phases = set(args.phases.split(","))
    if "enqueue" in phases:
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

    if "latency" in phases:
        latency(system, args, procs, url, env, out, tag, result)
    if not args.keep:
        drop_db(args.database_url, dbname)
    return result


def drain(system, args, procs, url, env, out, tag, result) -> None:
    (out / "drain").mkdir()
    env = env | {"BENCH_OUT_DIR": str(out / "drain")}
    poll = args.poll_ms / 1000.0
    workers = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(system.pending_sql)  # connected and planned before the clock starts
            spawned = time.time()
            workers = [procs.spawn(system.drain_worker, env, out / f"drain-worker-{i}.log",
                                   cwd=system.cwd) for i in range(WORKERS)]
            while conn.execute(system.pending_sql).fetchone()[0]:
                for w in workers:
                    if w.poll() is not None:
                        raise BenchError(f"{tag} drain worker {w.pid} exited with "
                                         f"{w.returncode}:\n{tail(w.log_path)}")
                if time.time() - spawned > args.timeout:
                    left = conn.execute(system.pending_sql.replace(
                        "SELECT EXISTS (SELECT 1", "SELECT (SELECT count(*)")).fetchone()[0]
                    raise BenchError(f"{tag} drain: {left} jobs still unfinished after "
                                     f"{args.timeout:.0f}s")
                time.sleep(poll)
            emptied = time.time()
    finally:
        procs.stop(workers)
    firsts = [float(p.read_text()) for p in (out / "drain").glob("first-*")]
    if not firsts:
        raise BenchError(f"{tag} drain: the queue emptied but no handler ran")
    first = min(firsts)
    done = scalar(url, system.succeeded_sql)
    if done != args.jobs:
        raise BenchError(f"{tag} drain: {done} jobs succeeded, expected {args.jobs}")
    if len(firsts) < WORKERS:
        result.notes.append(f"drain: only {len(firsts)} of {WORKERS} processes ran a job")
    result.drain_rate = args.jobs / (emptied - spawned)
    result.steady_rate = args.jobs / (emptied - first)
    result.start_seconds = first - spawned
    log(f"{tag} drain {args.jobs} with {WORKERS} processes: {emptied - spawned:.3f}s = "
        f"{result.drain_rate:,.0f} jobs/s (start {result.start_seconds:.2f}s; after the first "
        f"job {result.steady_rate:,.0f} jobs/s)")


def latency(system, args, procs, url, env, out, tag, result) -> None:
    lat_dir = out / "latency"
    lat_dir.mkdir()
    env = env | {"BENCH_OUT_DIR": str(lat_dir)}
    execute(url, "VACUUM ANALYZE")
    try:  # the drain's dirty pages are written now, not during the measurement
        execute(url, "CHECKPOINT")
    except psycopg.Error as exc:
        log(f"{tag} CHECKPOINT not allowed ({str(exc).strip()}): going on without it")
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
    probe = [str(python), "-c", "import procrastinate, pgqueuer, asyncpg"]
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
        raise BenchError(f"{venv}: procrastinate/pgqueuer still do not import")
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
    lines = [
        "## Queue benchmark: jobqueue vs procrastinate vs pgqueuer (and the bare floor)", "",
        f"- date: {info['date']}",
        f"- machine: {info['nproc']} cores ({info['cpu']}), load average at start "
        f"{info['load']}",
        f"- Postgres: {info['pg']} (synchronous_commit={info['sync']}, fsync={info['fsync']}, "
        f"shared_buffers={info['shared_buffers']}), on the same machine",
        f"- packages: {info['packages']}",
        f"- workload: (a) {args.jobs:,} no-op jobs enqueued in one batch call; (b) drained by "
        f"{WORKERS} worker processes; (c) {args.latency_jobs} single enqueues at "
        f"{args.rate:g}/s to {WORKERS} idle worker processes"
        + (f"; {args.repeat} repetitions: median (min-max) of rates, latency percentiles "
           "over all samples" if args.repeat > 1 else ""),
        "",
        "| system | batch enqueue jobs/s | drain jobs/s (2 procs, from spawn) | "
        "drain jobs/s after first job | worker start s | pickup p50 ms | p95 ms | p99 ms | "
        "max ms | enqueue call p50 ms | after it returned p50 ms |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, runs in results.items():
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
    lines += targets(results)
    lines += ["", "Settings:"]
    for name in results:
        lines.append(f"- {name}: {systems[name].settings}")
    notes = [f"- {name}: {note}" for name, runs in results.items()
             for r in runs for note in r.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    lines += ["", "Method: see the docstring of scripts/bench_queue.py. Command: `"
              + " ".join([Path(sys.executable).as_posix(), "scripts/bench_queue.py",
                          *sys.argv[1:]]) + "`"]
    return "\n".join(lines)


def targets(results: dict[str, list[Result]]) -> list[str]:
    """The project's targets for jobqueue, checked against this run's numbers."""
    if "jobqueue" not in results or not any(n in PEERS for n in results):
        return []

    def med(name: str, attr: str) -> float | None:
        got = [getattr(r, attr) for r in results[name] if getattr(r, attr) is not None]
        return statistics.median(got) if got else None

    def pct(name: str) -> dict[str, float]:
        return percentiles([v for r in results[name] for v in r.latencies])

    peers = [n for n in results if n in PEERS]
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
                                       "uvloop"])
        packages += (f"; peers (Python {peer.get('python', '?')}): procrastinate "
                     f"{peer.get('procrastinate', '?')} (psycopg {peer.get('psycopg', '?')}), "
                     f"pgqueuer {peer.get('pgqueuer', '?')} (asyncpg {peer.get('asyncpg', '?')},"
                     f" uvloop {peer.get('uvloop', '?')})")
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
    p.add_argument("--only", default=",".join(SYSTEMS), help="comma-separated systems")
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                   help="a database to connect to for CREATE/DROP DATABASE; each system gets "
                        "bench_<system> on the same server")
    p.add_argument("--phases", default="enqueue,drain,latency",
                   help="which of enqueue,drain,latency to run (drain needs enqueue)")
    p.add_argument("--repeat", type=int, default=1, help="run everything this many times")
    p.add_argument("--peers-venv", type=Path, default=Path("/tmp/venv-peers"))
    p.add_argument("--no-create-peers", action="store_true",
                   help="fail instead of creating a missing peers venv")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per enqueue or drain")
    p.add_argument("--poll-ms", type=float, default=5.0, help="drain: queue-empty poll period")
    p.add_argument("--keep", action="store_true", help="keep the databases and worker logs")
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
    unknown = set(args.only.split(",")) - set(SYSTEMS)
    if unknown:
        p.error(f"--only: unknown system(s) {', '.join(sorted(unknown))}")
    bad = set(args.phases.split(",")) - {"enqueue", "drain", "latency"}
    if bad:
        p.error(f"--phases: unknown phase(s) {', '.join(sorted(bad))}")
    if args.jobs < 1 or args.latency_jobs < 1 or args.rate <= 0 or args.repeat < 1:
        p.error("--jobs, --latency-jobs, --rate and --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = [s for s in SYSTEMS if s in args.only.split(",")]
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="bench_queue_"))

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        db_url(args.database_url, "x")
        peers = None
        if any(s in PEERS for s in wanted):
            peers = ensure_peers(args.peers_venv, not args.no_create_peers)
        info = machine_info(args, peers)
        systems = make_systems(args, peers)
        results: dict[str, list[Result]] = {name: [] for name in wanted}
        for rep in range(args.repeat):
            for name in wanted:
                results[name].append(run_system(systems[name], args, procs, tmp, rep))
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
