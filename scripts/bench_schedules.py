#!/usr/bin/env python
"""Benchmark the scheduler's tick: how fast due fires are decided and enqueued.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python scripts/bench_schedules.py

Creates a fresh database (--db, default bench_schedules; dropped at the end), saves
--schedules job schedules that all fire every minute, then times one scheduler process
deciding them all at the first fire (jobqueue/schedules/tick.py, the worker's own code, with
logging at WARNING), and the idle check each worker runs every 5 s while nothing is due.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from datetime import UTC, datetime, timedelta

import psycopg
import structlog
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from jobqueue.db import migrate
from jobqueue.db.queries import q
from jobqueue.schedules import spec, store, tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--db", default="bench_schedules")
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{args.db}"')
        admin.execute(f'CREATE DATABASE "{args.db}"')
    try:
        url = make_conninfo(server, dbname=args.db)
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            migrate.migrate(conn)
            start = datetime(2026, 1, 1, tzinfo=UTC)
            for i in range(args.schedules):
                store.save(conn, spec.build(f"s{i}", {"cron": "* * * * *", "kind": "noop"}),
                           start)
            began = time.perf_counter()
            runs = tick.tick(conn, start + timedelta(minutes=1, seconds=1), 10**9)
            took = time.perf_counter() - began
            checks, began = 200, time.perf_counter()
            for _ in range(checks):
                conn.execute(q("schedule_next_due")).fetchone()
            idle = (time.perf_counter() - began) / checks
        print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores "
              f"({platform.processor() or platform.machine()}), Python "
              f"{platform.python_version()}")
        print(f"{len(runs)} due job schedules, one tick in one process: {took:.2f} s, "
              f"{len(runs) / took:.0f} fires/s")
        print(f"idle check (schedule_next_due over {args.schedules} schedules): "
              f"{idle * 1000:.2f} ms")
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
