#!/usr/bin/env python
"""Benchmark the campaign report over 1,000,000 stored answers: the API and the page.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        python scripts/bench_campaign_report.py

Creates a fresh database (--db, default bench_campaigns; dropped at the end), a campaign of
--brands brands on 3 platforms, and loads --answers analysed answers spread over --days days
with generate_series (campaign_answers, one campaign_mentions row per answer x brand, one
citation per answer), then builds the daily rollup from them with one INSERT ... SELECT (what
the extract step adds answer by answer). Then the web app runs on loopback and the script
times GET /api/campaigns/bench/report (the default period: the last 30 days, and the change
against the 30 before) and the dashboard page /campaigns/bench, --repeat times each, and
prints the median and the worst.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import statistics
import threading
import time
from datetime import UTC, datetime

import psycopg
import requests
import structlog
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from jobqueue.db import migrate

PLATFORMS = ["openai", "gemini", "perplexity"]
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

LOAD = """
INSERT INTO jobqueue.campaign_answers (job_id, campaign_id, platform, day, method)
SELECT g, %(campaign)s, (%(platforms)s::text[])[1 + g %% 3],
       current_date - (g %% %(days)s)::int, 'rules'
FROM generate_series(1, %(answers)s) AS g;

INSERT INTO jobqueue.campaign_mentions (job_id, brand, mentioned, position, char_offset,
                                        sentiment)
SELECT g, b.name, m, CASE WHEN m THEN 1 + (g + b.i) %% 3 END, CASE WHEN m THEN b.i * 40 END,
       CASE WHEN m THEN ((g + b.i) %% 5 - 2) / 2.0 END
FROM generate_series(1, %(answers)s) AS g,
     LATERAL (SELECT i, name, abs(hashint4((g * 31 + i)::int) %% 100) < 60 - i * 5 AS m
              FROM unnest(%(brands)s::text[]) WITH ORDINALITY AS t(name, i)) AS b;

INSERT INTO jobqueue.campaign_citations (job_id, url, domain)
SELECT g, 'https://www.site' || (g %% 40) || '.com/p', 'site' || (g %% 40) || '.com'
FROM generate_series(1, %(answers)s) AS g;

INSERT INTO jobqueue.campaign_daily (campaign_id, day, platform, brand, answers, mentions,
                                     position_sum, sentiment_sum)
SELECT a.campaign_id, a.day, a.platform, m.brand, count(*), count(*) FILTER (WHERE m.mentioned),
       coalesce(sum(m.position), 0), coalesce(sum(m.sentiment), 0)
FROM jobqueue.campaign_answers a JOIN jobqueue.campaign_mentions m USING (job_id)
GROUP BY 1, 2, 3, 4;

INSERT INTO jobqueue.campaign_domains_daily (campaign_id, day, platform, domain, citations)
SELECT a.campaign_id, a.day, a.platform, c.domain, count(*)
FROM jobqueue.campaign_answers a JOIN jobqueue.campaign_citations c USING (job_id)
GROUP BY 1, 2, 3, 4;
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=1_000_000)
    parser.add_argument("--brands", type=int, default=5)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--db", default="bench_campaigns")
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{args.db}"')
    try:
        url = make_conninfo(server, dbname=args.db)
        brands = ["Acme"] + [f"Rival{i}" for i in range(1, args.brands)]
        with psycopg.connect(url, autocommit=True) as conn:
            migrate.migrate(conn)
            campaign = conn.execute(
                "INSERT INTO jobqueue.campaigns (name, prompts, platforms, samples, brands) "
                "VALUES ('bench', %s, %s, 1, %s) RETURNING id",
                (Jsonb([{"messages": [{"role": "user", "content": "best CRM?"}]}]), PLATFORMS,
                 Jsonb([{"name": b, "aliases": [], "competitor": i > 0}
                        for i, b in enumerate(brands)]))).fetchone()[0]
            began = time.perf_counter()
            params = {"campaign": campaign, "platforms": PLATFORMS, "days": args.days,
                      "answers": args.answers, "brands": brands}
            with conn.transaction():
                for statement in LOAD.split(";\n\n"):
                    conn.execute(statement, params)
            loaded = time.perf_counter() - began
            conn.execute("VACUUM ANALYZE")
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM jobqueue.campaign_answers), "
                "(SELECT count(*) FROM jobqueue.campaign_mentions), "
                "(SELECT count(*) FROM jobqueue.campaign_daily)").fetchone()
        api_ms, page_ms = _time_web(url, args.repeat)
        print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores "
              f"({platform.processor() or platform.machine()}), Python "
              f"{platform.python_version()}")
        print(f"loaded {counts[0]:,} answers, {counts[1]:,} mention rows, {counts[2]:,} rollup "
              f"rows ({len(brands)} brands x {len(PLATFORMS)} platforms x {args.days} days) "
              f"in {loaded:.1f} s")
        for what, ms in (("GET /api/campaigns/bench/report", api_ms),
                         ("GET /campaigns/bench (dashboard page)", page_ms)):
            print(f"{what}: median {statistics.median(ms):.1f} ms, worst {max(ms):.1f} ms "
                  f"over {len(ms)} requests")
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')


def _time_web(url: str, repeat: int) -> tuple[list[float], list[float]]:
    from werkzeug.serving import make_server

    from jobqueue import db, tokens
    from web import create_app

    with db.connect(url) as conn:
        token, _ = tokens.create(conn, "bench", ["admin"], note="bench_campaign_report")
    server = make_server("127.0.0.1", 0, create_app({"DATABASE_URL": url, "DEV": True}),
                         threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {token}"
        page = requests.Session()
        login = page.get(base + "/login", timeout=30)
        page.post(base + "/login", data={"token": token, "csrf_token": CSRF.search(
            login.text).group(1)}, allow_redirects=False, timeout=30)
        return (_timed(lambda: api.get(base + "/api/campaigns/bench/report", timeout=30),
                       repeat, '"share_of_voice"'),
                _timed(lambda: page.get(base + "/campaigns/bench", timeout=30), repeat,
                       "<polyline"))
    finally:
        server.shutdown()


def _timed(call, repeat: int, marker: str) -> list[float]:
    call()  # warm: first connections, templates
    out = []
    for _ in range(repeat):
        began = time.perf_counter()
        r = call()
        out.append((time.perf_counter() - began) * 1000)
        assert r.status_code == 200 and marker in r.text, (r.status_code, r.text[:300])
    return out


if __name__ == "__main__":
    main()
