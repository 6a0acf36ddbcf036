"""Write outcomes in batches: group commit, so while one write is in flight the next batch
gathers; progress reports ride along. Fencing is the store's (an outcome whose lease was lost
is discarded and logged); a batch whose reply was lost is sent again and recognised.

An outcome the database refuses (a result Postgres cannot store, a constraint) never stalls
the worker: the batch is written one outcome at a time, and a refused outcome is recorded as
a dead job with a readable error instead. Anything else that goes wrong here is a bug and
stops the worker (see Worker). It never runs handlers.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
import structlog

from jobqueue.db import store
from jobqueue.db.store import Outcome
from jobqueue.worker.link import Link

log = structlog.get_logger("jobqueue.worker")


class Completer:
    def __init__(self, link: Link, worker_id: UUID, queue: str,
                 on_written: Callable[[list[int], bool], None]):
        self.link, self.worker_id = link, worker_id
        self.on_written = on_written
        self.log = log.bind(worker=str(worker_id), queue=queue)
        self.outbox: list[Outcome] = []
        self.progress: dict[int, tuple[str, str]] = {}
        self.event = asyncio.Event()
        self.finished = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def record(self, outcome: Outcome) -> None:
        self.outbox.append(outcome)
        self.event.set()

    def report_progress(self, job_id: int, execution_id: str, progress: Any) -> None:
        """Called from handler threads too: hands the report to the loop. `execution_id` is
        the handler's "job id:claim token"; the row is fenced by the token."""
        encoded = json.dumps(progress)
        token = execution_id.rpartition(":")[2]

        def remember():
            self.progress[job_id] = (token, encoded)
            self.event.set()

        self._loop.call_soon_threadsafe(remember)

    async def run(self, done: Callable[[], bool]) -> None:
        """Write what arrives until `done()` says nothing more will (checked after each
        write)."""
        self._loop = asyncio.get_running_loop()
        while True:
            await self.event.wait()
            self.event.clear()
            batch, self.outbox = self.outbox, []
            progress, self.progress = self.progress, {}
            if progress:
                try:
                    await self.link.run(functools.partial(
                        store.set_progress, worker=self.worker_id, progress=progress))
                except psycopg.Error as exc:  # best effort, as documented
                    self.log.warning("progress_not_recorded", error=str(exc).strip())
            if batch:
                try:
                    await self.write(batch)
                except psycopg.OperationalError:
                    self.log.error("outcomes_lost", count=len(batch),
                                   note="database unreachable at hard stop; leases will expire")
                self.finished += len(batch)
                # Whether a retry was written: its run_at may be sooner than the producers know.
                self.on_written([o.job_id for o in batch],
                                any(o.action == "retry" for o in batch))
            if done() and not self.outbox:
                return

    async def write(self, batch: list[Outcome]) -> None:
        try:
            recorded = await self._send(batch)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            self.log.warning("outcome_batch_refused", count=len(batch),
                             error=str(exc).strip().splitlines()[0])
            recorded = set()
            for outcome in batch:
                recorded |= await self._send_alone(outcome)
        for o in batch:
            if o.job_id not in recorded:
                # Fencing at work: our lease expired and the job was rescued (and maybe taken
                # by another worker), so this outcome must not count.
                self.log.warning("outcome_discarded_lease_lost", job_id=o.job_id,
                                 execution_id=o.execution_id, action=o.action, state=o.state)
        backs = sum(1 for o in batch if o.action == "hand_back")
        if backs:
            self.log.info("jobs_handed_back", count=backs)

    async def _send(self, batch: list[Outcome], resent: bool = False) -> set[int]:
        sends = 0

        async def go(conn: psycopg.AsyncConnection) -> set[int]:
            nonlocal sends
            sends += 1  # a second send follows a lost reply
            return await store.record_outcomes(conn, self.worker_id, batch,
                                               resent=resent or sends > 1)

        return await self.link.run(go)

    async def _send_alone(self, outcome: Outcome) -> set[int]:
        """One outcome of a batch the database refused: alone (part of the batch may have
        committed, hence `resent`), then as a dead job saying why."""
        try:
            return await self._send([outcome], resent=True)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0]
            self.log.error("outcome_refused", job_id=outcome.job_id, error=reason)
            error = json.dumps({
                "at": datetime.now(UTC).isoformat(), "type": "OutcomeNotStored",
                "message": f"the job's outcome could not be stored: {reason}",
                "worker": str(self.worker_id),
                "execution_id": f"{outcome.job_id}:{outcome.execution_id}"})
            dead = Outcome(outcome.job_id, outcome.execution_id, "finish", "dead", error=error)
            try:
                return await self._send([dead])
            except psycopg.OperationalError:
                raise
            except psycopg.Error as again:
                self.log.error("outcome_not_stored", job_id=outcome.job_id,
                               error=str(again).strip().splitlines()[0],
                               note="its lease will expire and the job will be rescued")
                return {outcome.job_id}  # nothing more we can do; do not call it lease loss
