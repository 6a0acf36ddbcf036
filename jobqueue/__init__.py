"""jobqueue: a Postgres-only job system for LLM and API workloads.

The names below are imported on first use (PEP 562), so a process that needs only part of
the package (a worker does not need the client's connection pool) starts sooner.
"""

from __future__ import annotations

import importlib

# `typing` costs ~10 ms, a fifth of the time before `python -m jobqueue` can catch SIGTERM
# (jobqueue/__main__.py); type checkers read the constant below as True all the same.
TYPE_CHECKING = False

if TYPE_CHECKING:  # for type checkers and editors; `X as X` marks a re-export
    from jobqueue.client import Client as Client
    from jobqueue.errors import BatchFileError as BatchFileError
    from jobqueue.errors import ConfigError as ConfigError
    from jobqueue.errors import InvalidAnswer as InvalidAnswer
    from jobqueue.errors import InvalidJob as InvalidJob
    from jobqueue.errors import JobCancelled as JobCancelled
    from jobqueue.errors import JobqueueError as JobqueueError
    from jobqueue.errors import NoUsableKey as NoUsableKey
    from jobqueue.errors import Permanent as Permanent
    from jobqueue.errors import QuotaExceeded as QuotaExceeded
    from jobqueue.errors import Retry as Retry
    from jobqueue.errors import UnreadableDocument as UnreadableDocument
    from jobqueue.jobs import Job as Job
    from jobqueue.jobs import JobSpec as JobSpec
    from jobqueue.tasks import JobContext as JobContext
    from jobqueue.tasks import task as task
    from jobqueue.worker import Worker as Worker
    from jobqueue.worker import WorkerConfig as WorkerConfig

# Each public name and the module it lives in.
_HOMES = {
    "Client": "jobqueue.client",
    # every exception, all JobqueueError (see errors.py for the tree)
    "JobqueueError": "jobqueue.errors",
    "InvalidJob": "jobqueue.errors",
    "ConfigError": "jobqueue.errors",
    "BatchFileError": "jobqueue.errors",
    "UnreadableDocument": "jobqueue.errors",
    "NoUsableKey": "jobqueue.errors",
    "QuotaExceeded": "jobqueue.errors",
    "InvalidAnswer": "jobqueue.errors",
    "Retry": "jobqueue.errors",
    "Permanent": "jobqueue.errors",
    "JobCancelled": "jobqueue.errors",
    "Job": "jobqueue.jobs",
    "JobSpec": "jobqueue.jobs",
    "JobContext": "jobqueue.tasks",
    "task": "jobqueue.tasks",
    "Worker": "jobqueue.worker",
    "WorkerConfig": "jobqueue.worker",
}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name == "__version__":  # defined in settings, read on demand: `import jobqueue` stays
        from jobqueue.settings import VERSION  # cheap (python -m jobqueue pays for it first)

        return VERSION
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'jobqueue' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
