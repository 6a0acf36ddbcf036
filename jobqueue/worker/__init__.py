"""The worker runtime: a process that claims jobs from queues, runs their handlers and records
their outcomes. `Worker` wires the services in this package together."""

from jobqueue.worker.core import (
    GC_YOUNG_THRESHOLD,
    Worker,
    WorkerConfig,
    backoff,
    run_worker,
    tune_gc,
)

__all__ = ["GC_YOUNG_THRESHOLD", "Worker", "WorkerConfig", "backoff", "run_worker", "tune_gc"]
