"""jobqueue: a Postgres-only job system for LLM and API workloads.

The names below are imported on first use (PEP 562), so a process that needs only part of
the package (a worker does not need the client's connection pool) starts sooner.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobqueue.client import Client
    from jobqueue.jobs import InvalidJob, Job, JobSpec
    from jobqueue.tasks import JobCancelled, JobContext, Permanent, Retry, task
    from jobqueue.worker import Worker, WorkerConfig

_HOMES = {
    "Client": "jobqueue.client",
    "InvalidJob": "jobqueue.jobs",
    "Job": "jobqueue.jobs",
    "JobSpec": "jobqueue.jobs",
    "JobCancelled": "jobqueue.tasks",
    "JobContext": "jobqueue.tasks",
    "Permanent": "jobqueue.tasks",
    "Retry": "jobqueue.tasks",
    "task": "jobqueue.tasks",
    "Worker": "jobqueue.worker",
    "WorkerConfig": "jobqueue.worker",
}
__all__ = [
    "Client",
    "InvalidJob",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobSpec",
    "Permanent",
    "Retry",
    "Worker",
    "WorkerConfig",
    "task",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'jobqueue' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
