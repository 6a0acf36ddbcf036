"""Subscriptions and their deliveries, for the CLI, the web API and the dashboard: create
(the secret is returned once, then never), list, remove, list deliveries, redeliver.

`owner` arguments: the subscription's owner ('' for jobs enqueued without one); as a filter,
None means every owner (an admin's view). Alert events have no owner: subscribing to them is
for admins (`admin=True`), as they name every queue.
The secret is stored as given, not encrypted nor hashed: the server must hold the key
itself to compute each request's HMAC, and encrypting it with a key kept beside it (in the
same environment) would add a step, not a protection. It never leaves the database again
after creation: no query but the delivery task's selects it.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.rows import dict_row

from jobqueue.db.queries import q
from jobqueue.errors import InvalidWebhook
from jobqueue.webhooks import ALERT_EVENTS, EVENT_TYPES, addresses, signing

FORMATS = ("json", "slack")
MAX_ATTEMPTS_RANGE = (1, 50)
DEFAULT_MAX_ATTEMPTS = 10
MAX_DESCRIPTION = 500
MAX_SUBSCRIPTIONS_PER_OWNER = 100


def _cursor(conn: psycopg.Connection):
    return conn.cursor(row_factory=dict_row)


def create(conn: psycopg.Connection, owner: str, url: str, events: Sequence[str], *,
           format: str = "json", max_attempts: int = DEFAULT_MAX_ATTEMPTS,
           description: str | None = None, admin: bool = False) -> dict:
    """A new subscription, with its `secret` (shown to the caller once). InvalidWebhook names
    the field at fault."""
    events = list(dict.fromkeys(events))
    if not events:
        raise InvalidWebhook(f"events: name at least one of {', '.join(EVENT_TYPES)}")
    for event in events:
        if event not in EVENT_TYPES:
            raise InvalidWebhook(f"events: {event!r} is not one of {', '.join(EVENT_TYPES)}")
        if event in ALERT_EVENTS and not admin:
            raise InvalidWebhook(f"events: {event} is for admins (it reports every queue)")
    if format not in FORMATS:
        raise InvalidWebhook(f"format: {format!r} is not one of {', '.join(FORMATS)}")
    lo, hi = MAX_ATTEMPTS_RANGE
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not (
            lo <= max_attempts <= hi):
        raise InvalidWebhook(f"max_attempts: must be an integer in {lo}..{hi}")
    if description is not None and (len(description) > MAX_DESCRIPTION or "\x00" in description):
        raise InvalidWebhook(f"description: at most {MAX_DESCRIPTION} characters, no NUL")
    if "\x00" in owner:
        raise InvalidWebhook("owner: must not contain NUL")
    addresses.check_reachable(url)
    with conn.transaction():
        # One owner's subscriptions are counted under a lock on the owner's name, so two
        # concurrent creations cannot both pass the limit.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('jobqueue.webhooks:' || %s))",
                     (owner,))
        existing = len(list_subscriptions(conn, owner))
        if existing >= MAX_SUBSCRIPTIONS_PER_OWNER:
            raise InvalidWebhook(f"url: {owner or 'this owner'} already has "
                                 f"{existing} subscriptions, the most allowed")
        return _cursor(conn).execute(q("webhook_create"), {
            "owner": owner, "url": url, "events": events, "secret": signing.new_secret(),
            "format": format, "max_attempts": max_attempts,
            "description": description}).fetchone()


def list_subscriptions(conn: psycopg.Connection, owner: str | None) -> list[dict]:
    return _cursor(conn).execute(q("webhook_list"), {"owner": owner}).fetchall()


def get(conn: psycopg.Connection, subscription_id: int, owner: str | None) -> dict | None:
    return _cursor(conn).execute(q("webhook_get"), {"id": subscription_id,
                                                    "owner": owner}).fetchone()


def remove(conn: psycopg.Connection, subscription_id: int, owner: str | None) -> bool:
    return _cursor(conn).execute(q("webhook_remove"), {
        "id": subscription_id, "owner": owner}).fetchone() is not None


DELIVERY_STATES = ("pending", "retrying", "succeeded", "dead")


def deliveries(conn: psycopg.Connection, owner: str | None, subscription_id: int | None = None,
               state: str | None = None, limit: int = 50) -> list[dict]:
    """The newest deliveries an owner may see (of one subscription, in one state)."""
    if state is not None and state not in DELIVERY_STATES:
        raise InvalidWebhook(f"state: {state!r} is not one of {', '.join(DELIVERY_STATES)}")
    return _cursor(conn).execute(q("webhook_deliveries"), {
        "owner": owner, "subscription_id": subscription_id, "state": state,
        "limit": max(1, min(limit, 1000))}).fetchall()


def redeliver(conn: psycopg.Connection, delivery_id: int, owner: str | None) -> str:
    """Queue a delivery again (same body and event id): 'queued', 'busy' (its job is still
    queued or running) or 'not_found'."""
    row = _cursor(conn).execute(q("webhook_redeliver"), {"id": delivery_id,
                                                         "owner": owner}).fetchone()
    if row is None:
        return "not_found"
    return "queued" if row["queued"] else "busy"
