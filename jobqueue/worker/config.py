"""How a worker is set up: the queues it serves (each with its own concurrency and claim
batch) and every knob of its leases, retries, shutdown and maintenance. Plain data; nothing
here runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueConfig:
    """One queue a worker serves: at most `concurrency` of its jobs run at once, claimed at
    most `claim_batch` per statement."""

    name: str
    concurrency: int = 10
    claim_batch: int = 500

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"queue {self.name!r}: concurrency must be at least 1")
        if self.claim_batch < 1:
            raise ValueError(f"queue {self.name!r}: claim batch must be at least 1")


@dataclass
class WorkerConfig:
    # One queue (queue, concurrency, claim_batch), or several (`queues`, which then wins):
    # each keeps its own slots and claim loop, so a slow queue never starves another.
    queue: str = "default"
    concurrency: int = 10
    lease_seconds: float = 30.0
    heartbeat_seconds: float | None = None  # default: a third of the lease
    poll_seconds: float = 1.0
    listen: bool = True
    grace_seconds: float = 25.0
    claim_batch: int = 500
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 3600.0
    maintenance_seconds: float = 5.0
    retention_seconds: float = 7 * 86400.0
    default_timeout: float | None = None
    # How long a starting worker waits for the database before it gives up (exit 1).
    connect_timeout: float = 30.0
    # A result larger than this (as JSON text) fails its job permanently: results live in a
    # table that every status read touches, and outcome batches carry them in one statement.
    max_result_bytes: int = 1 << 20
    # Jobs each queue may claim ahead of free slots, to start the moment a slot frees: good
    # for many short I/O-bound jobs (no claim round trip between one and the next), bad for
    # long jobs (they would wait here, leased, while other workers idle). Off by default.
    prefetch: int = 0
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
