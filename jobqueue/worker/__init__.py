"""The worker runtime: a process that claims jobs from a queue, runs their handlers and
records their outcomes. `Worker` (core.py) wires the services of this package together:
producer (claim loop), executor (run one job), completer (outcome batches), leases
(heartbeat), listener (LISTEN), maintenance (rescue, prune); supervisor runs several worker
processes. The worker never imports the CLI or the web app."""

from jobqueue.worker.config import WorkerConfig
from jobqueue.worker.core import GC_YOUNG_THRESHOLD, Worker, WorkerFailed, run_worker, tune_gc
from jobqueue.worker.executor import backoff

__all__ = ["GC_YOUNG_THRESHOLD", "Worker", "WorkerConfig", "WorkerFailed", "backoff",
           "run_worker", "tune_gc"]
