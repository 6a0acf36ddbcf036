"""Queue settings an operator changes at run time, kept in Postgres and obeyed by every
worker on every host: pausing, fleet-wide caps on running jobs (in all and per owner), fair
shares between owners, and where retries go in the claim order (`retry_order`: before new
work of the same priority, the default, or after it; sql/migrations/0024_retry_order.sql).
Reading and validating them, and changing them safely (turning
fairness on numbers the queue's waiting jobs). The claim statement enforces them
(sql/queries/jobs.sql `claim`); the CLI (`jobqueue queues`), the API and the dashboard call
this module. Functions run on a connection the caller holds and never open their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from jobqueue.db.queries import q
from jobqueue.errors import InvalidQueueSettings, QueueBusy

# Caps are whole numbers of jobs; a cap larger than this is a typo, not a limit.
MAX_CAP = 1_000_000
MAX_NAME_LENGTH = 200
# How long turning fairness on or off waits for enqueues in flight; enqueues queue up behind
# it meanwhile (see sql/queries/queues.sql, fairness_exclusive).
FAIRNESS_LOCK_TIMEOUT = "5s"

UNCHANGED: Any = object()  # an argument of `change` left as it is


@dataclass(frozen=True)
class QueueSettings:
    max_running: int | None = None
    max_running_per_owner: int | None = None
    fair: bool = False
    retry_order: str = "first"


RETRY_ORDERS = ("first", "last")


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise InvalidQueueSettings(
            f"queue: a name of 1 to {MAX_NAME_LENGTH} characters is required")
    return name


def check_cap(field: str, value: Any) -> int | None:
    """A cap: None (no cap) or a whole number from 1 to MAX_CAP."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidQueueSettings(f"{field}: a whole number or null (no cap) is required")
    if not 1 <= value <= MAX_CAP:
        raise InvalidQueueSettings(f"{field}: must be between 1 and {MAX_CAP} (or null)")
    return value


def parse_cap(field: str, text: str) -> int | None:
    """A cap as people type it: a number, or none/off for no cap."""
    if text.strip().lower() in ("none", "off", "null", ""):
        return None
    try:
        value = int(text)
    except ValueError:
        raise InvalidQueueSettings(f"{field}: {text!r} is not a number (or none)") from None
    return check_cap(field, value)


def resolve(current: QueueSettings, max_running: Any = UNCHANGED,
            max_running_per_owner: Any = UNCHANGED, fair: Any = UNCHANGED,
            retry_order: Any = UNCHANGED) -> QueueSettings:
    """The settings after a change. A per-owner cap needs the fair order, so setting one turns
    fairness on; turning fairness off while a per-owner cap stays is refused."""
    new_max = current.max_running if max_running is UNCHANGED else check_cap(
        "max_running", max_running)
    new_per_owner = (current.max_running_per_owner if max_running_per_owner is UNCHANGED
                     else check_cap("max_running_per_owner", max_running_per_owner))
    if fair is not UNCHANGED and not isinstance(fair, bool):
        raise InvalidQueueSettings("fair: true or false is required")
    if fair is UNCHANGED:
        new_fair = current.fair or new_per_owner is not None
    elif not fair and new_per_owner is not None:
        raise InvalidQueueSettings(
            "fair: a per-owner cap needs fair shares; remove max_running_per_owner first")
    else:
        new_fair = fair
    if retry_order is UNCHANGED:
        retry_order = current.retry_order
    elif retry_order not in RETRY_ORDERS:
        raise InvalidQueueSettings(
            f"retry_order: {' or '.join(RETRY_ORDERS)} is required (first: retries go before "
            "new work of the same priority; last: after it)")
    return QueueSettings(new_max, new_per_owner, new_fair, retry_order)


def list_settings(conn: psycopg.Connection, name: str | None = None) -> list[dict]:
    """Queues with settings (or the one named), with their running jobs right now."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q("queue_settings"), {"name": name}).fetchall()


def change(conn: psycopg.Connection, name: str, *, max_running: Any = UNCHANGED,
           max_running_per_owner: Any = UNCHANGED, fair: Any = UNCHANGED,
           retry_order: Any = UNCHANGED) -> dict:
    """Change a queue's caps, fairness and retry order in one transaction and return its settings.
    Turning fairness on numbers the queue's jobs in turns per owner (time in proportion to
    them; enqueues everywhere wait meanwhile); turning it off drops the numbers. Raises
    InvalidQueueSettings for bad values, QueueBusy when enqueues in flight held the change
    back past FAIRNESS_LOCK_TIMEOUT."""
    check_name(name)
    with conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            current = QueueSettings(**cur.execute(q("queue_settings_lock"),
                                                  {"name": name}).fetchone())
        new = resolve(current, max_running, max_running_per_owner, fair, retry_order)
        if new.fair != current.fair:
            conn.execute("SELECT set_config('lock_timeout', %s, true)",
                         (FAIRNESS_LOCK_TIMEOUT,))
            try:
                conn.execute(q("fairness_exclusive"))
            except psycopg.errors.LockNotAvailable:
                raise QueueBusy(
                    f"queue {name}: enqueues in progress held the change of fairness back "
                    f"for {FAIRNESS_LOCK_TIMEOUT}; try again") from None
            conn.execute("SELECT set_config('lock_timeout', '0', true)")
            conn.execute(q("fairness_forget"), {"name": name})
            if new.fair:
                conn.execute(q("fairness_number_rows"), {"name": name})
        conn.execute(q("queue_settings_store"), {
            "name": name, "max_running": new.max_running,
            "max_running_per_owner": new.max_running_per_owner, "fair": new.fair,
            "retry_order": new.retry_order})
    return list_settings(conn, name)[0]


def pause(conn: psycopg.Connection, name: str, paused: bool) -> None:
    """Pause a queue (workers claim nothing from it) or resume it."""
    conn.execute(q("queue_pause"), {"name": check_name(name), "paused": paused})
