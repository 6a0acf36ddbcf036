"""Cluster maintenance, run by every worker and done by one at a time: rescue expired leases
(dead-letter those out of attempts), move retries whose backoff ended ahead of new work,
prune old finished jobs, dead worker rows and full quota buckets (jobqueue/quotas.py),
evaluate the alert rules and prune old webhook deliveries (jobqueue/webhooks/alerts.py), and
run the prune hooks that extensions register (the LLM response cache registers its own). The
dashboard's sessions are pruned by a hook registered here, so every worker of any queue runs
it: the web app writes them, and a web process may have nothing but replicas to read from.

Leadership is a transaction-level advisory lock that each maintenance statement takes itself
(see sql/queries/jobs.sql, rescue_dead): no lock is held across a round trip, so a worker cut
off from the network in the middle of maintenance cannot hold up rescue for the fleet.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import psycopg
import structlog

from jobqueue.db import store
from jobqueue.db.queries import q
from jobqueue.webhooks import alerts
from jobqueue.worker.config import WorkerConfig
from jobqueue.worker.link import Link

log = structlog.get_logger("jobqueue.worker")

PruneHook = Callable[[psycopg.AsyncConnection], Awaitable[int]]
_prune_hooks: dict[str, PruneHook] = {}


def register_prune_hook(name: str, hook: PruneHook) -> None:
    """Run `hook(conn)` at every maintenance pass; it returns how many rows it pruned and
    must gate itself on the leader's lock, as the queue's own statements do."""
    _prune_hooks[name] = hook


# Dashboard sessions that can no longer be used stay this long (an owner's list shows them),
# then the maintenance deletes them.
SESSION_KEEP_SECONDS = 86400.0


async def prune_web_sessions(conn: psycopg.AsyncConnection) -> int:
    """Delete a slice of the dashboard sessions (jobqueue.web_sessions) that expired or were
    signed out over a day ago (leader-gated in SQL)."""
    cur = await conn.execute(q("prune_sessions"), {"keep_seconds": SESSION_KEEP_SECONDS,
                                                   "limit": 1000})
    return cur.rowcount


register_prune_hook("web_sessions", prune_web_sessions)


class Maintenance:
    def __init__(self, link: Link, config: WorkerConfig, bound_log=log):
        self.link, self.config, self.log = link, config, bound_log

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.maintenance_seconds * random.uniform(0.8, 1.2))
            try:
                await self.link.run(self.once)
            except psycopg.Error as exc:
                self.log.warning("maintenance_failed", error=str(exc).strip())

    async def once(self, conn: psycopg.AsyncConnection) -> None:
        cfg = self.config
        dead, rescued = await store.rescue_expired(conn)
        promoted = await store.promote_retries(conn)
        pruned = await store.prune_finished(conn, cfg.retention_seconds, 10000)
        await conn.execute(q("prune_workers"), {
            "stale_seconds": max(60.0, 10 * cfg.heartbeat_seconds)})
        deliveries = await alerts.maintain(conn, cfg.retention_seconds)
        hooks = {"webhook_deliveries": deliveries} if deliveries else {}
        if random.random() < 1 / 12:  # about once a minute: full quota buckets (a scan)
            cur = await conn.execute(q("quota_usage_prune"))
            hooks["quota_usage"] = cur.rowcount
        for name, hook in list(_prune_hooks.items()):
            hooks[name] = await hook(conn)
        if dead or rescued or promoted or pruned or any(hooks.values()):
            self.log.info("maintenance", rescued=rescued, dead_letters=dead,
                          retries_moved_up=promoted, pruned=pruned,
                          **{f"pruned_{k}": v for k, v in hooks.items() if v})
