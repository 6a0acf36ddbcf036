"""How a worker is set up: the queue it serves and every knob of its claim loop, leases,
retries, shutdown and maintenance. Plain data; nothing here runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WorkerConfig:
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

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.heartbeat_seconds is None:
            self.heartbeat_seconds = self.lease_seconds / 3
