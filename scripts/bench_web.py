#!/usr/bin/env python
"""Benchmark the web API's POST /api/jobs under Gunicorn against a bare Flask floor.

    python scripts/bench_web.py          # full: 3 settings
    /tmp/venv/bin/python scripts/bench_web.py --duration 5 --settings 2x8 --tokens 1 \
        --profile-seconds 0                                              # quick look

What it does, all on 127.0.0.1:
1. Creates a fresh database (--db, default bench_web; dropped at the end unless --keep-db),
   migrates it with `jobqueue migrate`, and creates --clients API tokens with the write scope
   and a rate limit of RATE_LIMIT (1e9) requests per minute, so no request is throttled: every
   request still runs the real token_use UPDATE (authenticate + charge the bucket), it just
   never runs out.
2. For each Gunicorn setting WORKERSxTHREADS (--settings) and each app (--apps), starts
       gunicorn -c python:web.gunicorn_conf 'web:create_app()'
   with WEB_CONCURRENCY, GUNICORN_THREADS, PORT and DATABASE_URL set (the shipped config,
   unchanged), and for each token mode (--tokens: 1 = every client shares one token, whose row
   every request updates; N = client i uses token i mod N, the realistic case) drives --clients
   concurrent keep-alive clients that POST {"queue": "bench", "kind": "noop", "payload": {...}}
   for --duration seconds after a --warmup (which also fills each worker's connection pool).
   The jobs table is truncated and VACUUM ANALYZEd before each run.
3. The "bare" app is create_bare_app() below, served by the same command and config: Flask,
   one psycopg pool per worker (same size and connection options as jobqueue's), and per
   request only the token_use statement (jobqueue's own SQL: the token lookup and the bucket
   update are one UPDATE) and a one-row INSERT ... RETURNING id in autocommit. It is the floor:
   what any Flask app doing this work costs on this machine.
4. With --profile-seconds > 0, serves each of --profile-apps (jobqueue and bare) once more
   under --profile-setting and records its busiest Gunicorn worker with py-spy while the load
   runs: --gil (where the Python CPU goes), --idle (where a request thread's wall time goes)
   and an SVG flame graph; the report sets both apps side by side, with an estimate of the
   GIL-held microseconds per request (the worker's requests taken as its share of the CPU).

5. With --held STREAMS,POLLS (e.g. 200,50, issue 10's case), every jobqueue run is made twice:
   as above, and with STREAMS open SSE streams (`/api/jobs/<id>/events`) and POLLS open long
   polls (`?wait=60`) on a job nobody works, all from one more token, held for the whole run
   (opened after the warm-up; each process's cap is raised to hold them). Meanwhile, for every
   run, a probe asks GET /healthz on a new connection every 50 ms: the report gives its p50
   and p99 next to the POST figures, and how many held requests were still open at the end.

Keep-alive connections stay on the Gunicorn worker that accepted them, and the split is
random (e.g. 30/2): the report shows the connections each worker held mid-run and the CPU
seconds each one used. --wait-idle N waits up to N s for other work on the machine to drop
below --idle-cores before starting.

Load generator: wrk (Debian: apt-get install -y wrk) with scripts/bench_web.lua, one wrk
thread per client (-t C -c C) so each connection has its own token; --latency percentiles from
wrk's histogram. Without wrk (or with --generator python) an asyncio + aiohttp generator runs
in this process instead, which takes CPU from the server on a small machine. The report says
which one ran.

CPU accounting per run (from /proc): CPU ms per request spent by the Gunicorn processes, by
the Postgres backends of the bench database, by other Postgres processes (WAL writer etc. and
other databases), by the load generator, and the cores used by everything else on the machine
(other tests or benchmarks): a high "other" means the machine was busy and the run is noisy.

Output: progress on stderr; the Markdown report on stdout and in --out-dir (with Gunicorn
logs, results.json and the profile files). Gunicorn is stopped (SIGTERM, then SIGKILL to its
process group) whatever happens, and is also sent SIGTERM by the kernel if this script dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
LUA = SCRIPTS / "bench_web.lua"
RATE_LIMIT = 1_000_000_000  # requests per minute per token: never throttles a 30 s run
AIM_RPS, AIM_P99_MS = 1500, 50.0
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
BARE_INSERT = ("INSERT INTO jobqueue.jobs (queue, kind, payload, owner) "
               "VALUES (%s, %s, %s::jsonb, %s) RETURNING id")


class BenchError(Exception):
    """A step failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[bench_web {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the bare app (imported by Gunicorn as bench_web:create_bare_app()) --------------------------

def create_bare_app():
    """Flask + a psycopg pool; per request: token_use (auth + bucket) and one INSERT."""
    from flask import Flask, jsonify, request
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    from jobqueue import db
    from jobqueue.db.queries import q

    app = Flask("bench_bare")
    token_use = q("token_use")
    lock = threading.Lock()
    state: dict = {}

    def pool() -> ConnectionPool:
        # Made on first use, after Gunicorn's fork, like jobqueue's own pool.
        if "pool" not in state:
            with lock:
                if "pool" not in state:
                    state["pool"] = ConnectionPool(
                        os.environ["DATABASE_URL"], min_size=1,
                        max_size=int(os.environ.get("JOBQUEUE_POOL_MAX_SIZE", 10)),
                        kwargs=db.connect_kwargs() | {"row_factory": dict_row}, open=True,
                        name="bench-bare")
        return state["pool"]

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.post("/api/jobs")
    def create_job():
        _, _, token = request.headers.get("Authorization", "").partition(" ")
        token_hash = hashlib.sha256(token.strip().encode()).hexdigest()
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not body.get("queue") or not body.get("kind"):
            return jsonify(error="send a JSON object with queue and kind"), 400
        with pool().connection() as conn:
            row = conn.execute(token_use, {"hash": token_hash, "write": True}).fetchone()
            if row is None:
                return jsonify(error="unauthorized"), 401
            if not row["allowed"]:
                return jsonify(error="rate_limited"), 429
            job_id = conn.execute(BARE_INSERT, (
                body["queue"], body["kind"], json.dumps(body.get("payload", {})),
                row["owner"])).fetchone()["id"]
        response = jsonify(id=job_id, state="waiting", created=True)
        response.status_code = 201
        return response

    return app


# -- database -------------------------------------------------------------------------------

def with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "127.0.0.1") in LOCAL_HOSTS


def pg_connect(url: str):
    import psycopg
    from psycopg.rows import dict_row

    try:
        return psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=10)
    except psycopg.Error as exc:
        raise BenchError(f"cannot connect to Postgres at {url}: {exc}") from None


def create_database(admin_url: str, dbname: str) -> None:
    from psycopg import sql

    with pg_connect(admin_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(dbname)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def drop_database(admin_url: str, dbname: str) -> None:
    import psycopg
    from psycopg import sql

    try:
        with pg_connect(admin_url) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(dbname)))
    except (BenchError, psycopg.Error) as exc:
        log(f"could not drop database {dbname}: {exc}")


def migrate(db_url: str) -> None:
    exe = Path(sys.executable).parent / "jobqueue"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "jobqueue"]
    try:
        done = subprocess.run([*cmd, "migrate"], env=os.environ | {"DATABASE_URL": db_url},
                              capture_output=True, text=True, timeout=180, cwd=ROOT)
    except subprocess.TimeoutExpired:
        raise BenchError("jobqueue migrate took over 180 s") from None
    if done.returncode != 0:
        raise BenchError(f"jobqueue migrate failed ({done.returncode}): "
                         f"{(done.stderr or done.stdout).strip()[-2000:]}")


def create_tokens(db_url: str, count: int) -> list[str]:
    from jobqueue import tokens

    with pg_connect(db_url) as conn:
        return [tokens.create(conn, f"bench-{i:02d}", ["write"], rate_limit=RATE_LIMIT,
                              note="scripts/bench_web.py")[0] for i in range(count)]


def reset_tables(db_url: str) -> None:
    """Same starting point for every run: no jobs, token buckets full, fresh statistics."""
    with pg_connect(db_url) as conn:
        conn.execute("TRUNCATE jobqueue.jobs")
        conn.execute("UPDATE jobqueue.api_tokens SET level = rate_limit, updated_at = now()")
        conn.execute("VACUUM ANALYZE jobqueue.jobs, jobqueue.api_tokens")


def pg_facts(admin_url: str) -> dict:
    with pg_connect(admin_url) as conn:
        facts = {name: conn.execute(f"SHOW {name}").fetchone()[name] for name in (
            "server_version", "synchronous_commit", "fsync", "max_connections",
            "shared_buffers")}
        facts["connections_in_use"] = conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity").fetchone()["n"]
        facts["postmaster"] = 0
        with contextlib.suppress(Exception):
            data_dir = conn.execute("SHOW data_directory").fetchone()["data_directory"]
            facts["postmaster"] = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
    return facts


# -- Gunicorn -------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM when this script dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found += [int(c) for c in fh.read().split()]
    return found


class Server:
    """One Gunicorn master (the shipped config) and its workers, in their own process group."""

    live: list[Server] = []

    def __init__(self, app: str, workers: int, threads: int, db_url: str, log_path: Path,
                 port: int | None = None):
        self.app, self.workers, self.threads = app, workers, threads
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        spec = "web:create_app()" if app == "jobqueue" else "bench_web:create_bare_app()"
        self.cmd = [str(Path(sys.executable).parent / "gunicorn"), "-c",
                    "python:web.gunicorn_conf", spec]
        env = {k: v for k, v in os.environ.items() if k != "GUNICORN_ACCESS_LOG"}
        env.setdefault("JOBQUEUE_DEV", "1")  # a benchmark run: the signing secret may be stored
        env.update(DATABASE_URL=db_url, PORT=str(self.port), WEB_CONCURRENCY=str(workers),
                   GUNICORN_THREADS=str(threads),
                   # --held opens hundreds of streams from one token: caps out of the way.
                   JOBQUEUE_STREAMS_PER_TOKEN="100000", JOBQUEUE_STREAMS_PER_PROCESS="100000",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(SCRIPTS), str(ROOT),
                                                            env.get("PYTHONPATH")])))
        self.env = env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        log(f"starting {self.app} under gunicorn {self.workers}x{self.threads} "
            f"on 127.0.0.1:{self.port}")
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        Server.live.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"gunicorn exited with {self.proc.returncode} while starting; "
                                 f"{self.log_path}:\n{self.log_tail()}")
            if len(self.worker_pids()) >= self.workers and self._healthy():
                return
            time.sleep(0.2)
        raise BenchError(f"gunicorn did not answer /healthz within {timeout:.0f} s; "
                         f"{self.log_path}:\n{self.log_tail()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid) if self.proc else []

    def pids(self) -> set[int]:
        return {self.proc.pid, *self.worker_pids()} if self.proc else set()

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log(f"gunicorn {self.proc.pid} ignored SIGTERM for 30 s: SIGKILL")
        # Workers of a master that died first, or that hang: the whole process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self in Server.live:
            Server.live.remove(self)
        self.proc = None

    @classmethod
    def stop_all(cls) -> None:
        for server in list(cls.live):
            server.stop()


# -- CPU accounting -------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: str) -> tuple[int, float, str] | None:
    """(parent pid, cpu seconds, cmdline) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK, cmdline


def pg_group(pid: int, ppid: int, cmdline: str, dbname: str, postmaster: int) -> str | None:
    """Which share of the Postgres server this process is, if it is one of its processes."""
    if pid == postmaster:
        return "pg_shared"
    if ppid != postmaster:
        return None
    if dbname in cmdline.split():
        return "pg_bench"  # its backends (and autovacuum workers) for the bench database
    if "(" in cmdline or "[local]" in cmdline or "autovacuum worker" in cmdline:
        return None  # another database's backend: other work
    return "pg_shared"  # WAL writer, checkpointer, background writer, launchers


def cpu_snapshot(server_pids: set[int], dbname: str, postmaster: int) -> dict:
    with open("/proc/stat") as fh:
        jiffies = [int(x) for x in fh.readline().split()[1:]]
    idle = jiffies[3] + jiffies[4]
    groups: Counter = Counter()
    per_pid: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = _proc_cpu(entry)
        if info is None:
            continue
        ppid, seconds, cmdline = info
        group = "gunicorn" if int(entry) in server_pids else pg_group(
            int(entry), ppid, cmdline, dbname, postmaster)
        if group:
            groups[group] += seconds
        if int(entry) in server_pids:
            per_pid[int(entry)] = seconds
    usage_self = resource.getrusage(resource.RUSAGE_SELF)
    usage_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"t": time.monotonic(), "busy": (sum(jiffies[:8]) - idle) / TICK,
            "groups": groups, "per_pid": per_pid, "self": usage_self.ru_utime + usage_self.ru_stime,
            "children": usage_children.ru_utime + usage_children.ru_stime}


def cpu_delta(before: dict, after: dict, requests: int, generator: str) -> dict:
    elapsed = after["t"] - before["t"]
    used = {k: max(0.0, after["groups"][k] - before["groups"][k])
            for k in ("gunicorn", "pg_bench", "pg_shared")}
    # wrk is a reaped child (RUSAGE_CHILDREN); the python generator runs in this process.
    key = "children" if generator == "wrk" else "self"
    used["loadgen"] = after[key] - before[key]
    busy = after["busy"] - before["busy"]
    per_req = {k: 1000 * v / requests if requests else 0.0 for k, v in used.items()}
    return {"elapsed_s": elapsed, "cores_busy": busy / elapsed,
            "cores_other": max(0.0, busy - sum(used.values())) / elapsed,
            "ms_per_request": per_req}


def background_load(seconds: float = 3.0) -> dict:
    """CPU used by everything on the machine before this script starts any load."""
    with open("/proc/stat") as fh:
        a = [int(x) for x in fh.readline().split()[1:]]
    time.sleep(seconds)
    with open("/proc/stat") as fh:
        b = [int(x) for x in fh.readline().split()[1:]]
    busy = (sum(b[:8]) - b[3] - b[4]) - (sum(a[:8]) - a[3] - a[4])
    return {"cores_busy": busy / TICK / seconds, "loadavg": os.getloadavg()}


# -- load generators ------------------------------------------------------------------------

def request_body(payload_bytes: int) -> str:
    payload = {"n": 1, "note": "x" * max(0, payload_bytes)}
    return json.dumps({"queue": "bench", "kind": "noop", "payload": payload},
                      separators=(",", ":"))


def run_wrk(url: str, tokens: list[str], clients: int, threads: int, seconds: float,
            body: str, timeout_s: float) -> dict:
    cmd = ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{seconds:g}s",
           "--timeout", f"{timeout_s:g}s", "--latency", "-s", str(LUA), url + "/api/jobs"]
    env = os.environ | {"BENCH_TOKENS": ",".join(tokens), "BENCH_BODY": body}
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=seconds + timeout_s + 60, preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {seconds + timeout_s + 60:.0f} s") from None
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-1500:]}\n"
                         f"{done.stdout.strip()[-1500:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    socket_errors = sum(raw["errors"][k] for k in ("connect", "read", "write", "timeout"))
    statuses = {int(k): v for k, v in raw["statuses"].items()}
    return {
        "requests": raw["requests"], "seconds": raw["duration_us"] / 1e6,
        "p50_ms": raw["p50_us"] / 1000, "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000, "max_ms": raw["max_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000, "statuses": statuses,
        "non_201": sum(v for k, v in statuses.items() if k != 201) + socket_errors,
        "socket_errors": raw["errors"],
    }


def run_python(url: str, tokens: list[str], clients: int, seconds: float, body: str,
               timeout_s: float) -> dict:
    try:
        import aiohttp
    except ImportError:
        raise BenchError("neither wrk nor aiohttp is available: apt-get install -y wrk "
                         "or pip install aiohttp") from None

    async def client(index: int, deadline: float, latencies: list, statuses: Counter):
        headers = {"Content-Type": "application/json",
                   "Authorization": f"Bearer {tokens[index % len(tokens)]}"}
        connector = aiohttp.TCPConnector(limit=1)
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    async with session.post(url + "/api/jobs", data=body,
                                            headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except (TimeoutError, aiohttp.ClientError) as exc:
                    status = type(exc).__name__
                latencies.append(time.perf_counter() - start)
                statuses[status] += 1

    async def main():
        latencies: list[float] = []
        statuses: Counter = Counter()
        start = time.monotonic()
        await asyncio.gather(*(client(i, start + seconds, latencies, statuses)
                               for i in range(clients)))
        return latencies, statuses, time.monotonic() - start

    latencies, statuses, elapsed = asyncio.run(main())
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return 1000 * latencies[min(len(latencies) - 1, max(0, round(p / 100 * len(latencies))
                                                             - 1))]

    return {
        "requests": len(latencies), "seconds": elapsed, "p50_ms": pct(50), "p95_ms": pct(95),
        "p99_ms": pct(99), "max_ms": 1000 * latencies[-1] if latencies else float("nan"),
        "mean_ms": 1000 * statistics.fmean(latencies) if latencies else float("nan"),
        "statuses": {str(k): v for k, v in statuses.items()},
        "non_201": sum(v for k, v in statuses.items() if k != 201),
    }


def generate(args, url: str, tokens: list[str], seconds: float) -> dict:
    body = request_body(args.payload_bytes)
    if args.generator_used == "wrk":
        return run_wrk(url, tokens, args.clients, args.wrk_threads or args.clients, seconds,
                       body, args.request_timeout)
    return run_python(url, tokens, args.clients, seconds, body, args.request_timeout)


# -- held requests and the /healthz probe -----------------------------------------------------

class HeldRequests:
    """STREAMS SSE streams and POLLS `?wait=60` long polls on one job that nobody works, all
    from one token, each on a socket of its own, open until close()."""

    def __init__(self, url: str, token: str, streams: int, polls: int):
        self.url, self.token = url, token
        self.streams, self.polls = streams, polls
        self.socks: list[socket.socket] = []

    def open(self) -> None:
        request = urllib.request.Request(
            self.url + "/api/jobs", method="POST",
            data=json.dumps({"queue": "bench-held-nobody", "kind": "noop"}).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            job_id = json.loads(resp.read())["id"]
        paths = [f"/api/jobs/{job_id}?wait=60"] * self.polls + \
            [f"/api/jobs/{job_id}/events"] * self.streams
        port = int(self.url.rsplit(":", 1)[1])
        for path in paths:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                         f"{self.token}\r\n\r\n".encode())
            self.socks.append(sock)
        # An SSE stream answers its head and first event at once; a long poll only when its
        # job ends: read the streams' first bytes, so they are all held before the run.
        for sock in self.socks[self.polls:]:
            head = sock.recv(65536)
            if not head.startswith(b"HTTP/1.1 200"):
                raise BenchError(f"an SSE stream was refused: {head[:200]!r}")

    def still_open(self) -> int:
        """How many are still held: a stream not closed by the server (later bytes are
        keep-alive comments), a long poll not answered."""
        count = 0
        for index, sock in enumerate(self.socks):
            sock.setblocking(False)
            try:
                data = sock.recv(65536, socket.MSG_PEEK)
                count += bool(data) and index >= self.polls
            except BlockingIOError:
                count += 1
            except OSError:
                pass
        return count

    def close(self) -> None:
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.close()
        self.socks.clear()


class HealthProbe(threading.Thread):
    """GET /healthz on a new connection every `interval` seconds; latencies in ms."""

    def __init__(self, url: str, interval: float = 0.05, timeout: float = 10.0):
        super().__init__(daemon=True)
        self.url, self.interval, self.timeout = url, interval, timeout
        self.latencies: list[float] = []
        self.errors = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=self.timeout) as r:
                    r.read()
                self.latencies.append(1000 * (time.perf_counter() - start))
            except (urllib.error.URLError, OSError):
                self.errors += 1

    def summary(self) -> dict:
        self.stopped.set()
        self.join()
        values = sorted(self.latencies)

        def pct(p: float) -> float:
            return values[min(len(values) - 1, max(0, round(p / 100 * len(values)) - 1))] \
                if values else float("nan")

        return {"healthz_p50_ms": pct(50), "healthz_p99_ms": pct(99),
                "healthz_max_ms": values[-1] if values else float("nan"),
                "healthz_requests": len(values), "healthz_errors": self.errors}


# -- one measured run -----------------------------------------------------------------------

def connections_per_worker(server: Server) -> list[int] | None:
    """Established client connections each worker holds now (via ss), busiest first."""
    if not shutil.which("ss"):
        return None
    try:
        out = subprocess.run(["ss", "-tnpH", "state", "established",
                              f"( sport = :{server.port} )"],
                             capture_output=True, text=True, timeout=10).stdout
    except (subprocess.TimeoutExpired, OSError):
        return None
    return sorted((out.count(f"pid={pid},") for pid in server.worker_pids()), reverse=True)


def measure(args, server: Server, tokens: list[str], db_url: str,
            held: HeldRequests | None = None) -> dict:
    reset_tables(db_url)
    if args.warmup > 0:
        generate(args, server.url, tokens, args.warmup)
    reset_tables(db_url)
    if held is not None:
        held.open()
    probe = HealthProbe(server.url)
    probe.start()
    load_before = os.getloadavg()
    # Keep-alive connections stay with the worker that accepted them: count them mid-run.
    seen: dict = {}
    timer = threading.Timer(args.duration / 2, lambda: seen.update(
        conns=connections_per_worker(server)))
    workers = server.worker_pids()
    before = cpu_snapshot(server.pids(), args.db, args.postmaster)
    timer.start()
    try:
        result = generate(args, server.url, tokens, args.duration)
    finally:
        timer.cancel()
        health = probe.summary()
        if held is not None:
            result_held = (held.streams, held.polls, held.still_open())
            held.close()
    after = cpu_snapshot(server.pids(), args.db, args.postmaster)
    result.update(health)
    result["held"] = result_held if held is not None else (0, 0, 0)
    result["rps"] = result["requests"] / result["seconds"] if result["seconds"] else 0.0
    result["cpu"] = cpu_delta(before, after, result["requests"], args.generator_used)
    result["conns_per_worker"] = seen.get("conns")
    result["worker_cpu_s"] = sorted((round(after["per_pid"].get(p, 0.0)
                                           - before["per_pid"].get(p, 0.0), 1)
                                     for p in workers), reverse=True)
    result["loadavg_before"], result["loadavg_after"] = load_before, os.getloadavg()
    return result


# -- profiling ------------------------------------------------------------------------------

# (label, function, file substring). A function matches by its qualified name or its last
# component (py-spy writes "Class.method" and "f.<locals>.g"). Indentation shows nesting.
MARKERS = [
    ("gunicorn: one request, parse to write (ThreadWorker.handle)", "ThreadWorker.handle",
     "gthread"),
    ("  HTTP request parsing (gunicorn Parser)", "Parser.__next__", "gunicorn"),
    ("  Flask wsgi_app (context, session, routing, dispatch, response)", "Flask.wsgi_app",
     "flask"),
    ("    Flask session open (SessionInterface.open_session)", "open_session", ""),
    ("    URL routing (RequestContext.match_request)", "match_request", "flask"),
    ("    jobqueue @require: auth + view", "wrapped", "web/auth"),
    ("      check_token_hash (token_use UPDATE)", "check_token_hash", "web/auth"),
    ("      @operation: read + check the body (pydantic)", "_request_body", "web/contract"),
    ("      create_job view (jobqueue)", "create_job", "web/api"),
    ("        JobSpec(...) dataclass init", "JobSpec.__init__", ""),
    ("        Client.enqueue_spec (pool + INSERT)", "Client.enqueue_spec", "jobqueue/client"),
    ("          _validated -> JobSpec.validated_row", "_validated", "jobqueue/client"),
    ("          _insert (column arrays, params, execute)", "_insert", "jobqueue/client"),
    ("          explicit BEGIN/COMMIT (Connection.transaction)", "Connection.transaction",
     "psycopg"),
    ("        Client.get (the get after insert)", "Client.get", "jobqueue/client"),
    ("    create_job view (bare)", "create_job", "bench_web"),
    ("      request.get_json", "get_json", "werkzeug"),
    ("    flask jsonify", "jsonify", "flask"),
    ("    after_request: _rate_headers", "_rate_headers", "web/"),
    ("  gunicorn Response.write (headers + send)", "Response.write", "gunicorn"),
    ("pool: ConnectionPool.getconn", "ConnectionPool.getconn", "psycopg_pool"),
    ("pool: ConnectionPool.putconn", "ConnectionPool.putconn", "psycopg_pool"),
    ("psycopg: Cursor.execute (all statements)", "Cursor.execute", "psycopg"),
    ("psycopg: waiting on the server (Connection.wait)", "Connection.wait", "psycopg"),
    ("gunicorn main thread: event loop (accept, keep-alive polling)", "ThreadWorker.run",
     "gthread"),
    ("psycopg_pool background threads", "ConnectionPool.worker", "psycopg_pool"),
]
IDLE = ("idle: executor thread waiting for a request", None, None)


def parse_frame(frame: str) -> tuple[str, str]:
    """py-spy raw frame 'func (path/file.py)' or 'func (path/file.py:12)' -> (func, path)."""
    name, _, rest = frame.partition(" (")
    return name.strip(), rest.rstrip(")").rsplit(":", 1)[0]


def read_stacks(raw_path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    with contextlib.suppress(OSError):
        for line in raw_path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks.append(([parse_frame(f) for f in stack.split(";")], int(count)))
    return stacks


def has(frames: list[tuple[str, str]], name: str, where: str) -> bool:
    return any((func == name or func.endswith("." + name)) and where in path
               for func, path in frames)


def share(stacks, name: str | None, where: str | None) -> float:
    total = sum(c for _, c in stacks)
    if not total:
        return 0.0
    if name is None:  # executor threads parked in the work queue
        hits = sum(c for frames, c in stacks if not has(frames, "_WorkItem.run", ""))
    else:
        hits = sum(c for frames, c in stacks if has(frames, name, where))
    return hits / total


def area_of(path: str) -> str:
    for name in ("jobqueue/", "web/", "bench_web", "flask", "werkzeug", "psycopg_pool",
                 "psycopg", "gunicorn", "blinker", "json", "threading", "selectors"):
        if name in path:
            return name.rstrip("/")
    return "other (stdlib, <string>)"


def call_tree(stacks, min_share: float = 0.01) -> str:
    total = sum(c for _, c in stacks) or 1
    tree: dict = {}
    for frames, count in stacks:
        node = tree
        for frame in frames:
            child = node.setdefault(frame, {"n": 0, "kids": {}})
            child["n"] += count
            node = child["kids"]
    lines: list[str] = []

    def walk(node: dict, depth: int) -> None:
        for (func, path), child in sorted(node.items(), key=lambda kv: -kv[1]["n"]):
            if child["n"] / total >= min_share:
                lines.append(f"{100 * child['n'] / total:5.1f}%  {'  ' * depth}{func} ({path})")
                walk(child["kids"], depth + 1)

    walk(tree, 0)
    return "\n".join(lines) + "\n"


def _worker_cpu(pids: list[int]) -> dict[int, float]:
    return {p: (_proc_cpu(str(p)) or (0, 0.0, ""))[1] for p in pids}


def profile_app(args, app: str, db_url: str, tokens: list[str], out_dir: Path) -> dict:
    """Record the busiest worker of `app` under load: --gil (CPU), --idle (wall), SVG."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    workers, threads = args.profile_setting
    server = Server(app, workers, threads, db_url,
                    out_dir / f"gunicorn-profile-{app}-{workers}x{threads}.log")
    seconds, rate = args.profile_seconds, 100
    paths = {"cpu": out_dir / f"profile-{app}-cpu.txt",
             "wall": out_dir / f"profile-{app}-wall.txt",
             "svg": out_dir / f"profile-{app}-cpu.svg"}
    recordings = [("cpu", "raw", ["--gil"]), ("wall", "raw", ["--idle"]),
                  ("svg", "flamegraph", ["--gil"])]
    load_seconds = len(recordings) * (seconds + 1) + 8
    result: dict = {}
    out: dict = {"app": app, "paths": paths, "seconds": seconds, "rate": rate}
    try:
        server.start()
        reset_tables(db_url)
        generate(args, server.url, tokens, max(args.warmup, 2))
        loader = threading.Thread(target=lambda: result.update(
            generate(args, server.url, tokens, load_seconds)), daemon=True)
        loader.start()
        # Keep-alive connections can pile up on one worker: profile the busiest one.
        time.sleep(1)
        pids = server.worker_pids()
        first = _worker_cpu(pids)
        time.sleep(2)
        second = _worker_cpu(pids)
        worker = max(pids, key=lambda p: second[p] - first[p])
        out.update(worker=worker, workers=len(pids), conns=connections_per_worker(server))
        log(f"profiling {app} worker {worker}, the busiest (connections per worker "
            f"{out['conns']}), {len(recordings)} x {seconds:g} s")
        for name, fmt, flags in recordings:
            cmd = [pyspy, "record", "-d", f"{seconds:g}", "-r", str(rate), "-p", str(worker),
                   "-f", fmt, "-o", str(paths[name]), "--nolineno", *flags]
            before = _worker_cpu(pids)
            try:
                done = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=seconds + 60)
            except subprocess.TimeoutExpired:
                raise BenchError(f"py-spy ({name}) did not finish in time") from None
            if done.returncode != 0:
                raise BenchError(f"py-spy ({name}) failed ({done.returncode}): "
                                 f"{done.stderr.strip()[-1000:]}")
            if name == "cpu":  # the worker's share of the requests, by its share of the CPU
                after = _worker_cpu(pids)
                used = {p: after[p] - before[p] for p in pids}
                out["cpu_share"] = used[worker] / (sum(used.values()) or 1)
        loader.join(timeout=load_seconds + args.request_timeout + 90)
    finally:
        server.stop()
    out["rps"] = result["requests"] / result["seconds"] if result.get("seconds") else 0.0
    out["cpu_stacks"] = read_stacks(paths["cpu"])
    out["wall_stacks"] = [(f, c) for f, c in read_stacks(paths["wall"])
                          if has(f, "_worker", "concurrent/futures")]
    samples = sum(c for _, c in out["cpu_stacks"])
    out["gil_share"] = samples / (seconds * rate)
    # GIL-held seconds per request this worker served (its requests ~ rps x its CPU share).
    served = out["rps"] * seconds * out.get("cpu_share", 0.0)
    out["gil_us_per_request"] = 1e6 * samples / rate / served if served else float("nan")
    (out_dir / f"profile-{app}-cpu-tree.txt").write_text(call_tree(out["cpu_stacks"]))
    (out_dir / f"profile-{app}-wall-tree.txt").write_text(call_tree(out["wall_stacks"]))
    return out


def render_profiles(profiles: list[dict], args) -> str:
    w, t = args.profile_setting
    lines = [f"gunicorn {w}x{t}, {args.clients} clients, {args.profile_tokens} token(s); the "
             "busiest worker of each app, py-spy at 100 Hz (it pauses the worker to read it, "
             "so req/s drop while recording).", ""]
    for p in profiles:
        lines.append(
            f"- {p['app']}: worker {p['worker']} of {p['workers']} (connections per worker "
            f"{p['conns']}), {p['rps']:,.0f} req/s overall while recorded; it held the GIL "
            f"{100 * p['gil_share']:.0f} % of the time (100 % = saturated: more threads "
            f"cannot help, only more processes or less Python), "
            f"≈ {p['gil_us_per_request']:,.0f} µs of GIL per request. Files: "
            f"{p['paths']['svg']}, {p['paths']['cpu']}, {p['paths']['wall']}")
    names = [p["app"] for p in profiles]
    lines += ["", "**CPU: where the GIL-holding time goes** (py-spy --gil, inclusive, nested; "
              "µs per request ≈ share times the GIL µs per request; py-spy's pauses inflate "
              "these µs: the unprofiled gunicorn CPU per request is in the CPU table)", "",
              "| where | " + " | ".join(f"{n} % | {n} ≈µs/req" for n in names) + " |",
              "| --- |" + " ---: | ---: |" * len(names)]
    for label, name, where in MARKERS:
        cells = []
        for p in profiles:
            s = share(p["cpu_stacks"], name, where)
            cells += [f"{100 * s:.1f}", f"{s * p['gil_us_per_request']:,.0f}"]
        if any(c not in ("0.0", "0") for c in cells):
            indent = len(label) - len(label.lstrip())
            lines.append(f"| {'&nbsp;' * indent}{label.strip()} | " + " | ".join(cells) + " |")
    for p in profiles:
        self_time: Counter = Counter()
        by_area: Counter = Counter()
        for frames, count in p["cpu_stacks"]:
            func, path = frames[-1]
            self_time[f"{func} ({path})"] += count
            by_area[area_of(path)] += count
        total = sum(by_area.values()) or 1
        lines += ["", f"{p['app']}: self time by package: " + ", ".join(
            f"{n} {100 * c / total:.0f} %" for n, c in by_area.most_common(10)),
            f"{p['app']}: top self-time functions: " + ", ".join(
            f"`{n}` {100 * c / total:.1f} %" for n, c in self_time.most_common(10))]
    lines += ["", "**Wall clock of the request threads** (py-spy --idle: every gthread executor "
              "thread, busy or not; a thread waiting for the GIL shows in the frame it waits "
              "in)", "", "| where | " + " | ".join(f"{n} %" for n in names) + " |",
              "| --- |" + " ---: |" * len(names)]
    for label, name, where in [IDLE, *MARKERS[:-2]]:
        cells = [f"{100 * share(p['wall_stacks'], name, where):.1f}" for p in profiles]
        if any(c != "0.0" for c in cells):
            indent = len(label) - len(label.lstrip())
            lines.append(f"| {'&nbsp;' * indent}{label.strip()} | " + " | ".join(cells) + " |")
    lines += ["", f"Call trees (nodes >= 1 %): {profiles[0]['paths']['cpu'].parent}/"
              "profile-APP-{cpu,wall}-tree.txt"]
    return "\n".join(lines) + "\n"


def profile(args, db_url: str, tokens: list[str], out_dir: Path) -> str:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        return "py-spy not found (pip install py-spy): no profile.\n"
    profiles = [profile_app(args, app, db_url, tokens, out_dir) for app in args.profile_apps]
    return render_profiles(profiles, args)


# -- report ---------------------------------------------------------------------------------

def machine() -> dict:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"nproc": os.cpu_count(), "cpu": model, "mem_gib": round(mem_gib, 1)}


def gunicorn_version() -> str:
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        return version("gunicorn")
    return "?"


def code_version() -> str:
    """The commit measured, and whether the app's code differs from it (others edit the tree)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, timeout=10,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "web", "jobqueue", "sql"],
                               cwd=ROOT, timeout=10, capture_output=True, text=True).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no git)"
    return f"{head or '?'}" + (" + uncommitted changes in web/, jobqueue/ or sql/" if dirty
                              else " (web/, jobqueue/, sql/ unchanged)")


def report(args, runs: list[dict], facts: dict, background: dict, profile_text: str | None,
           started: str) -> str:
    mach = machine()
    mach_s = f"{mach['nproc']} x {mach['cpu']}"
    lines = [
        f"## POST /api/jobs under Gunicorn — {started}", "",
        f"Machine: nproc {mach['nproc']}, {mach['cpu']}, {mach['mem_gib']} GiB; Python "
        f"{platform.python_version()}, Gunicorn {gunicorn_version()} (gthread, shipped "
        f"web/gunicorn_conf.py), Postgres {facts['server_version']} on 127.0.0.1 "
        f"(synchronous_commit={facts['synchronous_commit']}, fsync={facts['fsync']}, "
        f"shared_buffers={facts['shared_buffers']}). Code: git {args.code_version}.",
        f"Load: {args.clients} concurrent keep-alive clients, {args.duration:g} s per run after "
        f"{args.warmup:g} s warm-up, body {len(request_body(args.payload_bytes))} bytes; "
        f"generator **{args.generator_used}**"
        + (f" (-t {args.wrk_threads or args.clients} -c {args.clients}, scripts/bench_web.lua)"
           if args.generator_used == "wrk" else " (asyncio + aiohttp in the bench process)")
        + f"; tokens with rate_limit {RATE_LIMIT:,}/min (never throttles).",
        f"Before the runs: load average {background['loadavg'][0]:.2f} / "
        f"{background['loadavg'][1]:.2f} / {background['loadavg'][2]:.2f}, "
        f"{background['cores_busy']:.2f} of {mach['nproc']} cores busy with other work.", "",
        "| date | machine | app | gunicorn wxt | tokens | held SSE+polls (open at end) "
        "| req/s | p50 ms | p95 ms | p99 ms | max ms | errors (non-201) | requests "
        "| /healthz p50 / p99 ms | load avg before→after |",
        "| --- | --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- | --- |",
    ]
    for r in runs:
        streams, polls, still = r.get("held", (0, 0, 0))
        held = f"{streams}+{polls} ({still})" if streams or polls else "none"
        lines.append(
            f"| {r['date']} | {mach_s} | {r['app']} | {r['workers']}x{r['threads']} | "
            f"{r['tokens']} | {held} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | "
            f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['non_201']} | "
            f"{r['requests']:,} | {r['healthz_p50_ms']:.1f} / {r['healthz_p99_ms']:.1f}"
            f"{' (' + str(r['healthz_errors']) + ' failed)' if r['healthz_errors'] else ''} | "
            f"{r['loadavg_before'][0]:.2f}→{r['loadavg_after'][0]:.2f} |")
    lines += ["", "CPU per request (ms) during each run, and cores used by everything else:", "",
              "| app | wxt | tokens | gunicorn | postgres backends (bench db) "
              "| postgres shared (WAL writer etc.) | load generator | total "
              "| other work (cores) | connections per worker | CPU s per worker |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in runs:
        ms, cpu = r["cpu"]["ms_per_request"], r["cpu"]
        lines.append(
            f"| {r['app']} | {r['workers']}x{r['threads']} | {r['tokens']} | "
            f"{ms['gunicorn']:.2f} | {ms['pg_bench']:.2f} | {ms['pg_shared']:.2f} | "
            f"{ms['loadgen']:.2f} | {sum(ms.values()):.2f} | {cpu['cores_other']:.2f} | "
            f"{'/'.join(map(str, r.get('conns_per_worker') or [])) or '?'} | "
            f"{'/'.join(f'{x:g}' for x in r.get('worker_cpu_s') or [])} |")
    lines += ["", *verdict(args, runs)]
    bad = [r for r in runs if r["non_201"]]
    for r in bad:
        lines.append(f"- errors in {r['app']} {r['workers']}x{r['threads']} {r['tokens']} "
                     f"token(s): statuses {r['statuses']} {r.get('socket_errors', '')}")
    if profile_text:
        lines += ["", "### Profiles: one Gunicorn worker of each app", "", profile_text]
    return "\n".join(lines) + "\n"


def verdict(args, runs: list[dict]) -> list[str]:
    out = []
    busy = [r for r in runs if r["cpu"]["cores_other"] > 0.2]
    if busy:
        out.append(f"- **Machine busy**: other work used > 0.2 cores during {len(busy)} of "
                   f"{len(runs)} runs (column 'other work'): those numbers are low and noisy.")
    for app in ("jobqueue", "bare"):
        mine = [r for r in runs if r["app"] == app]
        if not mine:
            continue
        realistic = max(r["tokens"] for r in mine)
        groups: dict = defaultdict(list)
        for r in mine:
            if r["tokens"] == realistic:
                groups[(r["workers"], r["threads"])].append(r)
        summary = {key: (statistics.median(r["rps"] for r in rs),
                         statistics.median(r["p99_ms"] for r in rs)) for key, rs in groups.items()}
        meeting = {k: v for k, v in summary.items() if v[1] < AIM_P99_MS}
        (w, t), (rps, p99) = max((meeting or summary).items(), key=lambda kv: kv[1][0])
        aim = "meets" if rps > AIM_RPS and p99 < AIM_P99_MS else "misses"
        out.append(f"- best {app} setting ({realistic} token(s)): **{w}x{t}**, {rps:,.0f} req/s, "
                   f"p99 {p99:.1f} ms — {aim} the aim (> {AIM_RPS:,} req/s, p99 < "
                   f"{AIM_P99_MS:.0f} ms).")
    jq = {(r["workers"], r["threads"], r["tokens"]): r for r in runs if r["app"] == "jobqueue"}
    for r in runs:
        other = jq.get((r["workers"], r["threads"], r["tokens"]))
        if r["app"] == "bare" and other and r["rps"]:
            out.append(f"- {r['workers']}x{r['threads']}, {r['tokens']} token(s): jobqueue "
                       f"serves {100 * other['rps'] / r['rps']:.0f} % of the bare app's req/s.")
    return out


# -- main -----------------------------------------------------------------------------------

def parse_setting(text: str) -> tuple[int, int]:
    try:
        workers, threads = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write WORKERSxTHREADS, e.g. 2x8") from None
    if workers < 1 or threads < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: workers and threads must be >= 1")
    return workers, threads


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                   help="an admin connection to the local server (default: %(default)s)")
    p.add_argument("--db", default="bench_web", help="database to create and drop")
    p.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    p.add_argument("--settings", default="2x8,3x8,4x4",
                   help="Gunicorn WORKERSxTHREADS to try, comma-separated (default %(default)s)")
    p.add_argument("--apps", default="jobqueue,bare",
                   help="which apps: jobqueue, bare (default %(default)s)")
    p.add_argument("--tokens", default="1,32",
                   help="token modes: 1 = one shared token; N = N tokens, client i uses token "
                        "i mod N (default %(default)s)")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per run (default 30)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load first")
    p.add_argument("--repeat", type=int, default=1, help="runs per combination (default 1)")
    p.add_argument("--payload-bytes", type=int, default=16,
                   help="size of the payload's filler string (default 16)")
    p.add_argument("--request-timeout", type=float, default=10.0,
                   help="a request slower than this counts as an error (default 10 s)")
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto",
                   help="auto: wrk if installed, else the asyncio+aiohttp generator")
    p.add_argument("--wrk-threads", type=int, default=0,
                   help="wrk threads (default: one per client, so each has its own token)")
    p.add_argument("--profile-seconds", type=float, default=10.0,
                   help="py-spy recording length per format; 0 skips the profile")
    p.add_argument("--profile-setting", type=parse_setting, default=(2, 8),
                   help="Gunicorn setting to profile jobqueue under (default 2x8, shipped)")
    p.add_argument("--profile-apps", default="jobqueue,bare",
                   help="apps to profile, side by side (default %(default)s)")
    p.add_argument("--profile-tokens", type=int, default=0,
                   help="token mode while profiling (default: the largest of --tokens)")
    p.add_argument("--held", default="",
                   help="STREAMS,POLLS: also run every jobqueue case with this many SSE "
                        "streams and ?wait= long polls open from one token (e.g. 200,50)")
    p.add_argument("--wait-idle", type=float, default=0.0,
                   help="wait up to this many seconds for other work to drop below "
                        "--idle-cores before starting (default 0: start at once)")
    p.add_argument("--idle-cores", type=float, default=0.3,
                   help="cores of other work that count as idle (default 0.3)")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="logs, results.json, report.md, profiles (default /tmp/bench_web_TIME)")
    args = p.parse_args(argv)
    try:
        args.settings = [parse_setting(s) for s in args.settings.split(",") if s.strip()]
        args.token_modes = [int(t) for t in args.tokens.split(",") if t.strip()]
    except (argparse.ArgumentTypeError, ValueError) as exc:
        p.error(str(exc))
    if not is_local(args.pg_url):
        p.error("--pg-url must point at this machine (127.0.0.1)")
    try:
        args.held = tuple(int(x) for x in args.held.split(",")) if args.held.strip() else None
    except ValueError:
        p.error(f"--held {args.held!r}: write STREAMS,POLLS, e.g. 200,50")
    if args.held is not None and (len(args.held) != 2 or min(args.held) < 0):
        p.error("--held: two numbers, STREAMS,POLLS, e.g. 200,50")
    args.apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    if bad := [a for a in args.apps if a not in ("jobqueue", "bare")]:
        p.error(f"--apps: unknown {bad}")
    if not args.settings or not args.token_modes or min(args.token_modes) < 1:
        p.error("--settings and --tokens need at least one valid value each")
    if args.clients < 1 or args.duration <= 0 or args.repeat < 1:
        p.error("--clients, --duration and --repeat must be positive")
    args.profile_tokens = args.profile_tokens or max(args.token_modes)
    args.profile_apps = [a.strip() for a in args.profile_apps.split(",") if a.strip()]
    if bad := [a for a in args.profile_apps if a not in ("jobqueue", "bare")]:
        p.error(f"--profile-apps: unknown {bad}")
    if args.generator == "python" or (args.generator == "auto" and not shutil.which("wrk")):
        args.generator_used = "python"
    elif shutil.which("wrk"):
        args.generator_used = "wrk"
    else:
        p.error("--generator wrk: wrk is not installed (apt-get install -y wrk)")
    if args.generator_used == "wrk" and not LUA.is_file():
        p.error(f"{LUA} is missing")
    return args


def _on_signal(signum, _frame):
    log(f"{signal.Signals(signum).name}: stopping Gunicorn and cleaning up")
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    out_dir = args.out_dir or Path(f"/tmp/bench_web_{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    db_url = with_dbname(args.pg_url, args.db)
    runs: list[dict] = []
    profile_text = None
    created = False
    try:
        background = background_load()
        waited_until = time.monotonic() + args.wait_idle
        while background["cores_busy"] > args.idle_cores and time.monotonic() < waited_until:
            log(f"waiting for the machine to calm down: {background['cores_busy']:.2f} cores "
                f"busy with other work (load average {background['loadavg'][0]:.2f})")
            time.sleep(10)
            background = background_load(5.0)
        log(f"machine before start: load average {background['loadavg'][0]:.2f}, "
            f"{background['cores_busy']:.2f} cores busy; generator {args.generator_used}; "
            f"output in {out_dir}")
        facts = pg_facts(args.pg_url)
        args.postmaster = facts["postmaster"]
        if not args.postmaster:
            log("warning: cannot find the postmaster's pid: Postgres CPU is not attributed")
        need = max(w for w, _ in args.settings) * int(os.environ.get(
            "JOBQUEUE_POOL_MAX_SIZE", 10)) + 5
        free = int(facts["max_connections"]) - int(facts["connections_in_use"])
        if need > free:
            log(f"warning: up to {need} connections needed, {free} free on the server")
        args.code_version = code_version()
        create_database(args.pg_url, args.db)
        created = True
        migrate(db_url)
        tokens = create_tokens(db_url, max([*args.token_modes, args.profile_tokens]) + 1)
        held_token = tokens.pop()  # the held requests' own token
        for workers, threads in args.settings:
            for app in args.apps:
                server = Server(app, workers, threads, db_url,
                                out_dir / f"gunicorn-{app}-{workers}x{threads}.log")
                try:
                    server.start()
                    cases = [None] + ([args.held] if args.held and app == "jobqueue" else [])
                    for n_tokens, rep, case in ((n, r, c) for n in args.token_modes
                                                for c in cases for r in range(args.repeat)):
                        held = None if case is None else HeldRequests(
                            server.url, held_token, *case)
                        log(f"run: {app} {workers}x{threads}, {n_tokens} token(s), "
                            f"{args.clients} clients, {args.duration:g} s"
                            + (f", {case[0]} streams + {case[1]} long polls held"
                               if case else "")
                            + (f" (repeat {rep + 1})" if args.repeat > 1 else ""))
                        result = measure(args, server, tokens[:n_tokens], db_url, held)
                        result.update(app=app, workers=workers, threads=threads,
                                      tokens=n_tokens, generator=args.generator_used,
                                      date=dt.date.today().isoformat())
                        runs.append(result)
                        log(f"  {result['rps']:,.0f} req/s, p50 {result['p50_ms']:.1f} "
                            f"p99 {result['p99_ms']:.1f} max {result['max_ms']:.1f} ms, "
                            f"/healthz p99 {result['healthz_p99_ms']:.1f} ms, "
                            f"errors {result['non_201']}, other work "
                            f"{result['cpu']['cores_other']:.2f} cores")
                finally:
                    server.stop()
        if args.profile_seconds > 0 and args.profile_apps:
            profile_text = profile(args, db_url, tokens[:args.profile_tokens], out_dir)
        text = report(args, runs, facts, background, profile_text, started)
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        Server.stop_all()
        (out_dir / "results.json").write_text(json.dumps(runs, indent=2, default=str))
        if created and not args.keep_db:
            drop_database(args.pg_url, args.db)
    (out_dir / "report.md").write_text(text)
    print(text)
    log(f"report: {out_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
