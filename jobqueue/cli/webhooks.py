"""`jobqueue webhooks add|list|remove|deliveries|redeliver`: subscriptions to events and
their deliveries. Deliveries are jobs on the `webhooks` queue: run a worker for it
(`jobqueue worker --queue webhooks`). The CLI acts as an operator: it may subscribe to alert
events and sees every owner's subscriptions."""

from __future__ import annotations

import click

from jobqueue.cli.common import ID, UserError, connection, lines, print_rows


@click.group()
def webhooks() -> None:
    """Webhook subscriptions: signed POSTs when jobs, batches, schedules or alerts change."""


def _events_help() -> str:
    from jobqueue.webhooks import EVENT_TYPES

    return "Repeatable: " + ", ".join(EVENT_TYPES) + "."


@webhooks.command("add")
@click.argument("url")
@click.option("--event", "events", multiple=True, required=True, help=_events_help())
@click.option("--owner", default="", show_default="'' (jobs enqueued without an owner)",
              help="Whose events: the owner of the API token that enqueues the jobs.")
@click.option("--format", "fmt", type=click.Choice(["json", "slack"]), default="json",
              help="json: the signed event; slack: {\"text\": ...} for a chat webhook.")
@click.option("--max-attempts", type=click.IntRange(1, 50), default=10,
              help="Attempts per delivery before it is dead.")
@click.option("--description", default=None)
def webhooks_add(url, events, owner, fmt, max_attempts, description) -> None:
    """Subscribe URL to events; prints the signing secret once (it is not shown again)."""
    from jobqueue.errors import InvalidWebhook
    from jobqueue.webhooks import subscriptions

    with connection() as conn:
        try:
            row = subscriptions.create(conn, owner, url, list(events), format=fmt,
                                       max_attempts=max_attempts, description=description,
                                       admin=True)
        except InvalidWebhook as exc:
            raise UserError(str(exc)) from None
    click.echo(f"webhook {row['id']} for {row['owner'] or '(no owner)'}: {row['url']} "
               f"({', '.join(row['events'])}); its signing secret, shown only now:", err=True)
    click.echo(row["secret"])


@webhooks.command("list")
@click.option("--owner", default=None, help="Only this owner's.")
@click.option("--json", "as_json", is_flag=True)
def webhooks_list(owner, as_json) -> None:
    """The subscriptions (of --owner): id, URL, events, format (never the secret)."""
    from jobqueue.webhooks import subscriptions

    with connection() as conn:
        rows = subscriptions.list_subscriptions(conn, owner)
    print_rows(rows, as_json, "no webhooks", lines(
        lambda r: f"{r['id']}  {r['owner'] or '-'}  {r['url']}  {','.join(r['events'])}  "
                  f"{r['format']}  max_attempts={r['max_attempts']}"))


@webhooks.command("remove")
@click.argument("subscription_id", type=ID)
def webhooks_remove(subscription_id) -> None:
    """Remove a subscription and its deliveries (queued ones are not sent)."""
    from jobqueue.webhooks import subscriptions

    with connection() as conn:
        if not subscriptions.remove(conn, subscription_id, None):
            raise UserError(f"webhook {subscription_id}: no such webhook")
    click.echo(f"webhook {subscription_id}: removed")


@webhooks.command("deliveries")
@click.argument("subscription_id", type=ID, required=False)
@click.option("--state", type=click.Choice(["pending", "retrying", "succeeded", "dead"]))
@click.option("--limit", type=click.IntRange(1, 1000), default=50)
@click.option("--json", "as_json", is_flag=True)
def webhooks_deliveries(subscription_id, state, limit, as_json) -> None:
    """The newest deliveries (of one webhook): state, attempts, last response code."""
    from jobqueue.webhooks import subscriptions

    with connection() as conn:
        rows = subscriptions.deliveries(conn, None, subscription_id, state, limit)
    print_rows(rows, as_json, "no deliveries", lines(
        lambda r: f"{r['id']}  webhook {r['subscription_id']}  {r['event_type']}  "
                  f"{r['state']}  attempts={r['attempts']}  "
                  f"code={r['response_code'] or '-'}  {r['last_error'] or ''}".rstrip()))


@webhooks.command("redeliver")
@click.argument("delivery_id", type=ID)
def webhooks_redeliver(delivery_id) -> None:
    """Send a delivery again: same body, same event id, a fresh attempt budget."""
    from jobqueue.webhooks import subscriptions

    with connection() as conn:
        outcome = subscriptions.redeliver(conn, delivery_id, None)
    if outcome == "not_found":
        raise UserError(f"delivery {delivery_id}: no such delivery")
    if outcome == "busy":
        raise UserError(f"delivery {delivery_id}: its job is still queued or running")
    click.echo(f"delivery {delivery_id}: queued again")
