"""Benchmark of dependencies (workflows): how long one completion takes to release N
children of one parent, and whether blocked jobs slow the claim of unrelated work.

    python scripts/bench_workflows.py [--children 10000] [--blocked 100000] [--jobs 20000]

It makes its own database (bench_workflows) on --database-url and drops it at the end.
- release: a parent and N children waiting for it; the parent is claimed, then ended by the
  worker's completion statement (finish_jobs), timed from the client; every child must be
  runnable when it returns.
- claim: --jobs plain jobs claimed 1,000 per statement and finished 1,000 per statement (the
  worker's two statements, from one connection, no handler), first with no blocked jobs,
  then with --blocked blocked jobs on the same queue, then as one batch with an on_complete
  callback (every member is a parent of it); the runs alternate --repeat times.
Prints medians (min-max).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import psycopg
from psycopg.conninfo import make_conninfo

from jobqueue import JobSpec
from jobqueue.client import Client
from jobqueue.db.queries import q

DB = "bench_workflows"


def claim_and_finish(conn: psycopg.Connection, queue: str, batch: int) -> int:
    worker, done = uuid.uuid4(), 0
    while True:
        rows = conn.execute(q("claim"), {"queue": queue, "limit": batch, "worker": worker,
                                         "lease_seconds": 60}).fetchall()
        if not rows:
            return done
        conn.execute(q("finish_jobs"), prepare=False, params={
            "id": [r[0] for r in rows], "execution": [r[6] for r in rows],
            "state": ["succeeded"] * len(rows), "result": ["{}"] * len(rows),
            "error": [None] * len(rows), "worker": worker})
        done += len(rows)


def release_once(jq: Client, conn: psycopg.Connection, children: int) -> float:
    parent = jq.enqueue("k", queue="parent")
    jq.enqueue_many(JobSpec("k", queue="child", depends_on=[parent]) for _ in range(children))
    worker = uuid.uuid4()
    (row,) = conn.execute(q("claim"), {"queue": "parent", "limit": 1, "worker": worker,
                                       "lease_seconds": 60}).fetchall()
    started = time.perf_counter()
    conn.execute(q("finish_jobs"), prepare=False, params={
        "id": [parent], "execution": [row[6]], "state": ["succeeded"], "result": ["{}"],
        "error": [None], "worker": worker})
    elapsed = time.perf_counter() - started
    runnable = conn.execute("SELECT count(*) FROM jobqueue.jobs WHERE queue = 'child'"
                            ).fetchone()[0]
    assert runnable == children, runnable
    conn.execute("DELETE FROM jobqueue.jobs WHERE queue = 'child'")
    return elapsed


def drain_rate(jq: Client, conn: psycopg.Connection, jobs: int, batch: int,
               callback: bool = False) -> float:
    if callback:
        jq.submit_batch((JobSpec("k") for _ in range(jobs)), queue="work",
                        on_complete=JobSpec("summarise", queue="cb"))
    else:
        jq.enqueue_payloads("k", [{}] * jobs, queue="work")
    conn.execute("VACUUM ANALYZE jobqueue.jobs")
    started = time.perf_counter()
    assert claim_and_finish(conn, "work", batch) == jobs
    return jobs / (time.perf_counter() - started)


def spread(values: list[float], fmt: str) -> str:
    return (f"{format(statistics.median(values), fmt)} "
            f"({format(min(values), fmt)}-{format(max(values), fmt)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--children", type=int, default=10_000)
    p.add_argument("--blocked", type=int, default=100_000)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    with psycopg.connect(args.database_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DB}"')
    url = make_conninfo(args.database_url, dbname=DB)
    try:
        with Client(url) as jq, psycopg.connect(url, autocommit=True) as conn:
            jq.migrate()
            releases = [release_once(jq, conn, args.children) for _ in range(args.repeat)]
            plain, crowded, batched = [], [], []
            hold = jq.enqueue("k", queue="never")  # a parent no worker serves
            for _ in range(args.repeat):
                plain.append(drain_rate(jq, conn, args.jobs, args.batch))
                jq.enqueue_many(JobSpec("k", queue="work", depends_on=[hold])
                                for _ in range(args.blocked))
                crowded.append(drain_rate(jq, conn, args.jobs, args.batch))
                conn.execute("DELETE FROM jobqueue.blocked")
                conn.execute("DELETE FROM jobqueue.job_dependencies")
                batched.append(drain_rate(jq, conn, args.jobs, args.batch, callback=True))
                assert conn.execute("SELECT count(*) FROM jobqueue.jobs WHERE queue = 'cb'"
                                    ).fetchone()[0] == len(batched)
        print(f"# scripts/bench_workflows.py {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
              f", repeat {args.repeat}, medians (min-max)")
        print(f"release of {args.children:,} children by one completion: "
              f"{spread(releases, '.3f')} s")
        print(f"claim+finish of {args.jobs:,} plain jobs, {args.batch} per statement, "
              f"no blocked jobs: {spread(plain, ',.0f')} jobs/s")
        print(f"  the same with {args.blocked:,} blocked jobs on the same queue: "
              f"{spread(crowded, ',.0f')} jobs/s")
        print(f"  the same as one batch with an on_complete callback: "
              f"{spread(batched, ',.0f')} jobs/s")
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


if __name__ == "__main__":
    main()
