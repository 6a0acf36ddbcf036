#!/usr/bin/env python
"""Fairness and caps, measured (issue 11 points 3 and 4): how long one owner's backlog holds up
another owner, and what a claim costs on a large backlog.

    python scripts/bench_fair.py ab                 # A: 10,000 jobs, then B: 10; fair vs not
    python scripts/bench_fair.py claim              # 1,000,000 waiting jobs, 1,000 owners
    python scripts/bench_fair.py claim --jobs 100000 --owners 100    # a quicker look
    python scripts/bench_fair.py claim-cost --jobs 50000 --limit 1000 --baseline /tmp/jq-main

ab: a fresh database; 2 worker processes x 20 slots (--processes, --slots) on one queue;
    owner A enqueues --a-jobs (10,000) jobs of --seconds (0.05 s) in one call, then, once A's
    jobs are being worked (200 finished), owner B enqueues --b-jobs (10). Reported: B's time
    from enqueue (created_at of B's first job) to the last of B's jobs finishing (finished_at),
    both by the database clock; for the queue with `fair` on and, as the before, off.
claim: a fresh database; --jobs (1,000,000) waiting jobs spread round robin over --owners
    (1,000) owners, inserted with INSERT ... SELECT in slices of 100,000 (the insert trigger
    numbers them on a fair queue), then VACUUM ANALYZE. Then --claims (30) claims of --limit
    (500) through the worker's own `claim` statement on one connection, each its own
    transaction (as the worker runs it; psycopg prepares it from the 6th run on, so the later
    runs use the generic plan), timed around execute + fetch on the client; and one EXPLAIN
    (ANALYZE, BUFFERS) of a claim, rolled back. Before timing, --running (1,000) jobs are
    leased to another worker and kept (the fleet's work in flight, which a capped claim
    counts); each timed claim's rows are deleted after it, untimed. For three settings of the
    same queue: plain (no settings), fair, and fair with max_running_per_owner 5 plus
    max_running 100,000.
claim-cost: the claim statement alone, this checkout's against a baseline's, interleaved on
    one database (see run_claim_cost): what the settings' checks cost a queue without them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchkit import fresh_database  # noqa: E402

from jobqueue import JobSpec  # noqa: E402
from jobqueue import queues as queue_settings  # noqa: E402
from jobqueue.client import CHUNK, Client  # noqa: E402
from jobqueue.db import store  # noqa: E402
from jobqueue.db.queries import q  # noqa: E402
from jobqueue.jobs import DEFAULT_MAX_ATTEMPTS  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


# -- ab ----------------------------------------------------------------------------------------

def ab_once(args, fair: bool) -> tuple[float, int]:
    name = f"{args.db_prefix}ab"
    url = fresh_database(args.database_url, name)
    env = {"DATABASE_URL": url, "PYTHONPATH": str(REPO)}
    procs: list[subprocess.Popen] = []
    try:
        with Client(url) as client, psycopg.connect(url, autocommit=True) as conn:
            if fair:
                queue_settings.change(conn, "ab", fair=True)
            procs = [subprocess.Popen(
                [sys.executable, "-m", "jobqueue", "--log-level", "WARNING", "worker",
                 "--queue", f"ab:{args.slots}", "--import", "tests.support.worker_tasks"],
                cwd=REPO, env=os.environ | env,
                stderr=subprocess.DEVNULL) for _ in range(args.processes)]
            until(lambda: conn.execute("SELECT count(*) FROM jobqueue.workers").fetchone()[0]
                  >= args.processes, 60)
            nap = {"seconds": args.seconds}
            client.enqueue_many([JobSpec(kind="nap", queue="ab", owner="A", payload=nap)
                                 for _ in range(args.a_jobs)])
            until(lambda: conn.execute("SELECT count(*) FROM jobqueue.finished").fetchone()[0]
                  >= 200, 60)
            b_ids = client.enqueue_many([JobSpec(kind="nap", queue="ab", owner="B",
                                                 payload=nap) for _ in range(args.b_jobs)])
            until(lambda: conn.execute("SELECT count(*) FROM jobqueue.finished WHERE id = "
                                       "ANY(%s)", (b_ids,)).fetchone()[0] == len(b_ids),
                  args.a_jobs * args.seconds * 2 + 60)
            span, a_left = conn.execute(
                "SELECT extract(epoch FROM max(finished_at) - min(created_at))::float8, "
                "       (SELECT count(*) FROM jobqueue.jobs WHERE owner = 'A') "
                "FROM jobqueue.finished WHERE id = ANY(%s)", (b_ids,)).fetchone()
        return span, a_left
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
        drop_database(args.database_url, name)


def until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s")
        time.sleep(0.01)


def run_ab(args) -> None:
    log(f"ab: A {args.a_jobs:,} jobs then B {args.b_jobs}, {args.seconds * 1000:.0f} ms each, "
        f"{args.processes} processes x {args.slots} slots")
    for fair in (True, False):
        for rep in range(args.repeat):
            span, a_left = ab_once(args, fair)
            log(f"  {'fair' if fair else 'fifo'} #{rep + 1}: B's {args.b_jobs} done "
                f"{span:.3f}s after enqueue ({a_left:,} of A's jobs still unfinished)")


# -- claim -------------------------------------------------------------------------------------

SETTINGS = {
    "plain": {},
    "fair": {"fair": True},
    "fair + caps": {"fair": True, "max_running_per_owner": 5, "max_running": 100_000},
}


def run_claim(args) -> None:
    name = f"{args.db_prefix}claim"
    for label, changes in SETTINGS.items():
        url = fresh_database(args.database_url, name)
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                if changes:
                    queue_settings.change(conn, "big", **changes)
                started = time.monotonic()
                # Through the enqueue path (COPY in the client's chunks, rounds written with
                # the rows), as Client.enqueue_many would, without building 1,000,000 JobSpecs.
                step = 100_000
                for lo in range(0, args.jobs, step):
                    with conn.transaction():
                        for at in range(lo, min(args.jobs, lo + step), CHUNK):
                            store.insert_rows(conn, [
                                ("big", "noop", "{}", 0, None, DEFAULT_MAX_ATTEMPTS, None,
                                 f"owner{i % args.owners}", None, "{}", None)
                                for i in range(at, min(args.jobs, lo + step, at + CHUNK))])
                inserted = time.monotonic() - started
                conn.execute("VACUUM ANALYZE jobqueue.jobs")
                # The fleet's other work: --running jobs leased to another worker, kept.
                conn.execute(q("claim"), {"queue": "big", "limit": args.running,
                                          "worker": uuid.uuid4(), "lease_seconds": 300})
                times = []
                params = {"queue": "big", "limit": args.limit, "worker": uuid.uuid4(),
                          "lease_seconds": 300}
                statement = statement_for(changes)
                for _ in range(args.claims):
                    t0 = time.perf_counter()
                    rows = conn.execute(q(statement), params).fetchall()
                    times.append((time.perf_counter() - t0) * 1000)
                    assert len([r for r in rows if r[0] is not None]) == args.limit, len(rows)
                    # finished (untimed): the running set stays the fleet's --running
                    conn.execute("DELETE FROM jobqueue.jobs WHERE lease_owner = %s",
                                 (params["worker"],))
                with conn.transaction(force_rollback=True):
                    plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + q(statement),
                                        params, prepare=False).fetchall()
        finally:
            drop_database(args.database_url, name)
        total = [line for (line,) in plan if line.startswith("Execution Time")]
        log(f"{label} ({statement}): {args.jobs:,} waiting across {args.owners:,} owners (insert "
            f"{inserted:.1f}s); claim of {args.limit}: median {statistics.median(times):.1f} ms"
            f", first 5 (custom plans) median {statistics.median(times[:5]):.1f} ms, later "
            f"(prepared) median {statistics.median(times[5:]):.1f} ms, max {max(times):.1f} ms"
            f"; EXPLAIN ANALYZE {total[0] if total else '?'}")
        if args.verbose:
            print("\n".join(line for (line,) in plan))


# -- claim-cost ----------------------------------------------------------------------------------

def run_claim_cost(args) -> None:
    """The plain claim, this checkout's statement against another checkout's (--baseline),
    on one database, rounds interleaved: each round enqueues --jobs jobs and drains them
    with claims of --limit, each followed by finish_jobs (not counted); the CPU time the
    connection's Postgres backend spends in the claims is summed (so Postgres must run on
    this machine). Both statements run against this checkout's schema, so only the statement
    differs. With --queue-settings, this checkout's rounds run on a queue with those
    settings (e.g. fair), the baseline's on a plain queue."""
    from jobqueue.db.queries import load

    base_sql = load(args.baseline / "sql")  # parts may live in another file than jobs.sql
    changes = parse_settings(args.queue_settings)
    this = statement_for(changes)
    claims = {"this": q(this), "base": base_sql["claim"]}
    name = f"{args.db_prefix}cost"
    url = fresh_database(args.database_url, name)
    spent = {"this": [], "base": []}
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            backend = conn.info.backend_pid
            if changes:
                queue_settings.change(conn, "this", **changes)
            for rnd in range(args.rounds * 2):
                which = ("this", "base")[(rnd + rnd // 2) % 2]  # this, base, base, this, ...
                queue = which
                # Rounds come with the rows (nothing numbers them afterwards since 0028).
                conn.execute("WITH f AS MATERIALIZED (SELECT jobqueue.fair_rounds(%(n)s, '{}',"
                             " %(queue)s, '{}', NULL, '{}', NULL) AS rounds)"
                             " INSERT INTO jobqueue.jobs (queue, kind, fair_round)"
                             " SELECT %(queue)s, 'noop', f.rounds[g]"
                             " FROM generate_series(1, %(n)s) AS g, f",
                             {"queue": queue, "n": args.jobs})
                conn.execute("VACUUM ANALYZE jobqueue.jobs")
                worker, total, n = uuid.uuid4(), 0.0, 0
                params = {"queue": queue, "limit": args.limit, "worker": worker,
                          "lease_seconds": 300}
                while True:
                    t0 = backend_cpu(backend)
                    rows = conn.execute(claims[which], params).fetchall()
                    total += backend_cpu(backend) - t0
                    rows = [r for r in rows if r[0] is not None]
                    if not rows:
                        break
                    n += len(rows)
                    conn.execute(q("finish_jobs"), prepare=False, params={
                        "id": [r[0] for r in rows], "execution": [r[6] for r in rows],
                        "state": ["succeeded"] * len(rows), "result": [None] * len(rows),
                        "error": [None] * len(rows), "worker": worker})
                assert n == args.jobs, n
                spent[which].append(total / n * 1e6)
                log(f"  round {rnd + 1} {which}: claim {total / n * 1e6:.2f} us/job of backend CPU")
    finally:
        drop_database(args.database_url, name)
    claim_this = this
    this, base = statistics.median(spent["this"]), statistics.median(spent["base"])
    log(f"claim statement, backend CPU, median over {args.rounds} rounds each: this "
        f"({claim_this}) {this:.2f} us/job, "
        f"baseline {base:.2f} us/job ({(this / base - 1) * 100:+.1f}%)")


def backend_cpu(pid: int) -> float:
    """Seconds of CPU the Postgres backend `pid` has run (/proc/PID/schedstat, in ns): unlike
    wall time, not inflated by other processes on a loaded machine."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def statement_for(changes: dict) -> str:
    """The claim statement a queue with these settings needs (see db/store.py)."""
    if {"max_running", "max_running_per_owner"} & set(changes):
        return "claim_capped"
    return "claim_fair" if changes.get("fair") else "claim"


def parse_settings(text: str) -> dict:
    changes: dict = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        changes[key] = True if key == "fair" and not value else (
            value.lower() in ("1", "true", "on") if key == "fair" else int(value))
    return changes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("mode", choices=["ab", "claim", "claim-cost"])
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--db-prefix", default="benchfair_")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--a-jobs", type=int, default=10_000)
    p.add_argument("--b-jobs", type=int, default=10)
    p.add_argument("--seconds", type=float, default=0.05)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--slots", type=int, default=20)
    p.add_argument("--jobs", type=int, default=1_000_000)
    p.add_argument("--owners", type=int, default=1000)
    p.add_argument("--limit", type=int, default=500)
    p.add_argument("--claims", type=int, default=30)
    p.add_argument("--running", type=int, default=1000,
                   help="claim: jobs held running by another worker throughout")
    p.add_argument("--verbose", "-v", action="store_true", help="print the EXPLAIN output")
    p.add_argument("--baseline", type=Path, default=Path("/tmp/jq-main"),
                   help="claim-cost: the other checkout (a `git worktree add` of main)")
    p.add_argument("--rounds", type=int, default=5, help="claim-cost: rounds per statement")
    p.add_argument("--queue-settings", default="",
                   help="claim-cost: settings of this checkout's queue, e.g. 'fair' or "
                        "'max_running=100000'")
    args = p.parse_args(argv)
    conninfo_to_dict(args.database_url)  # a bad URL fails here, before any work
    {"ab": run_ab, "claim": run_claim, "claim-cost": run_claim_cost}[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
