"""Alerts without Prometheus: thresholds per queue kept in Postgres, evaluated by the
maintenance leader at every pass (jobqueue/worker/maintenance.py), sent as webhook events.

    jobqueue alerts set emails --depth-over 1000 --latency-over 60s --dead-over 10
    jobqueue webhooks add https://hooks.slack.com/services/... --format slack \\
        --event alert.firing --event alert.resolved

A rule fires once when its measure goes over the threshold (alert.firing), stays silent
while it stays over, and sends one alert.resolved when it is back at or under it. The
measures, the de-duplication and the leader gating are one statement: alert_evaluate in
sql/queries/alerts.sql. A rule removed while firing sends nothing more.
"""

from __future__ import annotations

import re

import psycopg
import structlog
from psycopg.rows import dict_row

from jobqueue.db.queries import q
from jobqueue.errors import InvalidWebhook

log = structlog.get_logger("jobqueue.webhooks")

METRICS = ("depth", "latency", "dead")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """'60s', '5m', '1h', '250ms' or plain seconds -> seconds."""
    m = _DURATION.match(text or "")
    if not m:
        raise InvalidWebhook(f"latency: {text!r} is not a duration (e.g. 60s, 5m, 1h)")
    return float(m[1]) * _UNITS[m[2]]


def set_rule(conn: psycopg.Connection, queue: str, metric: str, threshold: float) -> None:
    if not queue or "\x00" in queue:
        raise InvalidWebhook("queue: required, a queue name")
    if metric not in METRICS:
        raise InvalidWebhook(f"metric: {metric!r} is not one of {', '.join(METRICS)}")
    if not 0 <= threshold < float("inf"):
        raise InvalidWebhook(f"{metric}: the threshold must be a number of at least 0")
    conn.execute(q("alert_set"), {"queue": queue, "metric": metric, "threshold": threshold})


def list_rules(conn: psycopg.Connection, queue: str | None = None) -> list[dict]:
    return conn.cursor(row_factory=dict_row).execute(q("alert_list"),
                                                     {"queue": queue}).fetchall()


def remove_rules(conn: psycopg.Connection, queue: str, metric: str | None = None) -> list[str]:
    """Remove a queue's rules (or one metric's); returns the metrics removed."""
    rows = conn.cursor(row_factory=dict_row).execute(q("alert_remove"), {
        "queue": queue, "metric": metric}).fetchall()
    return [r["metric"] for r in rows]


async def evaluate(conn: psycopg.AsyncConnection) -> list[tuple]:
    """One pass (leader-gated in SQL): [(queue, metric, event type, value, threshold, ...)]
    for the rules that flipped."""
    cur = await conn.execute(q("alert_evaluate"))
    flips = await cur.fetchall()
    for queue, metric, kind, value, threshold, deliveries in flips:
        log.warning("alert", queue=queue, metric=metric, alert_event=kind, value=value,
                    threshold=threshold, deliveries=deliveries)
    return flips


async def maintain(conn: psycopg.AsyncConnection, retention_seconds: float) -> int:
    """The maintenance pass of webhooks and alerts: evaluate the alert rules, and prune
    deliveries older than the retention of finished jobs. Returns deliveries pruned."""
    await evaluate(conn)
    cur = await conn.execute(q("webhook_deliveries_prune"), {
        "retention_seconds": retention_seconds, "limit": 10000})
    return (await cur.fetchone())[0]
