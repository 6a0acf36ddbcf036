#!/usr/bin/env python
"""What retries backing off cost the claim (0024 retry order, 0030 parked retries).

    python scripts/bench_retry_lanes.py                       # 0, 10,000, 100,000 retries
    python scripts/bench_retry_lanes.py --retries 0,50000 --claims 100

A fresh database: --due (20,000) jobs waiting, due, and N retries of the same queue backing
off (an hour of backoff left; put back by the worker's own retry_jobs statement), then VACUUM
ANALYZE. Then --claims (200) claims of --limit (10) through the worker's `claim` statement,
each in a transaction rolled back (so every claim sees the same rows), timed around execute
+ fetch on the client; the median is reported, with the claim-index pages the last claim
read (EXPLAIN ANALYZE BUFFERS). Two layouts of the same retries: "parked", as retry_jobs
writes them now (lane 2, after the due work; 0030), and "lane 0", as 0024 wrote them (ahead
of the due work in the index, so the scan steps over each one not yet due).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import uuid

import psycopg
import structlog
from benchkit import fresh_database
from psycopg import sql

from jobqueue import Client
from jobqueue.db.queries import q

DB = "bench_retry_lanes"


def put_back(url: str, n: int) -> None:
    """n jobs claimed by a worker and failed with an hour of backoff, through retry_jobs."""
    if not n:
        return
    with Client(url) as jq:
        ids = jq.enqueue_payloads("k", [{}] * n, queue="q")
    worker = uuid.uuid4()
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "UPDATE jobqueue.jobs SET lease_owner = %s, attempts = 1, "
            "execution_id = gen_random_uuid(), lease_expires_at = now() + interval '1 hour' "
            "WHERE id = ANY(%s) RETURNING id, execution_id::text", (worker, ids)).fetchall()
        conn.execute(q("retry_jobs"), {
            "id": [r[0] for r in rows], "execution": [r[1] for r in rows],
            "delay": [3600.0] * n, "error": ['{"type": "E"}'] * n, "worker": worker})


def measure(url: str, claims: int, limit: int) -> tuple[float, int]:
    params = {"queue": "q", "limit": limit, "worker": uuid.uuid4(), "lease_seconds": 30}
    times = []
    with psycopg.connect(url) as conn:
        for _ in range(claims):
            started = time.perf_counter()
            conn.execute(q("claim"), params).fetchall()
            times.append((time.perf_counter() - started) * 1000)
            conn.rollback()
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + q("claim"),
                            params).fetchone()[0]
        conn.rollback()
    nodes, pages = [plan[0]["Plan"]], 0
    while nodes:
        node = nodes.pop()
        nodes.extend(node.get("Plans", []))
        if node.get("Index Name") == "jobs_claim_idx":
            pages += node["Shared Hit Blocks"] + node["Shared Read Blocks"]
    return statistics.median(times), pages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", default=os.environ.get(
        "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--retries", default="0,10000,100000")
    ap.add_argument("--due", type=int, default=20_000)
    ap.add_argument("--claims", type=int, default=200)
    ap.add_argument("--limit", type=int, default=10)
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"claim of {args.limit} from {args.due:,} due jobs, median of {args.claims}\n")
    print("| retries backing off | layout | claim ms | claim-index pages read |")
    print("|--:|---|--:|--:|")
    for n in (int(x) for x in args.retries.split(",")):
        for layout in ("parked", "lane 0") if n else ("-",):
            url = fresh_database(args.database_url, DB)
            put_back(url, n)
            with Client(url) as jq:
                jq.enqueue_payloads("k", [{}] * args.due, queue="q")
            with psycopg.connect(url, autocommit=True) as conn:
                if layout == "lane 0":
                    conn.execute("UPDATE jobqueue.jobs SET lane = 0 WHERE lane = 2")
                conn.execute("VACUUM ANALYZE jobqueue.jobs")
            ms, pages = measure(url, args.claims, args.limit)
            print(f"| {n:,} | {layout} | {ms:.2f} | {pages} |", flush=True)
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))


if __name__ == "__main__":
    main()
