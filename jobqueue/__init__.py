"""jobqueue: a Postgres-only job system for LLM and API workloads."""

from jobqueue.client import Client
from jobqueue.jobs import InvalidJob, Job, JobSpec
from jobqueue.tasks import JobCancelled, JobContext, Permanent, Retry, task
from jobqueue.worker import Worker, WorkerConfig

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
