"""What every dashboard page module uses (web/dashboard.py and the dashboard_*.py modules that
join its blueprint): rendering a page or its `live` block, reading through the reader,
changing on the primary (and noting the primary's WAL position in the session, so this
session's next pages read what it changed), checking input (400 naming the field), and
attaching a module's routes to the blueprint once. (A manual action on jobs is recorded by
the store function that acts, given web.auth.acting().)
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from flask import Blueprint, Response, abort, render_template, request, session
from pydantic import ValidationError

from jobqueue.db.queries import q
from web.contract import describe
from web.replica import wal_position
from web.resources import resources

# The session key of the primary's WAL position after this session's last change.
WROTE_AT = "wrote_at"


def attach_once(attach: Callable[[Blueprint], None]) -> Callable[[Blueprint], None]:
    """For a module's `attach(bp)`, which adds its routes to the dashboard blueprint: run it
    once per blueprint (the blueprint is made once, at import; create_app runs once per app,
    and tests make many apps)."""

    @functools.wraps(attach)
    def once(bp: Blueprint) -> None:
        done = bp.__dict__.setdefault("_jobqueue_attached", set())
        if attach.__module__ not in done:
            done.add(attach.__module__)
            attach(bp)

    return once


def render(template: str, **context) -> Response:
    """A full page, or only its `live` block when the page's script asks for an update."""
    partial = bool(request.args.get("partial"))
    response = Response(render_template(f"dashboard/{template}", partial=partial, **context))
    response.headers["Cache-Control"] = "no-store"
    return response


def wrote_at() -> int | None:
    """The primary's WAL position after this session's last change, while it is noted."""
    position = session.get(WROTE_AT)
    return position if isinstance(position, int) else None


def reader():
    """Where this request's pages read: the reader, or the primary while the replica has not
    replayed this session's last change (then the note is dropped)."""
    position = wrote_at()
    pool = resources().reader_after(position)
    if position is not None and pool is not resources().client:
        session.pop(WROTE_AT, None)
    return pool


def read(call, *args, timeout: str | None = None):
    """Call a store function that reads, on a connection of the reader; with a timeout,
    inside a transaction that carries it."""
    with reader().pool.connection() as conn:
        if timeout is None:
            return call(conn, *args)
        with conn.transaction():
            conn.execute(q("dashboard_statement_timeout"), {"timeout": timeout})
            return call(conn, *args)


def note_change() -> None:
    """After a change: this session reads on the primary until the replica has replayed it."""
    if resources().replicated:
        session[WROTE_AT] = wal_position(resources().client)


def change(call, *args):
    """Call a store function that changes something (jobs, deliveries), on the primary."""
    with resources().client.pool.connection() as conn:
        done = call(conn, *args)
    note_change()
    return done


def checked(model, data: dict):
    """`data` read by `model` (web/schemas.py), or 400 naming the field: a NUL, a name too
    long for an index, an id beyond bigint never reach the database."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        abort(400, description=describe(exc.errors(include_url=False)[0]))

