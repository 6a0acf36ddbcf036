"""`jobqueue status`: per queue counts and rates."""

from __future__ import annotations

from datetime import datetime

import click

from jobqueue import db
from jobqueue.cli.common import (
    cell,
    open_client,
    print_json,
)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Per queue: blocked, waiting, scheduled, retrying, running, succeeded, dead, cancelled;
    latency (the oldest job waiting for a worker), throughput, live workers; each worker
    process with its Postgres connections."""
    where = db.describe()  # before open_client, which sets DATABASE_URL for the embedded server
    with open_client() as jq:
        rows = jq.status()
        workers = jq.workers()
        limits = jq.rate_limits()
        cache = jq.cache_stats()
        connections = jq.db_connections()
    if as_json:
        print_json({"queues": rows, "workers": workers, "rate_limits": limits,
                     "cache": cache, "db_connections": connections})
        return
    columns = ("queue", "blocked", "waiting", "scheduled", "retrying", "running", "succeeded",
               "dead", "cancelled", "latency_seconds", "finished_last_minute", "workers")
    headers = ("QUEUE", "BLOCKED", "WAITING", "SCHEDULED", "RETRYING", "RUNNING", "SUCCEEDED",
               "DEAD", "CANCELLED", "LATENCY", "DONE/MIN", "WORKERS")
    click.echo(f"database: {where}")
    table = [headers] + [tuple(cell(r[c]) for c in columns) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    if not rows:
        click.echo("(no jobs yet)")
    limited = [r["queue"] for r in rows if r["rate_limited"]]
    if limited:
        click.echo(f"rate limited now (latency 0: waiting for the provider): "
                   f"{', '.join(limited)}")
    click.echo(f"\n{len(workers)} worker process(es), "
               f"{sum(w['connections'] for w in workers)} Postgres connection(s)" + "".join(
        f"\n  {w['queue']}: pid {w['pid']} on {w['host']}, {w['in_flight']} in flight, "
        f"{w['connections']} connection(s)" for w in workers))
    by_app: dict[str, int] = {}
    for r in connections:
        by_app[r["application_name"]] = by_app.get(r["application_name"], 0) + r["count"]
    click.echo("database connections: " + ", ".join(f"{app} {n}" for app, n in by_app.items()))
    for r in limits:
        state = (f"disabled ({r['disabled_reason']})" if r["disabled_reason"]
                 else "blocked" if r["blocked_until"] and r["blocked_until"] > datetime.now(
                     r["blocked_until"].tzinfo) else "ok")
        click.echo(f"  {r['platform']}/{r['model']} {r['key_id']}: {r['rpm']} rpm, "
                   f"{r['tpm']} tpm; {r['requests_total']} requests, "
                   f"{r['throttled_total']} throttled; {state}")
    if cache["entries"] or cache["hits"]:
        click.echo(f"cache: {cache['entries']} entries, {cache['hits']} hits")

