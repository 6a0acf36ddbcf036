"""Run one job: decode its payload, call its handler (in a Task of its own, in a thread for
sync handlers), apply its timeout, turn what happened into an outcome, and decide between
success, retry (with backoff) and dead letter. Also stops running jobs (cancellation, lost
lease, shutdown) and drains them at a warm stop.

It keeps the worker's table of claimed jobs (`in_flight`): a job stays there, leased and
renewed, until the completer has written its outcome, so a stop never leaves an outcome in
memory. Its concurrency slot frees as soon as its handler returns (`running` counts handlers
at work): the next claim then overlaps the write of the last outcomes instead of waiting for
it. At most twice `concurrency` jobs are claimed at once (written or not). With `prefetch`
(WorkerConfig), that many more jobs may be claimed ahead and wait here, leased, to start the
moment a slot frees (no claim round trip between one job and the next); a stop hands them
back at once. It does no I/O of its own: outcomes go to the completer through `record`.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog

from jobqueue.db.store import Outcome
from jobqueue.errors import HandBack
from jobqueue.logs import current_job
from jobqueue.tasks import JobCancelled, JobContext, Permanent, Registry, Retry
from jobqueue.worker.config import QueueConfig, WorkerConfig

log = structlog.get_logger("jobqueue.worker")

# Python 3.12 can start a Task eagerly. (Running the first step without a Task is not an
# option: asyncio.timeout(), TaskGroups and wait_for() would bind to the worker's own task.)
_EAGER_TASKS = sys.version_info >= (3, 12)

# Payloads arrive as jsonb's text output: canonical JSON with no surrounding white space, so
# the C scanner can take it directly (json.loads adds two regex matches and two Python calls).
_parse_payload = json.JSONDecoder().raw_decode


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, so retries of a
    failed burst spread out instead of returning together."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


@dataclass(slots=True)
class Running:
    id: int
    attempt: int
    max_attempts: int
    kind: str
    execution_id: str
    claimed_at: float
    ctx: JobContext | None = None  # made when the job starts, for handlers that take one
    task: asyncio.Task | None = None
    stop_reason: str | None = None  # "cancelled", "lease_lost" or "shutdown"
    started: bool = False  # its Task ran its first step


class Executor:
    def __init__(self, worker_id: UUID, queue: QueueConfig, config: WorkerConfig,
                 tasks: Registry,
                 record: Callable[[Outcome], None],
                 report_progress: Callable[[int, str, Any], None],
                 loop: asyncio.AbstractEventLoop, debug: bool):
        self.worker_id, self.worker_name = worker_id, str(worker_id)
        self.queue, self.config, self.tasks = queue.name, config, tasks
        self.concurrency = queue.concurrency
        self.record, self.report_progress = record, report_progress
        self.loop, self.debug = loop, debug
        self.log = log.bind(worker=self.worker_name, queue=queue.name)
        self.in_flight: dict[int, Running] = {}
        self.slots = asyncio.Event()  # set whenever a slot frees
        self.running = 0  # handlers at work (the concurrency limit counts these)
        self.prefetch = config.prefetch
        self.waiting: deque[tuple[Running, str, float | None]] = deque()  # claimed ahead
        self.stopping = False  # start nothing more from `waiting`
        self.claimed = 0
        self._threads: ThreadPoolExecutor | None = None

    # -- starting ---------------------------------------------------------------------------

    def start(self, row: tuple, now: float) -> None:
        """Start a claimed row: (id, kind, payload text, attempt, max_attempts, timeout,
        execution id)."""
        job_id, kind, payload, attempt, max_attempts, timeout, execution_id = row
        running = Running(job_id, attempt, max_attempts, kind, execution_id, now)
        self.in_flight[job_id] = running
        self.claimed += 1
        if self.running < self.concurrency:
            self._launch(running, payload, timeout, _EAGER_TASKS)
        else:
            self.waiting.append((running, payload, timeout))

    def _launch(self, running: Running, payload: str, timeout: float | None,
                eager: bool) -> None:
        self.running += 1
        coro = self._execute(running, payload, timeout)
        if eager:
            # The Task runs the job's first step at once, as the current task: a job that
            # finishes without waiting (a no-op, a cache hit) skips the trip through the loop.
            running.task = asyncio.Task(coro, loop=self.loop, eager_start=True)
        else:
            running.task = asyncio.Task(coro, loop=self.loop)

    def release(self, job_ids) -> None:
        """Free the slots of jobs whose outcomes are written."""
        for job_id in job_ids:
            self.in_flight.pop(job_id, None)
        self.slots.set()

    def free_slots(self) -> int:
        """How many more jobs may be claimed now: handler slots, and room in the table of
        claimed jobs whose outcomes are not written yet (twice the concurrency)."""
        claimed_ahead = len(self.waiting)
        return min(self.concurrency + self.prefetch - self.running - claimed_ahead,
                   2 * self.concurrency + self.prefetch - len(self.in_flight))

    def active(self) -> bool:
        return any(r.task is not None and not r.task.done() for r in self.in_flight.values())

    # -- running ----------------------------------------------------------------------------

    async def _execute(self, r: Running, payload_text: str, timeout: float | None) -> None:
        # One coroutine per job (a nested one for the outcome cost ~0.5 µs a job).
        r.started = True
        # Each job's Task runs in a context of its own: no need to reset this.
        current_job.set((r.id, self.queue, r.kind, r.attempt, self.worker_name))
        started = time.monotonic()
        outcome: Outcome | None = None
        try:
            task = self.tasks.get(r.kind)
            if task is None:
                raise Permanent(f"no task named {r.kind!r} is registered in this worker")
            try:
                payload = _parse_payload(payload_text)[0]
            except (ValueError, RecursionError) as exc:
                raise Permanent(f"the payload cannot be decoded: {type(exc).__name__}: "
                                f"{exc}") from exc
            if task.wants_ctx:
                r.ctx = JobContext(job_id=r.id, queue=self.queue, kind=r.kind,
                                   attempt=r.attempt, max_attempts=r.max_attempts,
                                   execution_id=f"{r.id}:{r.execution_id}",
                                   _report_progress=self.report_progress)
                args = (payload, r.ctx)
            else:
                args = (payload,)
            work = task.func(*args) if task.is_async else self._in_thread(task.func, *args)
            limit = timeout or task.timeout or self.config.default_timeout
            result = await (asyncio.wait_for(work, limit) if limit else work)
            encoded = "null" if result is None else self._encode_result(result)
        except asyncio.CancelledError:
            outcome = self.stopped(r, "while running")
        except JobCancelled as exc:
            outcome = Outcome(r.id, r.execution_id, "finish", "cancelled",
                              error=self._error(r, exc))
        except HandBack as exc:
            log.warning("job_handed_back", job_id=r.id, reason=str(exc), delay=exc.delay)
            progress = json.dumps(exc.progress) if exc.progress is not None else None
            outcome = Outcome(r.id, r.execution_id, "hand_back", delay=exc.delay,
                              progress=progress)
        except Exception as exc:
            outcome = self._failure(r, exc, time.monotonic() - started)
        else:
            outcome = Outcome(r.id, r.execution_id, "finish", "succeeded", result=encoded)
            if self.debug:  # a filtered log call still costs a few µs per job
                log.debug("job_succeeded", seconds=round(time.monotonic() - started, 4))
        finally:
            self.running -= 1
            if self.waiting and not self.stopping:
                # Not eagerly: a chain of jobs that finish at once would nest in this frame.
                self._launch(*self.waiting.popleft(), False)
            self.slots.set()
        if outcome is not None:
            self.record(outcome)

    def _encode_result(self, result: Any) -> str:
        """The result as JSON text Postgres can store, or Permanent saying why not: retrying
        a handler whose result cannot be stored would only do its work again."""
        try:
            encoded = json.dumps(result, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise Permanent(f"the result cannot be stored as JSON: {type(exc).__name__}: "
                            f"{exc}") from exc
        if len(encoded) > self.config.max_result_bytes:
            raise Permanent(f"the result is {len(encoded):,} bytes of JSON, over the limit of "
                            f"{self.config.max_result_bytes:,} (WorkerConfig.max_result_bytes)")
        if "\\u0000" in encoded:
            raise Permanent("the result contains a NUL character (\\u0000), which Postgres "
                            "cannot store")
        return encoded

    def _in_thread(self, func: Callable, *args) -> asyncio.Future:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.concurrency,
                                               thread_name_prefix="jobqueue-task")
        ctx = contextvars.copy_context()  # handler logs keep the job's ids
        return self.loop.run_in_executor(self._threads, ctx.run, func, *args)

    def _failure(self, r: Running, exc: Exception, seconds: float) -> Outcome:
        error = self._error(r, exc)
        if isinstance(exc, TimeoutError) and not str(exc):
            error = self._error(r, exc, "the job exceeded its timeout")
        final = isinstance(exc, Permanent) or r.attempt >= r.max_attempts
        if final:
            log.error("job_dead", error_type=type(exc).__name__, error=str(exc),
                      seconds=round(seconds, 4))
            return Outcome(r.id, r.execution_id, "finish", "dead", error=error)
        cfg = self.config
        delay = exc.delay if isinstance(exc, Retry) and exc.delay is not None else backoff(
            r.attempt, cfg.retry_base_seconds, cfg.retry_max_seconds)
        log.warning("job_failed", error_type=type(exc).__name__, error=str(exc),
                    retry_in=round(delay, 3), seconds=round(seconds, 4))
        return Outcome(r.id, r.execution_id, "retry", error=error, delay=delay)

    def _error(self, r: Running, exc: BaseException, message: str | None = None) -> str:
        return json.dumps({
            "attempt": r.attempt,
            "at": datetime.now(UTC).isoformat(),
            "type": type(exc).__name__,
            "message": message or str(exc),
            "traceback": "".join(traceback.format_exception(exc)),
            "worker": self.worker_name,
            "execution_id": f"{r.id}:{r.execution_id}",
        })

    # -- stopping ---------------------------------------------------------------------------

    def stopped(self, r: Running, when: str) -> Outcome | None:
        """The outcome of a job the worker stopped (see stop_job), by the reason it gave:
        None when the lease was lost, for another worker may own the job now and there is
        nothing of ours to write; the job's slot is freed at once then."""
        reason = r.stop_reason or "shutdown"
        if reason == "cancelled":
            return Outcome(r.id, r.execution_id, "finish", "cancelled",
                           error=self._error(r, JobCancelled(f"cancelled {when}")))
        if reason == "lease_lost":
            self.release((r.id,))
            return None
        return Outcome(r.id, r.execution_id, "hand_back")

    def stop_job(self, job_id: int, reason: str) -> None:
        r = self.in_flight.get(job_id)
        if r is None or r.stop_reason or (r.task is not None and r.task.done()):
            return
        if r.task is None:  # claimed ahead, not started
            self._drop_waiting(r, reason)
            return
        r.stop_reason = reason
        if r.ctx is not None:
            r.ctx._cancelled = True
        r.task.cancel()
        self.log.info("job_stopping", job_id=job_id, reason=reason)
        if not r.started:
            # Cancelled before its first step (a stop or a cancellation in the same loop pass
            # as the claim): its coroutine will never run to record the outcome, and its slot
            # and lease would be held until the worker exits.
            self.running -= 1
            self.slots.set()
            outcome = self.stopped(r, "before it started")
            if outcome is not None:
                self.record(outcome)

    def _drop_waiting(self, r: Running, reason: str) -> None:
        self.waiting = deque(w for w in self.waiting if w[0] is not r)
        r.stop_reason = reason
        outcome = self.stopped(r, "before it started")
        if outcome is not None:
            self.record(outcome)
        self.slots.set()

    def stop_waiting(self) -> None:
        """A stop: start nothing more, and hand back what was claimed ahead."""
        self.stopping = True
        waiting, self.waiting = self.waiting, deque()
        for r, _, _ in waiting:
            r.stop_reason = "shutdown"
            self.record(Outcome(r.id, r.execution_id, "hand_back"))

    def pending(self) -> list[asyncio.Task]:
        return [r.task for r in self.in_flight.values() if r.task and not r.task.done()]

    async def hand_back_rest(self) -> None:
        """After the grace period: stop what still runs (handed back), wait for it to end."""
        for r in list(self.in_flight.values()):
            if r.task is not None and not r.task.done():
                self.stop_job(r.id, "shutdown")
        leftovers = [r.task for r in self.in_flight.values() if r.task]
        await asyncio.gather(*leftovers, return_exceptions=True)

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
