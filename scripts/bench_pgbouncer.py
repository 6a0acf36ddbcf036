#!/usr/bin/env python
"""100 worker processes through PgBouncer (transaction mode) against a Postgres that allows
only 100 connections: they drain a backlog with no connection error (issue 11, point 2).

    python scripts/bench_pgbouncer.py                       # 100 processes, 20,000 jobs
    python scripts/bench_pgbouncer.py --processes 20 --jobs 2000      # quick look

Everything is throwaway and on 127.0.0.1; the machine's own Postgres is not touched:
1. initdb a cluster in a temp directory with /usr/lib/postgresql/15/bin (--pg-bin), and start
   it on a free port with max_connections = 100 (--max-connections).
2. Start Debian's pgbouncer on another free port, pool_mode = transaction, at most --pool
   server connections to that database (default 80: the rest is room for the superuser and
   this script's monitor), max_client_conn 1000.
3. `jobqueue migrate` and enqueue --jobs `noop` jobs on queue `drain`, through the bouncer.
4. `jobqueue worker --queue drain --processes N --poll-only --until-idle` through the
   bouncer, with JOBQUEUE_PGBOUNCER=1 (no prepared statements, no session SETs). Poll-only:
   a LISTEN needs a direct session, and 100 of them would take every connection the server
   allows; with fewer processes, JOBQUEUE_LISTEN_DATABASE_URL gives each its one LISTEN.
   Every worker process keeps 2 client connections to the bouncer (claim, finish).
5. Meanwhile a monitor samples the server's client backends every 100 ms (their peak is the
   bouncer's server-side use) and the bouncer's client connections (SHOW POOLS on its admin
   console). At the end: the drain time, the peaks, every job's state, and every connection
   error found in the workers' output, the server's log and the bouncer's log.

Run as root (as CI does), the cluster and the bouncer run as the `postgres` user (neither
starts as root). Output: a Markdown report on stdout; logs in --out-dir
(default /tmp/bench_pgbouncer_TIME); the cluster's directory is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
# What a connection error looks like in the workers', the server's and the bouncer's logs.
CONNECTION_ERRORS = re.compile(
    r"too many clients|remaining connection slots|connection refused|could not connect|"
    r"server closed the connection|no more connections allowed|pooler error|"
    r"query_wait_timeout|client_login_timeout|db_unavailable|worker_failed|"
    r"worker_service_failed",
    re.IGNORECASE)


def log(message: str) -> None:
    print(f"[bench_pgbouncer {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
          flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A throwaway Postgres: initdb in `root`, started on a free port."""

    def __init__(self, pg_bin: Path, root: Path, max_connections: int, user: str | None):
        self.pg_bin, self.data, self.user = pg_bin, root / "data", user
        self.port = free_port()
        self.log_path = root / "postgres.log"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8")
        (self.data / "postgresql.auto.conf").write_text(
            f"max_connections = {max_connections}\nlisten_addresses = '127.0.0.1'\n"
            f"port = {self.port}\nunix_socket_directories = '{root}'\nfsync = on\n"
            "log_connections = off\n")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "start")
        self.url = self.url_of("postgres")

    def url_of(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([str(self.pg_bin / tool), *args], capture_output=True, text=True,
                              user=self.user, timeout=120)
        if done.returncode != 0:
            raise SystemExit(f"{tool} failed: {done.stderr.strip()[-2000:]}")

    def stop(self) -> None:
        subprocess.run([str(self.pg_bin / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                        "-w", "stop"], capture_output=True, user=self.user, timeout=120)


class Bouncer:
    """pgbouncer in transaction mode in front of the cluster."""

    def __init__(self, root: Path, server_port: int, pool: int, user: str | None):
        self.port = free_port()
        (root / "users.txt").write_text('"postgres" ""\n')
        ini = root / "pgbouncer.ini"
        ini.write_text(f"""\
[databases]
* = host=127.0.0.1 port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {root / "users.txt"}
admin_users = postgres
pool_mode = transaction
default_pool_size = {pool}
max_db_connections = {pool}
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
""")
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.path.exists(binary):
            raise SystemExit("pgbouncer is not installed (apt-get install pgbouncer)")
        self.log_path = root / "pgbouncer.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [binary, *(["-u", user] if user else []), str(ini)], stdout=out,
                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit(
                        f"pgbouncer did not start: {self.log_path.read_text()}") from None
                time.sleep(0.1)

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Monitor(threading.Thread):
    """Peaks of the server's client backends and of the bouncer's client connections."""

    def __init__(self, server_url: str, admin_url: str):
        super().__init__(daemon=True)
        self.server_url, self.admin_url = server_url, admin_url
        self.peak_server = self.peak_clients = self.peak_waiting = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as server, \
                psycopg.connect(self.admin_url, autocommit=True,
                                cursor_factory=psycopg.ClientCursor) as admin:  # simple protocol
            while not self.stopped.wait(0.1):
                backends = server.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                    "'client backend' AND pid <> pg_backend_pid()").fetchone()[0]
                cur = admin.execute("SHOW POOLS")
                names = [c.name for c in cur.description]
                clients = waiting = 0
                for row in cur.fetchall():
                    pool = dict(zip(names, row, strict=True))
                    if pool["database"] == "bench":
                        clients += pool["cl_active"] + pool["cl_waiting"]
                        waiting += pool["cl_waiting"]
                self.peak_server = max(self.peak_server, backends)
                self.peak_clients = max(self.peak_clients, clients)
                self.peak_waiting = max(self.peak_waiting, waiting)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=100)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=10, help="jobs in flight per process")
    p.add_argument("--max-connections", type=int, default=100)
    p.add_argument("--pool", type=int, default=80, help="the bouncer's server connections")
    p.add_argument("--pg-bin", type=Path, default=Path("/usr/lib/postgresql/15/bin"))
    p.add_argument("--out-dir", type=Path, default=None)
    args = p.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="jobqueue-bench-pgbouncer-"))
    out_dir = args.out_dir or Path(f"/tmp/bench_pgbouncer_{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    user = None
    if os.geteuid() == 0:
        user = "postgres"
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    cluster = bouncer = None
    try:
        log(f"initdb in {root}, max_connections = {args.max_connections}")
        cluster = Cluster(args.pg_bin, root, args.max_connections, user)
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        bouncer = Bouncer(root, cluster.port, args.pool, user)
        url = bouncer.url("bench")
        env = os.environ | {"DATABASE_URL": url, "JOBQUEUE_PGBOUNCER": "1",
                            "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
        env.pop("JOBQUEUE_LISTEN_DATABASE_URL", None)
        jobqueue = [sys.executable, "-m", "jobqueue"]
        subprocess.run([*jobqueue, "migrate"], env=env, cwd=ROOT, check=True,
                       capture_output=True, timeout=120)
        log(f"enqueue {args.jobs:,} jobs through the bouncer")
        os.environ["JOBQUEUE_PGBOUNCER"] = "1"
        from jobqueue.client import Client

        with Client(url) as client:
            for start in range(0, args.jobs, 5000):
                client.enqueue_payloads("noop", [{"n": n} for n in range(
                    start, min(args.jobs, start + 5000))], queue="drain")
        monitor = Monitor(cluster.url_of("bench"),
                          bouncer.url("pgbouncer"))
        monitor.start()
        worker_log = out_dir / "workers.log"
        log(f"{args.processes} worker processes, {args.concurrency} jobs in flight each, "
            "--poll-only --until-idle")
        started = time.monotonic()
        with open(worker_log, "wb") as out:
            done = subprocess.run(
                [*jobqueue, "worker", "--queue", "drain", "--processes", str(args.processes),
                 "--concurrency", str(args.concurrency), "--poll-only", "--until-idle",
                 "--connect-timeout", "120"], env=env, cwd=ROOT, stdout=out,
                stderr=subprocess.STDOUT, timeout=1800)
        seconds = time.monotonic() - started
        monitor.stopped.set()
        monitor.join()
        with psycopg.connect(cluster.url_of("bench")) as conn:
            states = dict(conn.execute(
                "SELECT state, count(*) FROM jobqueue.finished GROUP BY 1").fetchall())
            left = conn.execute("SELECT count(*) FROM jobqueue.jobs").fetchone()[0]
        errors = {}
        for name, path in (("workers", worker_log), ("postgres", cluster.log_path),
                           ("pgbouncer", bouncer.log_path)):
            found = [line for line in path.read_text(errors="replace").splitlines()
                     if CONNECTION_ERRORS.search(line)]
            errors[name] = found
            if found:
                (out_dir / f"errors-{name}.log").write_text("\n".join(found) + "\n")
        shutil.copy(cluster.log_path, out_dir / "postgres.log")
        shutil.copy(bouncer.log_path, out_dir / "pgbouncer.log")
        ok = done.returncode == 0 and left == 0 and not any(errors.values()) and \
            states.get("succeeded") == args.jobs
        print(f"""## {args.processes} worker processes through PgBouncer \
({time.strftime('%Y-%m-%d %H:%M %Z')})

Postgres 15 (throwaway cluster, max_connections = {args.max_connections}), pgbouncer \
(transaction mode, {args.pool} server connections), `jobqueue worker --queue drain --processes \
{args.processes} --concurrency {args.concurrency} --poll-only --until-idle` with \
JOBQUEUE_PGBOUNCER=1; {args.jobs:,} `noop` jobs.

| processes | jobs | drained in | jobs/s | peak server connections | peak bouncer clients \
(waiting) | succeeded | left | connection errors (workers / postgres / bouncer) | exit |
|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|
| {args.processes} | {args.jobs:,} | {seconds:.1f} s | {args.jobs / seconds:,.0f} | \
{monitor.peak_server} | {monitor.peak_clients} ({monitor.peak_waiting}) | \
{states.get('succeeded', 0):,} | {left} | {len(errors['workers'])} / {len(errors['postgres'])} \
/ {len(errors['pgbouncer'])} | {done.returncode} |

{'OK: every job succeeded, no connection error.' if ok else 'NOT OK: see ' + str(out_dir)}
""")
        log(f"logs in {out_dir}")
        return 0 if ok else 1
    finally:
        if bouncer is not None:
            bouncer.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
