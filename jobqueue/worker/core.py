"""The Worker: wires one process's services together and runs them on one asyncio loop.

- per queue it serves, a producer (the claim loop, woken by the listener or a poll timer)
  and an executor (runs each job in a Task, decides retry or dead letter, keeps the queue's
  own slots);
- completer: writes every queue's outcomes in batches;
- leases: the heartbeat; stops jobs whose lease is lost or that were cancelled, hands back
  claims it never heard of, and reads an operator's request to quiet or stop the worker;
- listener: one LISTEN for new work and cancellations, for every queue;
- maintenance: rescue and pruning, one process at a time;
- scheduler: declared schedules saved at start, due fires enqueued (every worker ticks).
Three connections whatever the number of queues: "claim" (claims, heartbeat, registration,
maintenance: short statements, most of them under the claim lock anyway), "finish"
(outcomes and progress) and the listener's.
With `until_idle` it stops by itself (a warm stop) once every queue's latest claim came back
short and every job's outcome is written (`_idle_check`).
This module owns start-up, stopping (warm and hard, by signal or call), and what happens when
a service fails: the worker stops, and `run()` raises WorkerFailed (exit 1 from the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping

import psycopg
import structlog

from jobqueue import db
from jobqueue.db.queries import q
from jobqueue.errors import WorkerFailed
from jobqueue.tasks import Registry, registry
from jobqueue.worker import link as link_module
from jobqueue.worker.completer import Completer
from jobqueue.worker.config import WorkerConfig
from jobqueue.worker.executor import Executor
from jobqueue.worker.leases import Leases
from jobqueue.worker.link import Link, LinkPool, opened
from jobqueue.worker.listener import Listener
from jobqueue.worker.maintenance import Maintenance
from jobqueue.worker.producer import Producer
from jobqueue.worker.scheduler import Scheduler

log = structlog.get_logger("jobqueue.worker")


class Worker:
    def __init__(self, url: str, config: WorkerConfig | None = None, *,
                 tasks: Registry | Mapping[str, Registry] = registry,
                 on_start: Callable[[], Awaitable[None]] | None = None,
                 on_stop: Callable[[], Awaitable[None]] | None = None,
                 gates: Mapping[str, Callable[[], Awaitable[float]]] | None = None):
        """`tasks`: one registry for every queue, or one per queue name. `on_start`/`on_stop`
        run on the worker's loop around its work (e.g. a platform's HTTP clients, which must
        live on that loop). Code on that loop borrows the worker's finish connection through
        `jobqueue.worker.link.current` instead of opening connections (a platform's limiter).
        `gates`: per queue name, asked before each claim how long to hold off (a platform with
        no usable key says so)."""
        self.gates = dict(gates or {})
        self.url = url
        self.on_start, self.on_stop = on_start, on_stop
        self._links: dict[str, Link] = {}
        self.config = config or WorkerConfig()
        self.tasks = tasks
        self.id = uuid.uuid4()
        self.log = log.bind(worker=str(self.id), queue=self.config.queue)
        # LISTEN needs a session of its own: a direct connection when DATABASE_URL is a
        # PgBouncer in transaction mode (JOBQUEUE_LISTEN_DATABASE_URL).
        self.listener = Listener(db.listen_url(url), {}, lambda: None, self.log)
        self.listening = self.listener.listening  # set while LISTEN is in place
        self._stopping = False  # warm stop: claim nothing more
        self._quiet = False  # an operator's quiet (0023): claim nothing more, keep running
        self._hard = False  # hard stop: hand everything back now
        self._closing = False  # the claim loop has ended; write what is left and go
        self._started = False  # registered: the database answered once
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.executors: list[Executor] = []
        self.producers: dict[str, Producer] = {}
        self.completer: Completer | None = None

    # -- counters for tests and the status line -------------------------------------------------

    @property
    def claimed(self) -> int:
        return sum(e.claimed for e in self.executors)

    @property
    def claim_rounds(self) -> int:
        return sum(p.claim_rounds for p in self.producers.values())

    @property
    def finished(self) -> int:
        return self.completer.finished if self.completer else 0

    def connections(self) -> int:
        """Database connections this process holds open now: the worker's links and its
        LISTEN connection (reported with each heartbeat). Platforms and tasks borrow the
        links (LinkPool), so there is nothing else to count."""
        own = sum(1 for link in self._links.values()
                  if link.conn is not None and not link.conn.closed)
        return own + (1 if self.listening.is_set() else 0)

    @property
    def _in_flight(self) -> dict:
        return {job_id: r for e in self.executors for job_id, r in e.in_flight.items()}

    # -- lifecycle --------------------------------------------------------------------------

    def stop(self, hard: bool = False) -> None:
        """Ask the worker to stop: warm (finish in-flight work) or hard (hand it back)."""
        self._hard = self._hard or hard
        self._stopping = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._poke)

    def _poke(self) -> None:
        for executor in self.executors:
            executor.stop_waiting()
        for producer in self.producers.values():
            producer.wake.set()
            producer.executor.slots.set()
        if self._hard:
            self._hard_event.set()

    def _on_signal(self, signum: int) -> None:
        hard = self._stopping  # the second signal of either kind is a hard stop
        self.log.info("signal", signal=signal.Signals(signum).name,
                      stop="hard" if hard else "warm", in_flight=len(self._in_flight))
        self.stop(hard=hard)

    def _give_up(self) -> bool:
        """Whether a link stops retrying an unreachable database: at a hard stop, and before
        start-up completed when stopping or past the connect timeout."""
        if self._hard:
            return True
        if not self._started:
            return self._stopping or time.monotonic() > self._connect_deadline
        return False

    async def run(self, install_signals: bool = False) -> None:
        cfg = self.config
        self._loop = loop = asyncio.get_running_loop()
        self._connect_deadline = time.monotonic() + cfg.connect_timeout
        enabled = getattr(log.bind(), "is_enabled_for", None)
        debug = enabled(logging.DEBUG) if enabled else True
        self._hard_event = asyncio.Event()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        links = self._links = {
            # A claim need not wait for its WAL flush: if Postgres crashes before the flush,
            # the claim is lost and the job is claimed again, with a new execution id. The
            # heartbeat, registration and maintenance share this connection: all of them are
            # short and safe to redo after a crash.
            "claim": Link(self.url, "claim", self._give_up, "SET synchronous_commit = off"),
            # Outcome batches are array literals (db.text_array) that spell NULL as NULL,
            # which array_nulls = off (a legacy setting) would read as the string 'NULL'.
            "finish": Link(self.url, "finish", self._give_up, "SET array_nulls = on"),
        }
        # What the process's platforms and its tasks borrow (ctx.connection()) instead of
        # opening connections: the finish link, between outcome batches.
        self.lent = LinkPool(links["finish"])
        # Everything on this loop borrows it through link.current: a platform's runtime, a
        # task's ctx.connection(), a maintenance hook (the Batch API pass).
        lent_token = link_module.current.set(self.lent)
        claim_lock = asyncio.Lock()
        self.completer = Completer(links["finish"], self.id, cfg.queue, self._written)
        for queue in cfg.queues:
            tasks = self.tasks if isinstance(self.tasks, Registry) else self.tasks[queue.name]
            executor = Executor(self.id, queue, cfg, tasks, self.completer.record,
                                self.completer.report_progress, loop, debug)
            self.executors.append(executor)
            producer = Producer(links["claim"], self.id, queue, cfg, executor, claim_lock)
            if cfg.until_idle:
                producer.on_short_claim = self._idle_check
            producer.gate = self._quiet_gate(self.gates.get(queue.name))
            self.producers[queue.name] = producer
        leases = Leases(links["claim"], self.id, cfg, self.executors, claim_lock,
                        self._worker_row, self._wake_all, self._on_control)
        self.listener.channels = {"jobqueue_insert": self._inserted,
                                  "jobqueue_cancel": self._cancel_notified}
        self.listener.on_connected = lambda: (self._wake_all(), leases.beat_now.set())
        maintenance = Maintenance(links["claim"], cfg, self.log)
        if self._stopping:
            self._poke()
        background: list[asyncio.Task] = []
        completer: asyncio.Task | None = None
        try:
            # The claim and finish connections open while the worker registers: the first
            # claim then goes out as soon as the worker row exists.
            try:
                await asyncio.gather(
                    links["claim"].execute(q("register_worker"), self._worker_row()),
                    links["finish"].run(opened))
            except psycopg.OperationalError:
                if self._stopping:  # stopped while waiting for the database: a clean stop
                    self.log.info("worker_stopped_before_start")
                    return
                raise
            self._started = True
            # After the connections are open (with the retries and --connect-timeout above):
            # a platform's runtime borrows the finish connection as it starts.
            if self.on_start is not None:
                await self.on_start()
            self.log.info("worker_started", concurrency=cfg.concurrency, listen=cfg.listen,
                          pid=os.getpid(), tasks=sorted({name for e in self.executors
                                                          for name in e.tasks.names()}))
            background = [self._service(leases.run(), "leases"),
                          self._service(maintenance.run(), "maintenance")]
            if cfg.schedules:  # every worker ticks; a fire's unique run row decides
                scheduler = Scheduler(self.url, self._registries(), bound_log=self.log,
                                      lent=self.lent)
                background.append(self._service(
                    scheduler.run(links["claim"], max(cfg.poll_seconds, 5.0),
                                  # a cron host's run (--until-idle) fires what is due first
                                  start_delay=0.0 if cfg.until_idle else 1.0),
                    "scheduler"))
            if cfg.listen:
                background.append(self._service(
                    self.listener.run(lambda: self._closing), "listener"))
            completer = self._service(self.completer.run(self._all_written), "completer")
            # A producer that fails stops the worker (see _service) and is reported at the end.
            await asyncio.gather(*(self._service(p.run(lambda: self._stopping), "producer")
                                   for p in self.producers.values()), return_exceptions=True)
            await self._drain()
        finally:
            self._closing = True
            if self.completer is not None:
                self.completer.event.set()
            if completer is not None:
                with contextlib.suppress(Exception):
                    await completer
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self._started:
                with contextlib.suppress(Exception):
                    links["claim"].give_up = lambda: True
                    await links["claim"].execute(q("unregister_worker"), {"id": self.id})
            for link in links.values():
                await link.close()
            for executor in self.executors:
                executor.close()
            if self.on_stop is not None:
                with contextlib.suppress(Exception):
                    await self.on_stop()
            # A Worker awaited inside a longer task (embedded, tests) must not leave its closed
            # link to be reopened by whatever runs next in that context.
            link_module.current.reset(lent_token)
            self.log.info("worker_stopped", claimed=self.claimed, finished=self.finished)
        if self._failure is not None:
            raise WorkerFailed(f"worker service failed: {type(self._failure).__name__}: "
                               f"{self._failure}") from self._failure

    def _registries(self) -> list[Registry]:
        return [self.tasks] if isinstance(self.tasks, Registry) else list(self.tasks.values())

    def _service(self, coro: Awaitable[None], name: str) -> asyncio.Task:
        """Run a background service; if it fails, log it and stop the worker (hard): a worker
        whose completer or heartbeat is gone must not go on claiming."""
        task = asyncio.ensure_future(coro)

        def done(t: asyncio.Task) -> None:
            if t.cancelled() or t.exception() is None:
                return
            exc = t.exception()
            if self._failure is None:
                self._failure = exc
            self.log.error("worker_service_failed", service=name,
                           error_type=type(exc).__name__, error=str(exc), exc_info=exc)
            self.stop(hard=True)

        task.add_done_callback(done)
        return task

    async def _drain(self) -> None:
        """Warm stop: wait up to the grace period for running jobs, then hand back the rest."""
        pending = [t for e in self.executors for t in e.pending()]
        if pending and not self._hard:
            self.log.info("draining", in_flight=len(pending), grace=self.config.grace_seconds)
            all_done = asyncio.ensure_future(asyncio.wait(pending))
            hard_wait = asyncio.ensure_future(self._hard_event.wait())
            await asyncio.wait([all_done, hard_wait], timeout=self.config.grace_seconds,
                               return_when=asyncio.FIRST_COMPLETED)
            all_done.cancel()
            hard_wait.cancel()
        await asyncio.gather(*(e.hand_back_rest() for e in self.executors))

    def _written(self, job_ids: list[int], retried: bool) -> None:
        for executor in self.executors:  # each frees the ids that are its own
            executor.release(job_ids)
        if retried:
            for producer in self.producers.values():
                producer.look_again()  # a retry may be due before the time it knows
        if self.config.until_idle and not any(e.in_flight for e in self.executors):
            # Every job's outcome is written: what they enqueued is committed. Each queue
            # claims again, and the worker is idle only once all those claims come back short.
            for producer in self.producers.values():
                producer.epoch += 1
                producer.wake.set()

    def _idle_check(self) -> None:
        """until_idle: stop (warm) once every queue's latest claim, made since the last job
        finished, came back short, and no job is in flight."""
        if self._stopping or any(e.in_flight for e in self.executors):
            return
        if all(p.idle_epoch == p.epoch for p in self.producers.values()):
            self.log.info("worker_idle", claimed=self.claimed, finished=self.finished)
            self.stop()

    def _all_written(self) -> bool:
        return self._closing and not any(e.active() for e in self.executors)

    def _wake_all(self) -> None:
        for producer in self.producers.values():
            producer.wake.set()

    def _inserted(self, payload: str) -> None:
        producer = self.producers.get(payload.partition(" ")[0])
        if producer is not None:
            producer.inserted(payload)

    def _on_control(self, control: str) -> None:
        """An operator's request read by the heartbeat (the dashboard's Workers page): 'stop'
        is a warm stop (finish in-flight work, exit); 'quiet' claims nothing more and keeps
        running what it holds, until stopped."""
        if control == "stop" and not self._stopping:
            self.log.info("worker_stop_requested", in_flight=len(self._in_flight))
            self.stop()
        elif control == "quiet" and not self._quiet:
            self.log.info("worker_quiet_requested", in_flight=len(self._in_flight))
            self._quiet = True

    def _quiet_gate(self, gate: Callable[[], Awaitable[float]] | None):
        """A queue's gate (asked before each claim: seconds to hold off) that also holds
        off while the worker is quiet."""
        async def quiet_or(gate=gate) -> float:
            if self._quiet:
                return self.config.heartbeat_seconds
            return await gate() if gate is not None else 0.0

        return quiet_or

    def _cancel_notified(self, payload: str) -> None:
        for executor in self.executors:
            executor.stop_job(int(payload), "cancelled")

    def _worker_row(self) -> dict:
        return {"id": self.id, "host": socket.gethostname(), "pid": os.getpid(),
                "queue": self.config.queue, "concurrency": self.config.concurrency,
                "in_flight": len(self._in_flight), "connections": self.connections(),
                "claimed": self.claimed, "finished": self.finished}


# Young-generation collections in a worker process: one per this many allocations (Python's
# default is 700). See tune_gc().
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Fit the cyclic garbage collector to a worker process. Its defaults suit programs that
    keep few objects alive; a busy worker keeps thousands of in-flight Tasks, coroutines and
    contexts that survive young collections and are promoted, so the collector kept
    traversing the whole heap. Measured (scripts/profile_drain.py): about 3 of a no-op job's
    9 µs of worker CPU. So: freeze what start-up built (modules, tasks, configuration; never
    garbage) out of every later collection, and collect the young generation less often.
    No gc.collect() first: it took 9 ms of the worker's start to free 45 objects.
    Process-wide, so only run_worker does it, not a Worker embedded in someone's app."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def run_worker(url: str, config: WorkerConfig, tasks: Registry = registry, **hooks) -> None:
    """Run one worker in this process until SIGTERM/SIGINT (the CLI's entry point)."""
    worker = Worker(url, config, tasks=tasks, **hooks)
    tune_gc()
    try:
        asyncio.run(worker.run(install_signals=True))
    except WorkerFailed as exc:
        log.error("worker_failed", error=str(exc))
        raise SystemExit(1) from None
