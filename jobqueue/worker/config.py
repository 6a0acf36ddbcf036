"""How a worker is set up: the queues it serves (each with its own concurrency and claim
batch) and every knob of its leases, retries, shutdown and maintenance. Plain data; nothing
here runs. The defaults are jobqueue.settings.WORKER_DEFAULTS."""

from __future__ import annotations

from dataclasses import dataclass

from jobqueue.settings import WORKER_DEFAULTS as D  # every default is defined there, once


@dataclass(frozen=True)
class QueueConfig:
    """One queue a worker serves: at most `concurrency` of its jobs run at once, claimed at
    most `claim_batch` per statement."""

    name: str
    concurrency: int = D["concurrency"]
    claim_batch: int = D["claim_batch"]

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"queue {self.name!r}: concurrency must be at least 1")
        if self.claim_batch < 1:
            raise ValueError(f"queue {self.name!r}: claim batch must be at least 1")


@dataclass
class WorkerConfig:
    # One queue (queue, concurrency, claim_batch), or several (`queues`, which then wins):
    # each keeps its own slots and claim loop, so a slow queue never starves another.
    queue: str = D["queue"]
    concurrency: int = D["concurrency"]
    lease_seconds: float = D["lease_seconds"]
    heartbeat_seconds: float | None = D["heartbeat_seconds"]  # None: a third of the lease
    poll_seconds: float = D["poll_seconds"]
    listen: bool = D["listen"]
    grace_seconds: float = D["grace_seconds"]
    claim_batch: int = D["claim_batch"]
    retry_base_seconds: float = D["retry_base_seconds"]
    retry_max_seconds: float = D["retry_max_seconds"]
    maintenance_seconds: float = D["maintenance_seconds"]
    retention_seconds: float = D["retention_seconds"]
    default_timeout: float | None = D["default_timeout"]
    # How long a starting worker waits for the database before it gives up (exit 1).
    connect_timeout: float = D["connect_timeout"]
    # A result larger than this (as JSON text) fails its job permanently: results live in a
    # table that every status read touches, and outcome batches carry them in one statement.
    max_result_bytes: int = D["max_result_bytes"]
    # Jobs each queue may claim ahead of free slots, to start the moment a slot frees: good
    # for many short I/O-bound jobs (no claim round trip between one and the next), bad for
    # long jobs (they would wait here, leased, while other workers idle). Off by default.
    prefetch: int = D["prefetch"]
    # Drain and stop: once every queue's latest claim came back short and no job is in flight
    # (its outcome written), stop as after a warm stop. Jobs scheduled for later (delayed jobs,
    # retries waiting out their backoff) do not keep it running. For cron services and CI.
    until_idle: bool = D["until_idle"]
    # Run the schedules service (jobqueue/worker/scheduler.py): safe in every worker.
    schedules: bool = D["schedules"]
    queues: tuple[QueueConfig, ...] = ()

    def __post_init__(self) -> None:
        if not self.queues:
            self.queues = (QueueConfig(self.queue, self.concurrency, self.claim_batch),)
        names = [qc.name for qc in self.queues]
        if len(set(names)) != len(names):
            raise ValueError(f"a queue is named twice: {names}")
        self.queue = ",".join(names)
        self.concurrency = sum(qc.concurrency for qc in self.queues)
        if self.heartbeat_seconds is None:
            self.heartbeat_seconds = self.lease_seconds / 3
