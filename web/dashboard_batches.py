"""The dashboard's page of one batch (`/batches/<id>`): progress by state and by platform (a
fan-out runs on several platform queues), the smoothed rate and a stable ETA, tokens, cost
and the fallback share, the answers (prompt → answer, a bounded page at a time, searchable),
and the batch's actions: retry every dead job, cancel what has not finished, download.

Its routes join the dashboard's blueprint (`attach`), so they share its sign-in, CSRF check,
templates and live refresh. Reads go through the reader like every page; actions change jobs
on the primary through jobqueue/db/store.py.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, request, url_for

from jobqueue.batches import progress
from jobqueue.db import store
from jobqueue.db.store import JobFilter
from jobqueue.jobs import FINISHED_STATES, STATES
from jobqueue.llm import costs
from web.auth import acting
from web.dashboard_support import attach_once, change, read, render

MAX_SEARCH = 200          # characters of an answers search
MAX_ID = 2**63 - 1


@attach_once
def attach(bp: Blueprint) -> None:
    """Add the batch page and its actions to the dashboard blueprint (once, before it is
    registered)."""
    bp.add_url_rule("/batches/<int:batch_id>", "batch", batch_page, methods=["GET"])
    for action in ("retry-dead", "cancel"):
        bp.add_url_rule(f"/batches/<int:batch_id>/{action}", "batch_action", batch_action,
                        methods=["POST"], defaults={"action": action})


def _segments(counts: dict, total: int) -> list[tuple[str, int, float]]:
    """(state, count, percent of total) for the states with jobs, for the progress bar."""
    total = max(total, 1)
    return [(s, counts[s], 100.0 * counts[s] / total)
            for s in (*STATES, "duplicates") if counts.get(s)]


def _search_args() -> tuple[int, str | None]:
    """The answers table's cursor and search text, checked (400 naming the field)."""
    raw_after = request.args.get("after", "").strip()
    after = 0
    if raw_after:
        if not (raw_after.isascii() and raw_after.isdigit()) or int(raw_after) > MAX_ID:
            abort(400, description="after: a job id (a whole number ≥ 0)")
        after = int(raw_after)
    text = request.args.get("q", "").strip() or None
    if text is not None and (len(text) > MAX_SEARCH or "\x00" in text):
        abort(400, description=f"q: at most {MAX_SEARCH} characters, no NUL")
    return after, text


def batch_page(batch_id: int):
    after, text = _search_args()
    found = read(store.batch, batch_id)
    if found is None:
        abort(404, description=f"batch {batch_id}: not found")
    counted = sum(found[s] for s in STATES) + found["duplicates"]
    total = max(found["total"], counted)
    done = sum(found[s] for s in FINISHED_STATES) + found["duplicates"]
    platforms = []
    for name, counts in sorted(found["platforms"].items()):
        finished = sum(counts.get(s, 0) for s in FINISHED_STATES)
        platforms.append({"name": name, "counts": counts, "total": counts["total"],
                          "done": finished, "segments": _segments(counts, counts["total"])})
    pace = read(progress.pace, batch_id, found["platforms"])
    page = read(progress.answers, batch_id, after, text)
    return render("batch.html", title=f"Batch {batch_id}", b=found, total=total, done=done,
                  segments=_segments(found, total), platforms=platforms, pace=pace,
                  spent=read(costs.batch_costs, batch_id), answers=page, after=after,
                  q=text or "", scan=progress.ANSWERS_SCAN)


def batch_action(batch_id: int, action: str):
    if read(store.batch, batch_id) is None:
        abort(404, description=f"batch {batch_id}: not found")
    if action == "retry-dead":
        revived = change(store.revive, JobFilter(batch_id=batch_id, state="dead"), ("dead",),
                         acting(f"batch {batch_id}: retry all dead"))
        flash(f"Batch {batch_id}: retried {len(revived)} dead job(s).")
    else:
        done = change(store.cancel, JobFilter(batch_id=batch_id),
                      acting(f"batch {batch_id}: cancel"))
        flash(f"Batch {batch_id}: cancelled {done['cancelled']} job(s); asked the workers of "
              f"{done['requested']} running job(s) to stop.")
    return redirect(url_for(".batch", batch_id=batch_id))
