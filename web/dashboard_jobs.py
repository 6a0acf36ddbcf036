"""The job list's order and count (web/dashboard.py renders the list; this module decides
what it shows beyond the default).

Order: the list is newest first by id, paged by id (an index scan). Any other order (created,
queue wait, run time, runs at, priority, attempts; either direction) is a whitelisted key
the query turns into a CASE branch (bound parameters, fixed SQL text) and applies within the
newest jobs' window (SORT_SCAN of web/dashboard.py; see jobs_window), paged by offset up to
MAX_SORTED_PAGES: it stays a bounded sort, and the page says which jobs it sorted.

Count: exact where it is cheap (queue and state alone, from the counts the overview uses; a
batch, through its index, up to EXACT_UP_TO; a newest page that saw every match of its
window, when the window holds every job), otherwise an estimate from the window or a lower
bound, labelled as such.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import abort

from jobqueue.db import store
from jobqueue.db.store import JobFilter
from jobqueue.jobs import PRIORITIES, STATES

# key: (heading, default direction descending?)
SORTS = {
    "created": ("Created", True), "wait": ("Queue wait", True), "run": ("Run time", True),
    "runs_at": ("Runs at", False), "priority": ("Priority", False),
    "attempts": ("Attempts", True),
}
MAX_SORTED_PAGES = 100
EXACT_UP_TO = 10_000
_PRIORITY_NAMES = {value: name for name, value in PRIORITIES.items()}


def priority_name(value: int | None) -> str:
    """high / normal / low for the documented values, else the number."""
    if value is None:
        return "—"
    return _PRIORITY_NAMES.get(value, str(value))


@dataclass(frozen=True)
class Sort:
    key: str | None       # None: the default, newest first by id
    descending: bool
    page: int             # 0-based, for sorted pages


def parse_sort(args) -> Sort:
    """?sort=KEY&dir=asc|desc&page=N, checked: 400 naming the field."""
    key = args.get("sort", "").strip() or None
    if key is not None and key not in SORTS:
        abort(400, description=f"sort: one of {', '.join(SORTS)}")
    direction = args.get("dir", "").strip()
    if direction not in ("", "asc", "desc"):
        abort(400, description="dir: asc or desc")
    raw_page = args.get("page", "").strip() or "0"
    if not (raw_page.isascii() and raw_page.isdigit()) or int(raw_page) >= MAX_SORTED_PAGES:
        abort(400, description=f"page: a whole number below {MAX_SORTED_PAGES}")
    descending = SORTS[key][1] if key and not direction else direction == "desc"
    return Sort(key, descending, int(raw_page))


@dataclass(frozen=True)
class Count:
    """A match count: exact, an estimate (`note` says from what), or a lower bound."""

    value: int
    exact: bool
    note: str = ""
    at_least: bool = False

    def label(self) -> str:
        if self.exact:
            return f"{self.value:,} job{'s' if self.value != 1 else ''}"
        if self.at_least:
            return f"more than {self.value:,} jobs ({self.note})"
        return f"about {self.value:,} jobs ({self.note})"


def count(store_call, where: JobFilter, args: dict, window: dict, scan: int,
          queues: list[dict], page_rows: int | None = None, page_size: int = 50) -> Count:
    """The number of jobs matching the filter, exact where cheap, else estimated from the
    window (`window`: jobs_window's row for the newest jobs; `queues`: queue_status;
    `page_rows`: how many the newest page found, when it was not sorted: fewer than a page
    means it saw every match of the window, so they need no counting)."""
    only = set(args) - {"queue", "state"}
    if not only:
        state = args.get("state")
        states = [state] if state in STATES else list(STATES)  # unknown: any, as the list
        rows = [r for r in queues if args.get("queue") in (None, r["queue"])]
        return Count(sum(r[s] for r in rows for s in states), True)
    if where.batch_id is not None:
        n = store_call(store.batch_match_count, where, EXACT_UP_TO + 1)
        if n <= EXACT_UP_TO:
            return Count(n, True)
        return Count(EXACT_UP_TO, False, "in this batch; not counted further", at_least=True)
    whole = window["scanned"] < scan  # the window holds every job
    if page_rows is not None and page_rows < page_size:
        in_window = page_rows
    else:
        in_window = store_call(store.window_count, where, window["floor"] or 0,
                               EXACT_UP_TO + 1)
        if in_window > EXACT_UP_TO:
            return Count(EXACT_UP_TO, False, f"among the newest {scan:,} jobs; not counted "
                                             "further", at_least=True)
    if whole:
        return Count(in_window, True)
    total = sum(r[s] for r in queues for s in STATES)
    estimate = round(in_window * total / max(1, window["scanned"]))
    return Count(estimate, False, f"estimated from the newest {scan:,} jobs")
