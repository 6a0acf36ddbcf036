"""`jobqueue queues list|set|pause|resume`: a queue's settings, stored in Postgres and obeyed
by every worker at its next claim: fleet-wide caps on running jobs and fair shares between
owners (jobqueue/queues.py), and pausing."""

from __future__ import annotations

import click

from jobqueue.cli.common import (
    Column,
    UserError,
    connection,
    print_json,
    print_rows,
    state_colour,
    table,
)
from jobqueue.errors import InvalidQueueSettings, QueueBusy


@click.group()
def queues() -> None:
    """Queue settings: caps on running jobs, fairness between owners, retry order, pause."""


def _describe(row: dict) -> str:
    caps = []
    if row["max_running"] is not None:
        caps.append(f"max_running {row['max_running']}")
    if row["max_running_per_owner"] is not None:
        caps.append(f"per owner {row['max_running_per_owner']}")
    return (f"{row['queue']}  running {row['running']}  "
            f"{', '.join(caps) or 'no caps'}  {'fair' if row['fair'] else 'fifo'}"
            f"  retries {row['retry_order']}{'  paused' if row['paused'] else ''}")


@queues.command("list")
@click.option("--json", "as_json", is_flag=True)
def queues_list(as_json) -> None:
    """Queues with settings, and how many of their jobs run now."""
    from jobqueue import queues as settings

    with connection() as conn:
        rows = settings.list_settings(conn)
    print_rows(rows, as_json, "no queue has settings yet (`jobqueue queues set|pause NAME`)",
               _settings_table)


def _settings_table(rows: list[dict]) -> str:
    for row in rows:
        row["order"] = "fair" if row["fair"] else "fifo"
        row["state"] = "paused" if row["paused"] else "active"
    return table(rows, [
        Column("queue", "QUEUE", "text"), Column("state", "STATE", "text", state_colour),
        Column("running", "RUNNING"), Column("max_running", "MAX RUNNING"),
        Column("max_running_per_owner", "PER OWNER"), Column("order", "ORDER", "text"),
        Column("retry_order", "RETRIES", "text")])


@queues.command("set")
@click.argument("name")
@click.option("--max-running", metavar="N|none", default=None,
              help="Jobs of the queue running at once across every worker and host.")
@click.option("--max-running-per-owner", metavar="N|none", default=None,
              help="The same per owner (implies --fair).")
@click.option("--fair/--no-fair", default=None,
              help="Round robin between owners within a priority level.")
@click.option("--retries", "retry_order", type=click.Choice(["first", "last"]), default=None,
              help="Where retries go in the claim order: before new work of the same "
                   "priority (first, the default: failures surface early) or after it (last). "
                   "Applies to retries scheduled from now on.")
@click.option("--json", "as_json", is_flag=True)
def queues_set(name, max_running, max_running_per_owner, fair, retry_order, as_json) -> None:
    """Change a queue's caps, fairness and retry order; options left out keep their value.
    Workers apply the change at their next claim."""
    from jobqueue import queues as settings

    changes = {}
    try:
        if max_running is not None:
            changes["max_running"] = settings.parse_cap("--max-running", max_running)
        if max_running_per_owner is not None:
            changes["max_running_per_owner"] = settings.parse_cap(
                "--max-running-per-owner", max_running_per_owner)
        if fair is not None:
            changes["fair"] = fair
        if retry_order is not None:
            changes["retry_order"] = retry_order
        with connection() as conn:
            row = settings.change(conn, name, **changes)
    except InvalidQueueSettings as exc:
        raise UserError(str(exc).replace("max_running_per_owner", "--max-running-per-owner")
                        .replace("max_running", "--max-running")
                        .replace("fair:", "--fair:")) from None
    except QueueBusy as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json(row)
    else:
        click.echo(_describe(row))


@queues.command("pause")
@click.argument("name")
def queues_pause(name) -> None:
    """Stop workers claiming from the queue (running jobs finish)."""
    _pause(name, True)


@queues.command("resume")
@click.argument("name")
def queues_resume(name) -> None:
    """Let workers claim from the queue again."""
    _pause(name, False)


def _pause(name: str, paused: bool) -> None:
    from jobqueue import queues as settings

    try:
        with connection() as conn:
            settings.pause(conn, name, paused)
    except InvalidQueueSettings as exc:
        raise UserError(str(exc)) from None
    click.echo(f"{name} {'paused' if paused else 'resumed'}")
