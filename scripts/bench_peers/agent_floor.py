"""The floor for scripts/bench_queue.py: a bare psycopg loop, no framework (our venv).

What the issue's "for scale" figures describe, measured in the same run as the queues:
- enqueue: COPY of N rows (kind, payload) into one table;
- worker: a synchronous loop of one batch claim (UPDATE ... WHERE id = ANY(ARRAY(SELECT ...
  FOR UPDATE SKIP LOCKED LIMIT n)), commit not waiting for the WAL flush, as jobqueue's) and
  one batch finish (DELETE of the claimed ids, counting successes), waiting on LISTEN when the
  table is empty; handlers are the same bench_record calls every system makes;
- latency: single INSERTs; a statement trigger sends NOTIFY.
No leases, retries, results, or anything else a queue keeps: the cost of the database round
trips and of Python calling psycopg, nothing more.

    python agent_floor.py setup | enqueue N | latency N RATE WORKERS   (one JSON line out)
    python agent_floor.py worker BATCH
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import bench_record
import psycopg

URL = os.environ.get("BENCH_DB_URL", "")

SCHEMA = """
CREATE TABLE floor_jobs (id bigserial PRIMARY KEY, kind text NOT NULL, payload jsonb NOT NULL,
                         claimed boolean NOT NULL DEFAULT false);
CREATE INDEX floor_jobs_claim ON floor_jobs (id) WHERE NOT claimed;
CREATE TABLE floor_done (n bigint NOT NULL);
INSERT INTO floor_done VALUES (0);
CREATE FUNCTION floor_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('floor', ''); RETURN NULL; END $$;
CREATE TRIGGER floor_jobs_notify AFTER INSERT ON floor_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION floor_notify();
"""

CLAIM = """
UPDATE floor_jobs SET claimed = true
WHERE id = ANY(ARRAY(SELECT id FROM floor_jobs WHERE NOT claimed ORDER BY id LIMIT %s
                     FOR UPDATE SKIP LOCKED))
RETURNING id, kind, payload::text
"""

FINISH = """
WITH d AS (DELETE FROM floor_jobs WHERE id = ANY(%s::bigint[]) RETURNING kind)
UPDATE floor_done SET n = n + (SELECT count(*) FROM d WHERE kind = 'bench_noop')
"""


def run(payload_text: str, kind: str) -> None:
    if kind == "bench_noop":
        bench_record.drain_job()
    else:
        now = time.time()
        data = json.loads(payload_text)
        bench_record.latency_job(now, data["t"], data["seq"])


def worker(batch: int) -> None:
    listen = psycopg.connect(URL, autocommit=True)
    claim = psycopg.connect(URL, autocommit=True, prepare_threshold=0)
    finish = psycopg.connect(URL, autocommit=True, prepare_threshold=0)
    claim.execute("SET synchronous_commit = off")
    listen.execute("LISTEN floor")
    while True:
        rows = claim.execute(CLAIM, (batch,)).fetchall()
        for _id, kind, payload in rows:
            run(payload, kind)
        if rows:
            finish.execute(FINISH, ("{" + ",".join(str(r[0]) for r in rows) + "}",))
        if len(rows) < batch:
            for _ in listen.notifies(timeout=1.0, stop_after=1):
                pass


def main(argv: list[str]) -> dict:
    command, *rest = argv
    with psycopg.connect(URL, autocommit=True) as conn:
        if command == "setup":
            conn.execute(SCHEMA)
            return {"ok": True}
        if command == "enqueue":
            n = int(rest[0])
            started = time.perf_counter()
            with conn.cursor().copy("COPY floor_jobs (kind, payload) FROM STDIN") as copy:
                for _ in range(n):
                    copy.write_row(("bench_noop", "{}"))
            seconds = time.perf_counter() - started
            count = conn.execute("SELECT count(*) FROM floor_jobs").fetchone()[0]
            return {"count": count, "seconds": seconds}
        if command == "latency":
            n, rate, workers = int(rest[0]), float(rest[1]), int(rest[2])

            async def enqueue(t: float, seq: int) -> None:
                conn.execute("INSERT INTO floor_jobs (kind, payload) VALUES (%s, %s::jsonb)",
                             ("bench_latency", json.dumps({"t": t, "seq": seq})), prepare=True)

            return asyncio.run(bench_record.produce_latency_jobs(enqueue, n, rate, workers))
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(int(sys.argv[2]))
    else:
        print(json.dumps(main(sys.argv[1:])))
