"""`jobqueue status`: per queue counts, state (paused, rate limited) and latency; the worker
processes; the platform keys used in the last hour (`--all`: every key)."""

from __future__ import annotations

import click

from jobqueue import db
from jobqueue.cli.common import (
    Column,
    open_client,
    print_json,
    state_colour,
    table,
)

RECENT_SECONDS = 3600  # keys idle longer than this are left out unless --all


def queue_state(row: dict) -> str:
    """One word for a queue: paused, rate limited (latency 0: waiting for the provider) or
    active."""
    if row.get("paused"):
        return "paused"
    if row.get("rate_limited"):
        return "rate-limited"
    return "active"


QUEUE_COLUMNS = [
    Column("queue", "QUEUE", "text"), Column("state", "STATE", "text", state_colour),
    Column("blocked", "BLOCKED"), Column("waiting", "WAITING"),
    Column("scheduled", "SCHEDULED"), Column("retrying", "RETRYING", style=lambda v: (
        "yellow" if v else None)),
    Column("running", "RUNNING"), Column("succeeded", "SUCCEEDED"),
    Column("dead", "DEAD", style=lambda v: "red" if v else None),
    Column("cancelled", "CANCELLED"), Column("latency_seconds", "LATENCY", "duration"),
    Column("finished_last_minute", "DONE/MIN"), Column("workers", "WORKERS"),
]

KEY_COLUMNS = [
    Column("platform", "PLATFORM", "text"), Column("model", "MODEL", "text"),
    Column("key_id", "KEY", "text"), Column("rpm", "RPM"), Column("tpm", "TPM"),
    Column("requests_total", "REQUESTS"), Column("throttled_total", "THROTTLED"),
    Column("idle_seconds", "LAST USED", "duration"),
    Column("state", "STATE", "text", state_colour),
]

WORKER_COLUMNS = [
    Column("queue", "QUEUES", "text"), Column("pid", "PID"), Column("host", "HOST", "text"),
    Column("in_flight", "IN FLIGHT"), Column("connections", "CONNECTIONS"),
]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (every key).")
@click.option("--all", "show_all", is_flag=True,
              help="Every platform key, not only those used in the last hour.")
def status(as_json: bool, show_all: bool) -> None:
    """Per queue: state (active, paused, rate limited), blocked, waiting, scheduled,
    retrying, running, succeeded, dead, cancelled; latency (the age of the oldest job waiting
    for a worker), throughput, live workers; each worker process with its Postgres
    connections; the platform keys used in the last hour."""
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
    click.echo(render(where, rows, workers, limits, cache, connections, show_all))


def render(where: str, rows, workers, limits, cache, connections, show_all: bool) -> str:
    """The text of `jobqueue status` (without colour when stdout is not a terminal)."""
    from jobqueue.llm.ratelimit import key_state

    out = [f"database: {where}"]
    for r in rows:
        r["state"] = queue_state(r)
    out.append(table(rows, QUEUE_COLUMNS) if rows else "(no jobs yet)")
    if any(r["rate_limited"] for r in rows):
        out.append("rate limited: waiting for the provider's budget (latency shown as 0)")
    out.append(f"\n{len(workers)} worker process(es), "
               f"{sum(w['connections'] for w in workers)} Postgres connection(s)")
    if workers:
        out.append(table(workers, WORKER_COLUMNS))
    by_app: dict[str, int] = {}
    for r in connections:
        by_app[r["application_name"]] = by_app.get(r["application_name"], 0) + r["count"]
    out.append("database connections: "
               + (", ".join(f"{app} {n}" for app, n in by_app.items()) or "none"))
    recent = [r for r in limits
              if show_all or (r.get("idle_seconds") or 0) <= RECENT_SECONDS]
    for r in recent:
        r["state"] = key_state(r)
        r["idle_seconds"] = max(0.0, r.get("idle_seconds") or 0.0)
    hidden = len(limits) - len(recent)
    if recent:
        out.append("\nplatform keys" + ("" if show_all else " used in the last hour") + ":")
        out.append(table(recent, KEY_COLUMNS))
    if hidden:
        out.append(f"({hidden} key(s) unused for over an hour not shown; --all shows them)")
    if cache["entries"] or cache["hits"]:
        out.append(f"cache: {cache['entries']} entries, {cache['hits']} hits")
    return "\n".join(out)
