"""The dashboard's operator controls beyond retry and cancel: run a scheduled or retrying job
now, quiet or stop a worker process, and use a disabled API key again. (Queue caps, pause and
schedules' "run now" are on their own pages.)

Its routes join the dashboard's blueprint (`attach`): behind an admin session and the CSRF
token like every dashboard POST (a read-only session gets 403). Job changes go through
jobqueue/db/store.py and are recorded with who made them (jobqueue/audit.py).
"""

from __future__ import annotations

import uuid

from flask import Blueprint, abort, flash, redirect, request, url_for

from jobqueue.db import store
from jobqueue.db.queries import q
from jobqueue.llm.ratelimit import set_key_disabled
from web.auth import acting
from web.dashboard_support import attach_once, change


@attach_once
def attach(bp: Blueprint) -> None:
    """Add the controls to the dashboard blueprint (once, before it is registered)."""
    bp.add_url_rule("/jobs/<int:job_id>/run-now", "job_run_now", job_run_now,
                    methods=["POST"])
    bp.add_url_rule("/workers/<worker_id>/<any(quiet, stop):control>", "worker_control",
                    worker_control, methods=["POST"])
    bp.add_url_rule("/limits/keys/enable", "key_enable", key_enable, methods=["POST"])


def job_run_now(job_id: int):
    if change(store.run_now, job_id, acting()):
        flash(f"Job {job_id} is due now: the next free worker of its queue runs it.")
    else:
        flash(f"Job {job_id} was not made due: only a scheduled or retrying job waits for its "
              "time.", "error")
    return redirect(url_for(".job", job_id=job_id))


def worker_control(worker_id: str, control: str):
    """Ask a worker to quiet (claim nothing more) or stop (finish in-flight work, exit); it
    reads the request at its next heartbeat."""
    from flask import g

    from web.resources import resources

    try:
        wid = uuid.UUID(worker_id)
    except ValueError:
        abort(400, description="worker: a worker id (UUID)")
    with resources().client.pool.connection() as conn:
        row = conn.execute(q("worker_control"), {"id": wid, "control": control,
                                                 "by": g.principal.owner}).fetchone()
    if row is None:
        abort(404, description=f"worker {worker_id}: not running")
    flash(f"Worker {str(wid)[:8]} asked to {row['control']}: it "
          + ("finishes what it runs and exits." if row["control"] == "stop"
             else "claims nothing more and finishes what it runs.")
          + " It reads the request at its next heartbeat.")
    return redirect(url_for(".workers"))


def key_enable():
    """Use a disabled API key again (as `jobqueue keys enable`): running workers pick it up
    at their next reservation."""
    platform = request.form.get("platform", "").strip()
    key_id = request.form.get("key_id", "").strip()
    for name, value in (("platform", platform), ("key_id", key_id)):
        if not value or len(value) > 200 or "\x00" in value:
            abort(400, description=f"{name}: required, at most 200 characters")
    rows = change(set_key_disabled, key_id, platform, None)
    if not rows:
        abort(404, description=f"key {key_id}: no such key on platform {platform}")
    flash(f"Key {key_id} on {platform} enabled: workers use it from their next call.")
    return redirect(url_for(".limits"))
