"""`jobqueue schedules add|list|show|pause|resume|run-now|remove`: recurring work."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from jobqueue.cli.common import (
    Column,
    FiniteFloat,
    UserError,
    connection,
    json_option,
    print_json,
    print_rows,
    table,
)
from jobqueue.errors import InvalidSchedule


@click.group()
def schedules() -> None:
    """Recurring work: cron schedules stored in Postgres, run by every worker."""


@schedules.command("add")
@click.argument("name")
@click.option("--cron", "cron_expr", required=True,
              help="5 fields (minute hour day month weekday) or @hourly, @daily, ...")
@click.option("--timezone", "--tz", default="UTC", help="IANA zone the cron is read in.")
@click.option("--kind", "-k", default=None, help="Task to enqueue (with --platform: chat).")
@click.option("--queue", "-q", default=None, help="Default: [tasks.KIND] queue, or 'default'.")
@click.option("--payload", default=None, help="JSON payload of the job.")
@click.option("--platform", default=None, help="An LLM platform of jobqueue.toml.")
@click.option("--prompt", default=None, help="With --platform: the prompt of a chat job.")
@click.option("--batch-file", type=click.Path(dir_okay=False), default=None,
              help="With --platform: a JSONL or CSV batch file, checked and stored now.")
@click.option("--template", default=None, help="CSV: a prompt with {column} placeholders.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None)
@click.option("--priority", default=None, help="Integer (lower runs first) or high|normal|low.")
@click.option("--max-attempts", type=click.IntRange(1), default=None)
@click.option("--timeout", type=FiniteFloat(0, min_open=True), default=None)
@click.option("--misfire", type=click.Choice(["skip", "once", "all"]), default="once",
              help="Fires missed while no worker ran: skip, one catch-up, or each.")
@click.option("--max-lateness", type=FiniteFloat(0, min_open=True), default=None,
              help="Seconds: a missed fire later than this is skipped.")
@click.option("--owner", default=None)
@click.option("--paused", is_flag=True, help="Save it paused.")
@click.option("--replace", is_flag=True, help="Replace a schedule of the same name.")
def schedules_add(name, cron_expr, timezone, kind, queue, payload, platform, prompt,
                  batch_file, template, fmt, priority, max_attempts, timeout, misfire,
                  max_lateness, owner, paused, replace) -> None:
    """Save a schedule; print its next fires."""
    from jobqueue.schedules import spec, store

    data = json_option(payload, "--payload")
    if platform and data is not None and not isinstance(data, dict):
        raise UserError("--payload: must be a JSON object with --platform")
    if prompt is not None:
        if not platform or batch_file:
            raise UserError("--prompt goes with --platform (and not with --batch-file)")
        data = (data or {}) | {"prompt": prompt}
    fields = {"cron": cron_expr, "timezone": timezone, "kind": kind, "queue": queue,
              "payload": data, "platform": platform, "batch_file": batch_file,
              "template": template, "format": fmt, "priority": priority,
              "max_attempts": max_attempts, "timeout": timeout, "misfire": misfire,
              "max_lateness": max_lateness, "owner": owner, "paused": paused}
    try:
        definition = spec.build(name, fields)
    except InvalidSchedule as exc:
        field, _, problem = str(exc).partition(": ")
        where = "NAME" if field == "name" else "--" + field.replace("_", "-")
        raise UserError(f"{where}: {problem}") from None
    with connection() as conn:
        outcome = store.save(conn, definition, datetime.now(UTC), replace=replace)
        if outcome == "kept":
            raise UserError(f"schedule {name}: exists (--replace to change it)")
        (row,) = store.listing(conn, name=name)
    click.echo(f"schedule {name}: {outcome}; next fires (UTC): "
               + ", ".join(f"{t:%Y-%m-%d %H:%M}" for t in row["next_fires"][:3]), err=True)


@schedules.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--owner", default=None)
def schedules_list(as_json, owner) -> None:
    """Every schedule: cron, zone, next fire, last run and its outcome, paused."""
    from jobqueue.schedules import store

    with connection() as conn:
        rows = store.listing(conn, owner=owner)
    print_rows(rows, as_json, "(no schedules)", _listing_table)


def _listing_table(rows: list[dict]) -> str:
    shown = [{"name": r["name"], "cron": r["cron"], "zone": r["timezone"],
              "next": None if r["paused"] else f"{r['next_fire_at']:%Y-%m-%d %H:%M}",
              "last": (f"{r['last_fire_at']:%Y-%m-%d %H:%M} {r['last_decision']}"
                       if r["last_fire_at"] else None),
              "outcome": r["last_outcome"], "state": "paused" if r["paused"] else "active"}
             for r in rows]
    return table(shown, [Column(key, heading, "text") for key, heading in (
        ("name", "NAME"), ("cron", "CRON"), ("zone", "ZONE"), ("next", "NEXT FIRE (UTC)"),
        ("last", "LAST RUN"), ("outcome", "OUTCOME"), ("state", "STATE"))])


@schedules.command("show")
@click.argument("name")
@click.option("--runs", "limit", type=click.IntRange(1, 1000), default=20,
              help="How many recent runs to list.")
def schedules_show(name, limit) -> None:
    """A schedule, its next fires and its recent runs with their jobs or batches (JSON)."""
    from jobqueue.schedules import store

    with connection() as conn:
        rows = store.listing(conn, name=name)
        if not rows:
            raise UserError(f"schedule {name}: no such schedule")
        print_json(rows[0] | {"runs": store.runs(conn, name, limit=limit)})


def _set_paused(name: str, paused: bool) -> None:
    from jobqueue.schedules import store

    with connection() as conn:
        row = store.set_paused(conn, name, paused, datetime.now(UTC))
    if row is None:
        raise UserError(f"schedule {name}: no such schedule")
    state = "paused" if paused else f"active; next fire {row['next_fire_at']:%Y-%m-%d %H:%M} UTC"
    click.echo(f"schedule {name}: {state}")


@schedules.command("pause")
@click.argument("name")
def schedules_pause(name) -> None:
    """Stop firing until resumed."""
    _set_paused(name, True)


@schedules.command("resume")
@click.argument("name")
def schedules_resume(name) -> None:
    """Fire again from the next fire time (the pause is not caught up)."""
    _set_paused(name, False)


@schedules.command("run-now")
@click.argument("name")
def schedules_run_now(name) -> None:
    """Enqueue one run now (its next fire is unchanged); print the job or batch id."""
    from jobqueue.schedules import tick

    with connection() as conn:
        run = tick.run_now(conn, name, datetime.now(UTC))
    if run is None:
        raise UserError(f"schedule {name}: no such schedule")
    if run["decision"] == "failed":
        raise UserError(f"schedule {name}: run {run['id']} failed: {run['reason']}")
    what = f"job {run['job_id']}" if run["job_id"] else f"batch {run['batch_id']}"
    click.echo(f"schedule {name}: run {run['id']} enqueued {what}", err=True)
    click.echo(run["job_id"] or run["batch_id"])


@schedules.command("remove")
@click.argument("name")
def schedules_remove(name) -> None:
    """Delete a schedule and its runs list (its jobs and batches stay)."""
    from jobqueue.schedules import store

    with connection() as conn:
        if not store.remove(conn, name):
            raise UserError(f"schedule {name}: no such schedule")
    click.echo(f"schedule {name}: removed")
