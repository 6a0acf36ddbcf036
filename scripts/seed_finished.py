"""Fill `jobqueue.finished` with synthetic jobs, fast, and time the dashboard against them.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench \\
        python scripts/seed_finished.py --rows 1000000 --time-pages --explain

Rows go in with one `INSERT ... SELECT generate_series` per chunk (no round trip per row).
Ids come from the shared sequence and finished_at rises with the id, as it does in real use,
so the BRIN index and the keyset pages behave as they would in production. The
finished_counts trigger counts the rows as they land. About 2% are dead (with tracebacks),
1% cancelled, the rest succeeded with a result; the newest rows belong to a few batches.
The database must be migrated (`jobqueue migrate`); run it against a scratch database.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time

import psycopg
from psycopg.rows import dict_row

SEED = """
INSERT INTO jobqueue.finished
    (id, queue, kind, payload, priority, run_at, attempts, max_attempts, state, result,
     errors, owner, batch_id, metadata, created_at, started_at, finished_at)
SELECT nextval('jobqueue.job_id_seq'), s.queue, s.kind,
       jsonb_build_object('prompt', 'Summarise document ' || s.i || ' for the weekly report',
                          'user_id', s.i %% 10007, 'tags', jsonb_build_array('t' || s.i %% 13)),
       0, s.fin - interval '20 seconds', s.attempts, 3, s.state,
       CASE WHEN s.state = 'succeeded' THEN jsonb_build_object(
           'text', 'Answer for document ' || s.i,
           'usage', jsonb_build_object('total_tokens', 100 + s.i %% 400)) END,
       CASE WHEN s.state = 'dead' THEN (
           SELECT jsonb_agg(jsonb_build_object(
               'attempt', a, 'at', s.fin - make_interval(secs => 10 * (3 - a)),
               'type', 'ValueError', 'message', 'bad input in row ' || s.i,
               'traceback', E'Traceback (most recent call last):\\n  File "tasks.py", '
                            || 'line 42, in summarise\\nValueError: bad input in row ' || s.i,
               'worker', '00000000-0000-0000-0000-000000000000'))
           FROM generate_series(1, 3) AS a)
       ELSE '[]' END,
       (ARRAY['alice', 'bob', 'carol'])[1 + s.i %% 3],
       CASE WHEN s.i > %(batched_from)s
            THEN %(first_batch)s + (s.i - %(batched_from)s - 1) / %(batch_size)s END,
       jsonb_build_object('row', s.i, 'source', 'seed'),
       s.fin - interval '20 seconds', s.fin - make_interval(secs => (s.i %% 10) / 10.0), s.fin
FROM (
    SELECT i,
           (ARRAY['default', 'emails', 'llm', 'reports', 'webhooks'])[1 + i %% 5] AS queue,
           (ARRAY['chat', 'send_email', 'summarise', 'render_pdf', 'webhook', 'embed',
                  'classify'])[1 + i %% 7] AS kind,
           CASE WHEN i %% 50 = 0 THEN 'dead' WHEN i %% 97 = 0 THEN 'cancelled'
                ELSE 'succeeded' END AS state,
           CASE WHEN i %% 50 = 0 THEN 3 ELSE 1 END AS attempts,
           now() - make_interval(secs => (%(rows)s - i) * %(span)s / %(rows)s) AS fin
    FROM generate_series(%(low)s::bigint, %(high)s::bigint) AS i
) AS s
"""

MAKE_BATCHES = """
INSERT INTO jobqueue.batches (name, queue, owner, total, source)
SELECT 'seed batch ' || k, 'llm', 'alice', %(batch_size)s, 'seed.csv'
FROM generate_series(1, %(batches)s) AS k
RETURNING id
"""


def seed(conn: psycopg.Connection, rows: int, span_hours: float, batches: int,
         batch_size: int, chunk: int = 100_000) -> None:
    batches = min(batches, rows // max(1, batch_size))
    ids = [r["id"] for r in conn.execute(MAKE_BATCHES, {"batches": batches,
                                                        "batch_size": batch_size})]
    params = {"rows": rows, "span": span_hours * 3600.0, "batch_size": batch_size,
              "batched_from": rows - batches * batch_size,
              "first_batch": ids[0] if ids else 0}
    started = time.perf_counter()
    for low in range(1, rows + 1, chunk):
        high = min(rows, low + chunk - 1)
        conn.execute(SEED, params | {"low": low, "high": high})
        print(f"  {high:,} rows, {time.perf_counter() - started:.1f}s", file=sys.stderr)
    conn.execute("VACUUM ANALYZE jobqueue.finished")  # visibility map: index-only scans
    conn.execute("ANALYZE jobqueue.finished_counts")


def time_pages(url: str, repeat: int) -> None:
    """Server time of each dashboard page (Flask's test client: no network): the first
    request, then the median and worst of `repeat` more (the overview's chart reads the whole
    hour only on the first)."""
    from jobqueue import tokens
    from web import create_app

    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        token, _ = tokens.create(conn, "bench", ["admin"], rate_limit=100_000)
        newest = conn.execute("SELECT max(id) AS id FROM jobqueue.finished "
                              "WHERE state = 'succeeded'").fetchone()["id"]
        dead = conn.execute("SELECT max(id) AS id FROM jobqueue.finished "
                            "WHERE state = 'dead'").fetchone()["id"]
        batch = conn.execute("SELECT max(id) AS id FROM jobqueue.batches").fetchone()["id"]
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "seed-timing"})
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post("/login", data={"token": token, "csrf_token": csrf}).status_code == 302
    paths = ["/", "/?partial=1", "/jobs", "/jobs?state=dead", "/jobs?queue=llm&kind=chat",
             "/jobs?owner=bob", f"/jobs?batch={batch}", "/jobs?q=row+12345",
             "/jobs?q=no+such+text", "/jobs?kind=missing",
             f"/jobs?before={max(1, newest - 500_000)}",
             f"/jobs/{newest}", f"/jobs/{dead}", "/dead", "/dead?queue=llm", "/batches",
             "/workers", "/limits", "/jobs/bulk?action=retry&state=dead&queue=llm",
             f"/batches/{batch}", f"/batches/{batch}?q=document+12", "/jobs?sort=run",
             "/jobs?sort=priority&dir=desc", "/jobs?kind=chat", "/charts",
             "/charts?window=24h", "/charts?window=24h&by=kind&queue=llm"]
    print(f"{'page':<48} {'first ms':>9} {'median ms':>10} {'max ms':>8}")
    for path in paths:
        times = []
        for _ in range(repeat + 1):
            start = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, (path, response.status_code)
        first, rest = times[0], times[1:]
        print(f"{path:<48} {first:>9.1f} {statistics.median(rest):>10.1f} {max(rest):>8.1f}")
    app.extensions["jobqueue"].close()


def explain(conn: psycopg.Connection) -> None:
    """EXPLAIN ANALYZE of the job list's queries as the dashboard runs them: the id window,
    then a page inside it (the text search examines a smaller window)."""
    from jobqueue.db.queries import q
    from web.dashboard import MAX_ID, SCAN, TEXT_SCAN

    base = {"queue": None, "kind": None, "owner": None, "batch_id": None, "state": None,
            "text": None, "before": MAX_ID, "limit": 50}
    cases = {"page, no filter": ({}, SCAN), "page, state=dead": ({"state": "dead"}, SCAN),
             "page, kind matching nothing": ({"kind": "missing"}, SCAN),
             "page, text search matching nothing": ({"text": "%no such text%"}, TEXT_SCAN)}
    for name, (extra, scan) in cases.items():
        window = {"before": MAX_ID, "scan": scan}
        plans = [("window", conn.execute("EXPLAIN (ANALYZE, BUFFERS) " +
                                         q("jobs_window"), window, prepare=False))]
        floor = conn.execute(q("jobs_window"), window, prepare=False).fetchone()
        plans.append(("page", conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS) " + q("jobs_page"),
            base | extra | {"floor": floor["floor"]}, prepare=False)))
        for part, plan in plans:
            print(f"\n-- {name}: {part}")
            for row in plan:
                print(row["QUERY PLAN"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--span-hours", type=float, default=7 * 24,
                        help="finished_at spread evenly over this many hours up to now")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--no-seed", action="store_true", help="only time / explain")
    parser.add_argument("--time-pages", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("set DATABASE_URL to a migrated scratch database")
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        if not args.no_seed:
            seed(conn, args.rows, args.span_hours, args.batches, args.batch_size)
        if args.explain:
            explain(conn)
    if args.time_pages:
        time_pages(url, args.repeat)


if __name__ == "__main__":
    main()
