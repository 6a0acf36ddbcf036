#!/usr/bin/env python
"""What a per-owner quota costs at enqueue (README "Quotas on new work").

    python scripts/bench_quotas.py [--server postgresql://postgres@127.0.0.1:5432/postgres]

Creates (and drops first) a database `jq_quota_bench` on the server, sets a jobs quota on
kind `lesson` and a jobs+tokens quota on queue `llm`, then times single enqueues in four
cases, interleaved round-robin so that load on the machine falls on each alike: no owner; an
owner no quota concerns; an owner under one jobs quota; an owner under a jobs quota and a
jobs+tokens quota. Then 10,000-job batches with and without an owner under both quotas.
Prints medians. Budgets are large: nothing is refused, only the checking is measured.
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg

from jobqueue import Client, JobSpec, quotas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--enqueues", type=int, default=1500)
    args = parser.parse_args()
    with psycopg.connect(args.server, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS jq_quota_bench")
        conn.execute("CREATE DATABASE jq_quota_bench")
    url = psycopg.conninfo.make_conninfo(args.server, dbname="jq_quota_bench")
    with Client(url) as jq:
        jq.migrate()
        with jq.pool.connection() as conn:
            quotas.store(conn, quotas.Quota("kind", "lesson",
                                            jobs=quotas.parse_rate("1000000/min")))
            quotas.store(conn, quotas.Quota("queue", "llm",
                                            jobs=quotas.parse_rate("1000000/min"),
                                            tokens=quotas.parse_rate("100000000/min")))
        cases = {"no owner": ("other", "default", None),
                 "owner, no quota applies": ("other", "default", "u1"),
                 "owner, one jobs quota": ("lesson", "default", "u2"),
                 "owner, jobs quota + jobs/tokens quota": ("lesson", "llm", "u3")}
        times: dict[str, list[float]] = {case: [] for case in cases}
        for _ in range(args.enqueues):
            for case, (kind, queue, owner) in cases.items():
                started = time.perf_counter()
                jq.enqueue(kind, {"prompt": "hello"}, queue=queue, owner=owner)
                times[case].append(time.perf_counter() - started)
        for case, seconds in times.items():
            print(f"{case}: median {statistics.median(seconds) * 1e3:.2f} ms per enqueue")
        for label, owner in (("no owner", None), ("owner under both quotas", "u4")):
            specs = [JobSpec("lesson", {"prompt": f"p{i}"}) for i in range(10_000)]
            started = time.perf_counter()
            jq.submit_batch(specs, queue="llm", owner=owner)
            print(f"batch of 10,000, {label}: {(time.perf_counter() - started) * 1e3:.0f} ms")
    with psycopg.connect(args.server, autocommit=True) as conn:
        conn.execute("DROP DATABASE jq_quota_bench")


if __name__ == "__main__":
    main()
