"""A batch's time to completion that does not swing: what `batch wait` and `demo` print and
the dashboard's batch page shows.

`RateEstimator` turns a series of (time, jobs finished) observations into a rate smoothed
exponentially over a time window (`window` seconds: an observation's weight halves every
`window * ln 2`), so a poll that happens to see many or few jobs finish moves the ETA a little,
not by half. Until one window has passed it uses the plain average since the first
observation, which is already steady.

While a platform is rate limited its throughput is the limiter's budget, not what the last
polls saw (they see bursts as buckets refill): the ETA then comes from that budget, the
requests per second of the platform's usable keys (the sum of each key's RPM times its AIMD
pace, `jobqueue.rate_buckets`; see `platform_budgets`). A platform counts as limited for one
window after it was last seen limited, so a limiter hovering at the edge of its budget does
not flip the ETA between the two sources at every poll. The budget is shared with whatever
else runs on the platform, so for a batch that shares it the ETA is a lower bound.

`BatchEta` keeps one estimator per platform of a batch. A platform whose limiter paces it
finishes at its budget; the others share the workers, so their jobs left go at the rate they
finish together (what a fan-out's finished platform no longer uses goes to the others). The
batch's ETA is the longest of these.

`recent` is the one ETA of both surfaces: it replays the batch's last minutes from the database
(jobs finished per platform, in steps of `HISTORY_STEP` seconds) into a `BatchEta`, then the
limiter's budgets now. The dashboard's batch page shows it; `batch wait` starts from it and goes
on with its own polls, so for the same batch both show the same ETA (`demo` watches a batch
it has just made, from its polls alone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from psycopg.rows import dict_row

from jobqueue.db.queries import q

DEFAULT_WINDOW = 60.0  # seconds
HISTORY_SECONDS = 15 * 60  # how far back `recent` reads the batch's finished jobs
HISTORY_STEP = 5.0  # seconds per step of that history


@dataclass
class RateEstimator:
    """Finished jobs per second, smoothed; and the time left for `remaining` jobs."""

    window: float = DEFAULT_WINDOW
    _first: tuple[float, int] | None = None
    _last: tuple[float, int] | None = None
    _rate: float | None = None
    _limited_until: float = -math.inf
    _budget: float | None = None

    def observe(self, t: float, done: int, *, limited: bool = False,
                budget: float | None = None) -> None:
        """At time `t` (seconds, monotonic), `done` jobs have finished; `limited` and
        `budget` (requests per second) say whether the platform is rate limited now and
        what its keys allow."""
        if budget is not None and budget > 0:
            self._budget = budget
        if limited:
            self._limited_until = t + self.window
        if self._first is None:
            self._first = self._last = (t, done)
            return
        t0, done0 = self._last
        dt = t - t0
        if dt <= 0:
            return
        first_t, first_done = self._first
        if t - first_t < self.window or self._rate is None:
            # Warming up (or a second poll a whole window after the first): the average
            # since the first poll, which also seeds the smoothing, so the switch at the end
            # of the first window does not jump.
            self._rate = max(0, done - first_done) / (t - first_t)
        else:
            instant = max(0, done - done0) / dt
            alpha = 1 - math.exp(-dt / self.window)
            self._rate += alpha * (instant - self._rate)
        self._last = (t, done)

    def limited(self) -> bool:
        """Whether the platform was seen rate limited within the last window."""
        return self._last is not None and self._last[0] < self._limited_until

    def paced(self) -> bool:
        """Whether the rate is the limiter's budget: limited, with a budget known."""
        return self.limited() and bool(self._budget)

    def rate(self) -> float | None:
        """Jobs per second: the limiter's budget while limited, else the smoothed rate (the
        average since the first observation during the first window); None before any
        measure."""
        if self.paced():
            return self._budget
        return self._rate

    def eta(self, remaining: int) -> float | None:
        """Seconds until `remaining` more jobs have finished; 0 when none remain; None while
        nothing has finished to measure from."""
        if remaining <= 0:
            return 0.0
        rate = self.rate()
        if not rate:
            return None
        return remaining / rate


@dataclass
class BatchEta:
    """One `RateEstimator` per platform of a batch, fed with the batch's counts."""

    window: float = DEFAULT_WINDOW
    _per_platform: dict[str, RateEstimator] = field(default_factory=dict)
    _remaining: dict[str, int] = field(default_factory=dict)

    def observe(self, t: float, platforms: dict[str, dict],
                budgets: dict[str, tuple[bool, float | None]] | None = None) -> None:
        """`platforms`: the batch's counts per platform (`store.batch`'s "platforms");
        `budgets`: per platform (rate limited now, requests per second of its keys)."""
        for name, counts in platforms.items():
            limited, budget = (budgets or {}).get(name, (False, None))
            self._observe(name, t, finished(counts), counts["total"], limited, budget)

    def _observe(self, name: str, t: float, done: int, total: int, limited: bool = False,
                 budget: float | None = None) -> None:
        est = self._per_platform.setdefault(name, RateEstimator(self.window))
        est.observe(t, done, limited=limited, budget=budget)
        self._remaining[name] = total - done

    def eta(self) -> float | None:
        """Seconds until every platform's jobs have finished: a platform its limiter paces
        at its budget; the others share the workers, so their jobs left go at what they
        finish together. The batch's ETA is the longest of these; None while one of them
        has nothing to go by."""
        if not self._remaining:  # nothing observed yet
            return None
        etas, shared_left, shared_rate = [], 0, 0.0
        for name, left in self._remaining.items():
            est = self._per_platform[name]
            if est.paced():
                etas.append(est.eta(left))
            else:
                shared_left += left
                shared_rate += est.rate() or 0.0
        if shared_left > 0:
            etas.append(shared_left / shared_rate if shared_rate else None)
        if any(e is None for e in etas):
            return None
        return max(etas, default=0.0)

    def limited(self) -> list[str]:
        """The platforms with jobs left whose pace is their limiter's budget."""
        return [n for n, r in self._remaining.items() if r > 0 and self._per_platform[n].paced()]

    def rate(self) -> float | None:
        """Jobs per second, as an operator reads the batch's pace: the budgets of the
        platforms in `limited` while there are any, else what the platforms finish together
        (smoothed, the rate `eta` gives their jobs left); None while nothing is measured."""
        paced = self.limited()
        if paced:
            return sum(self._per_platform[n].rate() for n in paced)
        rates = [e.rate() for e in self._per_platform.values() if e.rate() is not None]
        return sum(rates) if rates else None


def recent(conn, batch_id: int, platforms: dict[str, dict], now: float,
           window: float = DEFAULT_WINDOW) -> BatchEta:
    """A `BatchEta` that has seen the batch's last `HISTORY_SECONDS`: per platform, its jobs
    finished replayed step by step up to `now` (the caller's clock: `batch wait` goes on
    observing with it), from the first step in which one finished (a batch that started two
    minutes ago is not averaged with thirteen idle ones); then `platforms` (`store.batch`'s
    counts) and the limiter's budgets at `now`."""
    rows = conn.cursor(row_factory=dict_row).execute(q("batch_finished_history"), {
        "batch_id": batch_id, "step": HISTORY_STEP, "seconds": HISTORY_SECONDS}).fetchall()
    steps: dict[str, dict[int, int]] = {}
    for r in rows:
        steps.setdefault(r["platform"], {})[r["ago"]] = r["finished"]
    estimate = BatchEta(window)
    for name, counts in platforms.items():
        history = steps.get(name, {})
        done = finished(counts) - sum(history.values())  # before the oldest step
        for ago in range(max(history, default=-1) + 1, 0, -1):
            estimate._observe(name, now - ago * HISTORY_STEP, done, counts["total"])
            done += history.get(ago - 1, 0)
    estimate.observe(now, platforms, platform_budgets(conn, list(platforms)) if platforms
                     else {})
    return estimate


def finished(counts: dict) -> int:
    """Jobs of a batch (or of one of its platforms) that have ended; a duplicate row is done
    (it points at the job that already had its key)."""
    return (counts["succeeded"] + counts["dead"] + counts["cancelled"]
            + counts.get("duplicates", 0))


def platform_budgets(conn, platforms: list[str]) -> dict[str, tuple[bool, float | None]]:
    """The limiter's budget, for every ETA (`batch wait`, the dashboard's batch page). Per
    platform: whether it is rate limited now (jobqueue.queue_rate_limited) and the
    requests per second its usable keys allow (None: no keys known)."""
    rows = conn.cursor(row_factory=dict_row).execute(
        q("platform_budgets"), {"platforms": platforms}).fetchall()
    return {r["platform"]: (bool(r["rate_limited"]), r["requests_per_second"]) for r in rows}
