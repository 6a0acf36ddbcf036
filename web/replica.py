"""How far behind its primary the read replica is, and whether a read may use it.

A replica is judged by WAL positions, not clocks: about once a second (at most, and only
while requests arrive) a request notes the primary's WAL position and the replica's replay
position. The replica's lag is the age, at that probe, of the oldest noted primary position
it has not yet replayed, so an idle primary with a caught-up replica is 0 s behind (the
replay timestamp would say "hours"), and a replica whose replay stopped falls further behind
by a second a second. Past JOBQUEUE_READ_MAX_LAG_SECONDS, or while the replica cannot be
reached, reads go to the primary; they come back once it has caught up.

`fresh_for(position)` also answers whether the replica has replayed a given primary position:
the dashboard notes the primary's position after each change it makes, and reads on the
primary until the replica has caught up with it (read-your-writes for the operator).
"""

from __future__ import annotations

import threading
import time
from collections import deque

import psycopg
import structlog

from jobqueue.client import Client
from jobqueue.db.queries import q

log = structlog.get_logger("jobqueue.web.replica")

PROBE_SECONDS = 1.0         # note both positions at most this often
RETRY_SECONDS = 5.0         # after a failed probe, wait this long before the next
PROBE_TIMEOUT_SECONDS = 2.0  # a probe waits this long at most for a replica connection
MAX_SAMPLES = 1000          # noted positions kept while the replica is stuck (the oldest stay)


class Freshness:
    """The replica's lag, measured in passing by the requests that read (thread-safe; one
    request probes at a time, the others use the last verdict)."""

    def __init__(self, primary: Client, replica: Client, max_lag_seconds: float):
        self.primary, self.replica, self.max_lag = primary, replica, max_lag_seconds
        self._pending: deque[tuple[float, int]] = deque()  # (when, primary position) unreplayed
        # The replica's replay position at the last probe; None: it is not a standby (never
        # behind); -1 until a probe succeeds.
        self._replayed: int | None = -1
        # Not known to be reachable until a probe says so: meanwhile (the first probe of a
        # process, or one that waits for a replica that went away) reads use the primary.
        self._reachable = False
        self._lagging = True
        self._next_probe = 0.0
        self._probed_at = 0.0
        self._lock = threading.Lock()

    @property
    def lag_seconds(self) -> float:
        """At the last probe: how long before it the oldest primary position the replica had
        not replayed was noted (0 when it had replayed all but what that probe noted)."""
        return self._probed_at - self._pending[0][0] if self._pending else 0.0

    def usable(self) -> bool:
        """Whether reads may go to the replica now (reachable, and at most max_lag behind)."""
        self._maybe_probe()
        lagging = not self._reachable or self.lag_seconds > self.max_lag
        if lagging != self._lagging:
            self._lagging = lagging
            log.warning("read_replica_lagging" if lagging else "read_replica_caught_up",
                        lag_seconds=round(self.lag_seconds, 3), reachable=self._reachable,
                        max_lag_seconds=self.max_lag)
        return not lagging

    def fresh_for(self, position: int) -> bool:
        """Whether the replica had replayed `position` (a primary WAL position) when last
        probed; the next probe may say so, never a wrong yes."""
        self._maybe_probe()
        return self._replayed is None or self._replayed >= position

    def _maybe_probe(self) -> None:
        now = time.monotonic()
        if now < self._next_probe or not self._lock.acquire(blocking=False):
            return
        try:
            self._probe(now)
        finally:
            self._lock.release()

    def _probe(self, now: float) -> None:
        try:
            with self.primary.pool.connection() as conn:
                written = conn.execute(q("wal_position")).fetchone()["lsn"]
            with self.replica.pool.connection(timeout=PROBE_TIMEOUT_SECONDS) as conn:
                replayed = conn.execute(q("replay_position")).fetchone()["lsn"]
        except psycopg.Error as exc:  # PoolTimeout is one too
            log.warning("read_replica_unreachable", error=str(exc).strip()[:200],
                        retry_in=RETRY_SECONDS)
            self._reachable = False
            self._next_probe = now + RETRY_SECONDS
            return
        self._reachable, self._replayed, self._probed_at = True, replayed, now
        if replayed is None:  # not a standby: never behind
            self._pending.clear()
        else:
            if len(self._pending) < MAX_SAMPLES:
                self._pending.append((now, written))
            while self._pending and self._pending[0][1] <= replayed:
                self._pending.popleft()
        self._next_probe = now + PROBE_SECONDS


def wal_position(primary: Client) -> int:
    """The primary's WAL position now: every change committed so far lies at or before it."""
    with primary.pool.connection() as conn:
        return conn.execute(q("wal_position")).fetchone()["lsn"]
