"""The task registry: plain Python functions (sync or async) that workers run by name.

    @task("send_email")
    def send_email(payload, ctx):
        ...

Where its jobs go is not the decorator's business: `[tasks.send_email] queue = "emails"` in
jobqueue.toml routes them, for every process (see jobqueue/routing.py).

A handler gets the job's payload, and the JobContext too when it declares a `ctx` parameter.
Its return value (JSON-serialisable) is the job's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobqueue import routing
from jobqueue.errors import JobCancelled as JobCancelled
from jobqueue.errors import Permanent as Permanent
from jobqueue.errors import Retry as Retry


@dataclass
class Task:
    name: str
    func: Callable
    queue: str | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    is_async: bool = False
    wants_ctx: bool = False
    cron: str | None = None  # @task(cron=...): a schedule task:NAME (jobqueue/schedules/)
    cron_timezone: str = "UTC"


@dataclass
class JobContext:
    """What a running handler knows about its job and can tell the worker."""

    job_id: int
    queue: str
    kind: str
    attempt: int
    max_attempts: int
    # Unique to this execution of the job, "job id:claim token" (a claim forgotten in a crash
    # repeats the attempt number, never this): what a handler deduplicates side effects by.
    execution_id: str = ""
    # A plain flag (set by the worker's loop, read by the handler's thread): a threading.Event
    # per job cost a tenth of the worker's CPU in a drain of no-op jobs.
    _cancelled: bool = field(default=False, repr=False)
    _report_progress: Callable[[int, str, Any], None] | None = field(default=None, repr=False)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def check_cancelled(self) -> None:
        """For long sync handlers: raise JobCancelled once the job was cancelled."""
        if self._cancelled:
            raise JobCancelled(f"job {self.job_id} was cancelled")

    def llm(self, platform: str):
        """An openai-SDK-shaped client for `platform` (a name in jobqueue.toml) whose calls
        share the platform's rate limits, fallback, cache and accounting with the built-in
        kinds: `await ctx.llm("openai").chat.completions.create(messages=[...])`. Async
        handlers only (see jobqueue/llm/clients.py)."""
        from jobqueue.llm.clients import client

        return client(platform, job_id=self.job_id)

    def connection(self):
        """`async with ctx.connection() as conn:` a database connection for a few short
        statements (autocommit; `conn.transaction()` for several together): the worker's own,
        borrowed between its outcome batches, so a task needing the database opens no
        connection of its own and the process stays within its three. Hold it for
        statements only, never across a network call. Async handlers only. Outside a worker
        (a handler called directly) it opens a connection to DATABASE_URL for the block."""
        from jobqueue.worker import link

        lent = link.current.get()  # the LinkPool of the worker running this job
        return lent.connection() if lent is not None else _own_connection()

    def set_progress(self, progress: Any) -> None:
        """Record progress (any JSON value, e.g. {"done": 3, "total": 10}); best effort."""
        if self._report_progress is not None:
            self._report_progress(self.job_id, self.execution_id, progress)


@contextlib.asynccontextmanager
async def _own_connection():
    from jobqueue import db

    async with await db.connect_async(db.database_url()) as conn:
        yield conn


class Registry:
    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def register(self, name: str, func: Callable, **options) -> Task:
        """Add a task. Options a process-independent routing must back (queue, max_attempts,
        timeout) are checked against jobqueue.toml's [tasks.NAME]: see jobqueue/routing.py."""
        if name in self._tasks and self._tasks[name].func is not func:
            raise ValueError(f"task {name!r} is registered twice")
        routing.check_task(name, queue=options.get("queue"),
                           max_attempts=options.get("max_attempts"),
                           timeout=options.get("timeout"))
        if options.get("cron") is not None:  # a bad expression fails at import, naming it
            from jobqueue.schedules import cron

            try:
                cron.parse(options["cron"], options.get("cron_timezone") or "UTC")
            except ValueError as exc:
                raise ValueError(f"@task({name!r}): {exc}") from None
        params = inspect.signature(func).parameters
        t = Task(
            name=name,
            func=func,
            is_async=asyncio.iscoroutinefunction(func),
            wants_ctx="ctx" in params,
            **options,
        )
        self._tasks[name] = t
        return t

    def merged_with(self, other: Registry) -> Registry:
        """A registry with this one's tasks and, under names this one lacks, other's."""
        merged = Registry()
        merged._tasks = other._tasks | self._tasks
        return merged

    def get(self, name: str) -> Task | None:
        return self._tasks.get(name)

    def names(self) -> list[str]:
        return sorted(self._tasks)


registry = Registry()


def task(
    name: str | None = None,
    *,
    queue: str | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    cron: str | None = None,
    cron_timezone: str = "UTC",
    registry: Registry = registry,
):
    """Register a function as the task `name` (default: its __name__).

    `queue` and `max_attempts` do not route: jobqueue.toml's [tasks.NAME] table does, for every
    process. When given here they must agree with that table (ConfigError otherwise), so a
    worker importing the task refuses to start rather than wait on a queue nobody fills.
    `timeout` is the limit for this task's jobs that carry none of their own.
    `cron` (with `cron_timezone`) also schedules the task: a schedule named task:NAME that
    enqueues it with an empty payload, saved when a worker that imports it starts.
    """

    def decorate(func: Callable) -> Callable:
        registry.register(
            name or func.__name__, func, queue=queue, max_attempts=max_attempts, timeout=timeout,
            cron=cron, cron_timezone=cron_timezone,
        )
        return func

    return decorate
