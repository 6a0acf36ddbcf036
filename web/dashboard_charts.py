"""The dashboard's charts: jobs finished per minute (succeeded and dead stacked), queue wait,
and the tokens and cost of LLM answers, over the last hour (a bar a minute) or the last
24 hours (a bar per 10 minutes, in per-minute units), for every job or one queue or kind.
Drawn as inline SVG with axes and units (no script, no CDN); the overview shows the first.

A bucket that is over does not change while no row leaves `finished` (jobs finish at now()),
so the app keeps the complete buckets it has read and asks the database only for newer ones.
A retry, a delete or pruning removes rows (a retried job that dies again finishes once more,
later): the sequence jobqueue.finished_removals (0023) moves, and the kept buckets are read
again. The charts' totals therefore equal the counts of the tables (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from threading import Lock

from flask import Blueprint, abort, current_app, request

from jobqueue.db.queries import q
from web.dashboard_support import attach_once, checked, read, render

# window: (seconds, bucket seconds, x tick every N buckets, label)
WINDOWS = {"1h": (3600, 60, 10, "last hour"), "24h": (86400, 600, 24, "last 24 hours")}
MAX_CACHED = 64        # (window, queue, kind) series kept at most
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 1200, 150, 56, 20, 22
_EMPTY = {"succeeded": 0, "dead": 0, "cancelled": 0, "wait_sum": 0.0, "wait_n": 0,
          "wait_max": 0.0, "tokens": 0, "cost_usd": 0.0}


@attach_once
def attach(bp: Blueprint) -> None:
    """Add the charts page to the dashboard blueprint (once, before it is registered)."""
    bp.add_url_rule("/charts", "charts", charts_page, methods=["GET"])


# -- reading ---------------------------------------------------------------------------------


@dataclass
class _Kept:
    removals: int
    buckets: dict = field(default_factory=dict)


def _removals() -> int:
    from web.resources import resources

    with resources().client.pool.connection() as conn:
        return conn.execute(q("finished_removals")).fetchone()["removals"]


def buckets(window: str, queue: str | None = None, kind: str | None = None) -> list[dict]:
    """Every bucket of the window, oldest first, zeros included: {bucket, succeeded, dead,
    cancelled, wait_sum, wait_n, wait_max, tokens, cost_usd}."""
    from web.resources import resources

    seconds, step, _, _ = WINDOWS[window]
    now = datetime.now(UTC)
    current = datetime.fromtimestamp(math.floor(now.timestamp() / step) * step, UTC)
    first = current - timedelta(seconds=seconds - step)
    kept_all, lock = current_app.extensions.setdefault("dashboard.charts", ({}, Lock()))
    key = (window, queue, kind)
    removals = _removals()
    with lock:
        kept = kept_all.get(key)
        if kept is None or kept.removals != removals:
            kept = _Kept(removals)
        since = max([first, *[b + timedelta(seconds=step) for b in kept.buckets]])

    def newer_buckets(conn):
        return conn.execute(q("chart_buckets"), {"since": since, "step": step, "queue": queue,
                                                 "kind": kind}, prepare=False).fetchall()

    fresh = {r["bucket"]: r for r in read(newer_buckets)}
    # Read on a replica, a bucket just over may still miss rows it has not replayed: kept
    # only once it ended longer ago than the replica may lag.
    lag = timedelta(seconds=current_app.config["READ_MAX_LAG_SECONDS"]
                    if resources().replicated else 0)
    with lock:
        for bucket in [b for b in kept.buckets if b < first]:
            del kept.buckets[bucket]
        cutoff = now - lag - timedelta(seconds=step)
        for b in range(int((current - since).total_seconds() // step)):
            at = since + timedelta(seconds=b * step)
            if at <= cutoff:
                kept.buckets[at] = fresh.get(at) or {"bucket": at, **_EMPTY}
        if len(kept_all) >= MAX_CACHED and key not in kept_all:
            kept_all.pop(next(iter(kept_all)))
        kept_all[key] = kept
        out = []
        for n in range(seconds // step):
            at = first + timedelta(seconds=n * step)
            out.append(kept.buckets.get(at) or fresh.get(at) or {"bucket": at, **_EMPTY})
    return out


# -- drawing ---------------------------------------------------------------------------------


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times 10^n at or above `value` (1 for nothing): the y axis
    top, so its ticks are round numbers."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * power >= value * (1 - 1e-12):
            return factor * power
    return 10 * power


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10 or value == int(value):
        return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    return f"{value:.3g}"


def draw(rows: list[dict], layers: list[tuple[str, str, callable]], unit: str, window: str,
         describe: callable) -> dict:
    """An SVG bar chart of `rows` (the window's buckets): `layers` (css class, name, value
    of a row) stacked bottom up, a y axis in `unit` with round ticks, time on the x axis
    (UTC); `describe(row)` is each bar's tooltip."""
    every = WINDOWS[window][2]
    plot_w, plot_h = WIDTH - LEFT, HEIGHT
    stacks = [[(cls, fn(r)) for cls, _, fn in layers] for r in rows]
    top = nice_ceiling(max([sum(v for _, v in s) for s in stacks] + [0]))
    slot = plot_w / max(1, len(rows))
    bars = []
    for i, (row, stack) in enumerate(zip(rows, stacks, strict=True)):
        x, y = LEFT + i * slot + 1, TOP + plot_h
        rects = []
        for cls, value in stack:
            h = value * plot_h / top
            if h > 0:
                y -= h
                rects.append({"cls": cls, "y": round(y, 2), "h": round(h, 2)})
        bars.append({"x": round(x, 1), "w": round(max(1.0, slot - 2), 1), "rects": rects,
                     "label": f"{row['bucket']:%H:%M} UTC: {describe(row)}"})
    y_ticks = [{"y": round(TOP + plot_h - plot_h * f, 1), "label": _number(top * f)}
               for f in (0, 0.5, 1)]
    x_ticks = [{"x": round(LEFT + i * slot, 1), "label": f"{rows[i]['bucket']:%H:%M}"}
               for i in range(0, len(rows), every)]
    return {"width": WIDTH, "height": TOP + HEIGHT + BOTTOM, "left": LEFT, "top": TOP,
            "base": TOP + plot_h, "bars": bars, "y_ticks": y_ticks, "x_ticks": x_ticks,
            "unit": unit, "legend": [(cls, name) for cls, name, _ in layers]}


def per_minute(window: str) -> float:
    """What a bucket's count is divided by to give a count per minute."""
    return WINDOWS[window][1] / 60


def throughput(rows: list[dict], window: str) -> dict:
    """Jobs finished per minute, succeeded and dead stacked, with the window's totals."""
    div = per_minute(window)
    chart = draw(rows, [("ok", "succeeded", lambda r: r["succeeded"] / div),
                        ("dead", "dead", lambda r: r["dead"] / div)], "jobs/min", window,
                 lambda r: f"{r['succeeded']} succeeded, {r['dead']} dead, "
                           f"{r['cancelled']} cancelled")
    chart |= {"succeeded": sum(r["succeeded"] for r in rows),
              "dead": sum(r["dead"] for r in rows),
              "cancelled": sum(r["cancelled"] for r in rows)}
    return chart


def latency(rows: list[dict], window: str) -> dict:
    def avg(r):
        return r["wait_sum"] / r["wait_n"] if r["wait_n"] else 0.0

    return draw(rows, [("wait", "average queue wait", avg)], "seconds", window,
                lambda r: f"average wait {avg(r):.2f} s, longest {r['wait_max']:.2f} s "
                          f"({r['wait_n']} jobs started)")


def tokens(rows: list[dict], window: str) -> dict:
    div = per_minute(window)
    chart = draw(rows, [("tokens", "tokens", lambda r: r["tokens"] / div)], "tokens/min",
                 window, lambda r: f"{r['tokens']:,} tokens")
    chart["total"] = sum(r["tokens"] for r in rows)
    return chart


def cost(rows: list[dict], window: str) -> dict:
    div = per_minute(window)
    chart = draw(rows, [("cost", "cost", lambda r: r["cost_usd"] / div)], "USD/min", window,
                 lambda r: f"${r['cost_usd']:.4f}")
    chart["total"] = sum(r["cost_usd"] for r in rows)
    return chart


# -- the page --------------------------------------------------------------------------------


def _args() -> tuple[str, str | None, str | None, str]:
    """?window=1h|24h&queue=&kind=&by=queue|kind, checked (400 naming the field)."""
    from web.schemas import QueueName

    window = request.args.get("window", "1h")
    if window not in WINDOWS:
        abort(400, description=f"window: one of {', '.join(WINDOWS)}")
    by = request.args.get("by", "queue")
    if by not in ("queue", "kind"):
        abort(400, description="by: queue or kind")
    names = {}
    for name in ("queue", "kind"):
        value = request.args.get(name, "").strip() or None
        if value is not None:
            try:
                value = checked(QueueName, {"name": value}).name
            except Exception as exc:  # checked aborts with 400 "name: ..."; say which field
                description = getattr(exc, "description", "invalid")
                abort(400, description=f"{name}: {description}")
        names[name] = value
    return window, names["queue"], names["kind"], by


def charts_page():
    window, queue, kind, by = _args()
    rows = buckets(window, queue, kind)
    since = rows[0]["bucket"]

    def groups(conn):
        return conn.execute(q("chart_groups"), {"since": since, "by": by},
                            prepare=False).fetchall()

    return render("charts.html", title="Charts", window=window, windows=WINDOWS, queue=queue,
                  kind=kind, by=by, groups=read(groups),
                  charts=[("Finished per minute", "throughput", throughput(rows, window)),
                         ("Queue wait of the jobs finished", "latency", latency(rows, window)),
                         ("LLM tokens", "tokens", tokens(rows, window)),
                         ("LLM cost", "cost", cost(rows, window))])
