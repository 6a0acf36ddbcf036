"""Webhooks: owners' subscriptions to events, delivered as signed HTTP POSTs by jobs on the
`webhooks` queue (the built-in task `webhook.deliver`), and alerts on queue thresholds.

    signing.py        the signature header (t=...,v1=...) and its verification
    addresses.py      which URLs and addresses a webhook may reach (SSRF guard)
    delivery.py       the `webhook.deliver` task: one signed request, its outcome recorded
    subscriptions.py  subscriptions and deliveries: create, list, remove, redeliver
    alerts.py         thresholds per queue, evaluated by the maintenance leader

Events arise in SQL: jobs arriving in `finished` (job.succeeded, job.dead, batch.completed)
fan out through a trigger (sql/migrations/0016_webhooks_alerts.sql); alert flips in
alert_evaluate; anything else through `emit()` here, e.g. the scheduler's schedule.failed.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from jobqueue.db.queries import q
from jobqueue.errors import InvalidWebhook

JOB_EVENTS = ("job.succeeded", "job.dead", "batch.completed", "schedule.failed")
ALERT_EVENTS = ("alert.firing", "alert.resolved")
EVENT_TYPES = JOB_EVENTS + ALERT_EVENTS
QUEUE = "webhooks"          # the queue delivery jobs go to: run `jobqueue worker --queue webhooks`
TASK = "webhook.deliver"    # the built-in task that sends one delivery


_EVENT_ID = re.compile(r"[A-Za-z0-9._:@-]{1,200}")


def _emit_params(event_type: str, owner: str | None, data: Any, event_id: str | None) -> dict:
    if event_type not in EVENT_TYPES:
        raise InvalidWebhook(f"event_type: {event_type!r} is not one of "
                             f"{', '.join(EVENT_TYPES)}")
    if event_id is not None and not _EVENT_ID.fullmatch(event_id):
        raise InvalidWebhook("event_id: 1 to 200 of A-Z a-z 0-9 . _ : @ -")
    # Only alert events go to every owner's subscriptions; any other event without an owner
    # is for the subscriptions of jobs without one (''), never broadcast.
    owner = None if event_type in ALERT_EVENTS else (owner or "")
    return {"event_type": event_type, "owner": owner,
            "event_id": event_id or f"{event_type}:{uuid.uuid4()}",
            "data": json.dumps(data, allow_nan=False)}


def emit(conn, event_type: str, owner: str | None, data: Any,
         event_id: str | None = None) -> int:
    """Send an event to the subscriptions of `owner` that want `event_type` (None or '': the
    subscriptions of jobs without an owner; alert events go to every subscription naming
    them, whatever the owner), in the caller's transaction: nothing is sent
    if it rolls back. `event_id` is the receivers' idempotency key (default: a new uuid); an
    id already delivered to a subscription is not delivered again. Returns the deliveries
    queued. `conn` is a psycopg Connection; use `emit_async` on an AsyncConnection."""
    cur = conn.execute(q("webhook_emit"), _emit_params(event_type, owner, data, event_id))
    return _count(cur.fetchone())


async def emit_async(conn, event_type: str, owner: str | None, data: Any,
                     event_id: str | None = None) -> int:
    """emit() on a psycopg AsyncConnection (the worker's side: the scheduler, say)."""
    cur = await conn.execute(q("webhook_emit"), _emit_params(event_type, owner, data, event_id))
    return _count(await cur.fetchone())


def _count(row) -> int:
    return row["deliveries"] if isinstance(row, dict) else row[0]
