"""What the benchmark scripts share: errors for people, progress lines, and the bookkeeping
that stops every process a benchmark started, whatever happens."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A run that cannot give a number: the message says why."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Processes:
    """Every subprocess a benchmark starts, so that all of them are stopped at the end."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def spawn(self, cmd: list[str], env: dict, log_path: Path, *, cwd: Path = REPO,
              stdin=subprocess.DEVNULL, stdout=None) -> subprocess.Popen:
        """Start `cmd` in its own session, output to `log_path` (or stdout where given)."""
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=stdin,
                                    stdout=stdout if stdout is not None else out,
                                    stderr=out if stdout is not None else subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        proc.log_path = log_path  # type: ignore[attr-defined]
        self.running.append(proc)
        return proc

    def stop(self, procs: list[subprocess.Popen], timeout: float = 30.0) -> None:
        """SIGTERM (a worker's warm stop); after 3 s another (its hard stop: jobs handed
        back); after `timeout`, SIGKILL to the process group."""
        for _ in range(2):
            for p in procs:
                if p.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.send_signal(signal.SIGTERM)
            soft = time.monotonic() + 3
            while time.monotonic() < soft and any(p.poll() is None for p in procs):
                time.sleep(0.05)
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"pid {p.pid} ignored SIGTERM for {timeout:.0f}s: killing it")
                with contextlib.suppress(ProcessLookupError):  # its own session: only what
                    os.killpg(p.pid, signal.SIGKILL)  # the benchmark started
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5)
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            if p in self.running:
                self.running.remove(p)

    def stop_all(self) -> None:
        self.stop(list(self.running), timeout=10.0)


def _die_with_parent() -> None:
    """In the child: SIGTERM when the benchmark dies, even by SIGKILL (Linux prctl)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def fresh_database(admin_url: str, name: str) -> str:
    """Database `name` created anew (its connections ended) with jobqueue's schema; its URL."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    from jobqueue.db import migrate

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(admin_url, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.migrate(conn)
    return url
