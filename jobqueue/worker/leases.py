"""Leases: the heartbeat that keeps a worker's claims alive, and what it learns on the way.

Every `heartbeat_seconds` it renews the leases of the jobs this worker runs, those set over
half a beat ago (a job claimed since is renewed at the next beat), and refreshes
the worker's row, reading back an operator's request to quiet or stop it. Only jobs the
worker knows of are renewed; any other row leased to it (a claim whose reply was lost) is
handed back at once. Jobs whose lease is gone (rescued after
an outage) are stopped, and jobs someone cancelled are stopped as cancelled. The renewal is
sent while no claim of this worker is in flight (`claim_lock`), so "known" is complete.
It never claims or writes outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from uuid import UUID

import psycopg
import structlog

from jobqueue.db import store
from jobqueue.db.queries import q
from jobqueue.worker.config import WorkerConfig
from jobqueue.worker.executor import Executor
from jobqueue.worker.link import Link

log = structlog.get_logger("jobqueue.worker")


def renew_after(config: WorkerConfig) -> float:
    """How old a lease must be before a beat renews it. A lease set less than half a beat
    ago is left as it is (the beat on LISTEN's connection comes right after the first
    claims), and renewed at the next beat with lease - 1.5 beats left (15 s of 30 by
    default); never less than half of what renewing at every beat would leave, so a
    heartbeat configured close to the lease renews every time."""
    beat, lease = config.heartbeat_seconds, config.lease_seconds
    return max(0.0, min(beat / 2, (lease - beat) / 2))


class Leases:
    def __init__(self, link: Link, worker_id: UUID, config: WorkerConfig,
                 executors: list[Executor],
                 claim_lock: asyncio.Lock, worker_row: Callable[[], dict],
                 on_released: Callable[[], None],
                 on_control: Callable[[str], None] | None = None):
        self.link, self.worker_id, self.config = link, worker_id, config
        self.executors, self.claim_lock, self.worker_row = executors, claim_lock, worker_row
        self.on_released = on_released  # rows went back to the queue: look at it again
        self.on_control = on_control  # an operator asked to 'quiet' or 'stop' (0023)
        self.log = log.bind(worker=str(worker_id), queue=config.queue)
        self.beat_now = asyncio.Event()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.heartbeat_seconds):
                    await self.beat_now.wait()
            self.beat_now.clear()
            try:
                await self.beat()
            except psycopg.Error as exc:
                self.log.warning("heartbeat_failed", error=str(exc).strip())

    async def beat(self) -> None:
        async with self.claim_lock:
            started = time.monotonic()
            known = [job_id for e in self.executors for job_id in e.in_flight]
            held, released = await self.link.run(lambda conn: store.renew_leases(
                conn, self.worker_id, known, self.config.lease_seconds,
                renew_after=renew_after(self.config)))
        touched = await self.link.execute(q("touch_worker"), self.worker_row())
        if touched and touched[0][0] and self.on_control is not None:
            self.on_control(touched[0][0])
        if released:
            self.log.warning("unknown_leases_released", count=len(released), job_ids=released[:20],
                             note="claimed by a claim whose reply was lost; back in the queue")
            self.on_released()
        for executor in self.executors:
            for r in list(executor.in_flight.values()):
                if r.task is not None and r.task.done():
                    continue  # finished; its outcome is on its way
                if r.id not in held and r.claimed_at < started:
                    executor.stop_job(r.id, "lease_lost")
                elif held.get(r.id):
                    executor.stop_job(r.id, "cancelled")
