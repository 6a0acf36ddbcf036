"""`jobqueue alerts set|list|remove`: thresholds per queue, evaluated by the workers'
maintenance leader and sent to the webhooks subscribed to alert.firing / alert.resolved."""

from __future__ import annotations

import click

from jobqueue.cli.common import UserError, connection, lines, print_rows


@click.group()
def alerts() -> None:
    """Alerts on queue depth, latency and dead jobs, without Prometheus."""


@alerts.command("set")
@click.argument("queue")
@click.option("--depth-over", type=click.IntRange(0, 2**53), default=None,
              help="Fire while more jobs than this wait to run.")
@click.option("--latency-over", default=None,
              help="Fire while the oldest runnable job has waited longer (60s, 5m, 1h).")
@click.option("--dead-over", type=click.IntRange(0, 2**53), default=None,
              help="Fire while the queue holds more dead jobs than this.")
def alerts_set(queue, depth_over, latency_over, dead_over) -> None:
    """Set QUEUE's thresholds (those given; the others stay as they are)."""
    from jobqueue.errors import InvalidWebhook
    from jobqueue.webhooks import alerts as rules

    wanted = {}
    try:
        if depth_over is not None:
            wanted["depth"] = float(depth_over)
        if latency_over is not None:
            wanted["latency"] = rules.parse_duration(latency_over)
        if dead_over is not None:
            wanted["dead"] = float(dead_over)
    except InvalidWebhook as exc:
        raise UserError(str(exc).replace("latency:", "--latency-over:", 1)) from None
    if not wanted:
        raise UserError("give at least one of --depth-over, --latency-over, --dead-over")
    with connection() as conn, conn.transaction():
        for metric, threshold in wanted.items():
            rules.set_rule(conn, queue, metric, threshold)
    click.echo(f"alerts for {queue}: " + ", ".join(
        f"{metric} over {threshold:g}{'s' if metric == 'latency' else ''}"
        for metric, threshold in wanted.items()))


@alerts.command("list")
@click.option("--json", "as_json", is_flag=True)
def alerts_list(as_json) -> None:
    """Every alert rule: queue, measure, threshold, and whether it is firing."""
    from jobqueue.webhooks import alerts as rules

    with connection() as conn:
        rows = rules.list_rules(conn)
    print_rows(rows, as_json, "no alerts", lines(_rule_line))


def _rule_line(r: dict) -> str:
    unit = "s" if r["metric"] == "latency" else ""
    state = f"FIRING since {r['firing_since']:%Y-%m-%d %H:%M:%S}" if r["firing_since"] else "ok"
    last = "-" if r["last_value"] is None else f"{r['last_value']:g}{unit}"
    return f"{r['queue']}  {r['metric']} over {r['threshold']:g}{unit}  {state}  last {last}"


@alerts.command("remove")
@click.argument("queue")
@click.option("--metric", type=click.Choice(["depth", "latency", "dead"]), default=None,
              help="Only this threshold (default: all of the queue's).")
def alerts_remove(queue, metric) -> None:
    """Remove the rule on QUEUE (one measure with --metric, else all of them)."""
    from jobqueue.webhooks import alerts as rules

    with connection() as conn:
        removed = rules.remove_rules(conn, queue, metric)
    if not removed:
        raise UserError(f"alerts for {queue}: none set")
    click.echo(f"alerts for {queue}: removed {', '.join(removed)}")
