"""Every exception jobqueue raises on purpose, in one hierarchy.

    JobqueueError
    ├── InvalidJob (ValueError)          a job the Client refuses; the message names the field
    ├── SettingError (ValueError)        an environment variable is wrong; names it
    ├── InvalidQueueSettings (ValueError) a queue's caps or fairness are wrong; names the field
    ├── QueueBusy                        enqueues in flight held a change of fairness back
    ├── ConfigError (ValueError)         jobqueue.toml is wrong; names file, table and field
    ├── BatchFileError (ValueError)      FILE:LINE: field: what is wrong
    ├── UnreadableDocument (ValueError)  an uploaded document that cannot become text
    │   └── DocumentTooLarge             its text or its chunks pass a configured limit
    ├── QuotaExceeded                    an owner's quota refuses new work; says when to retry
    ├── HandBack                         raised by a handler: give the job back unspent
    │   ├── NoUsableKey                  every key of a platform is disabled
    │   └── OverBudget                   an LLM call would pass a budget: the job pauses
    ├── InvalidAnswer                    a model's answer lacked the shape asked for
    ├── RedactedError                    an LLM call's error, its API keys scrubbed out
    ├── InvalidWebhook (ValueError)      a webhook URL, event or setting we refuse; names it
    ├── WebhookRefused                   a delivery's address is not allowed (no request made)
    ├── WebhookFailed                    a delivery's receiver failed (non-2xx, unreachable)
    ├── Retry                            raised by a handler: another attempt, after `delay`
    ├── Permanent                        raised by a handler: dead-letter now
    ├── JobCancelled                     the running job was cancelled (ctx.check_cancelled)
    └── WorkerFailed (RuntimeError)      a worker service failed and the worker stopped

`except JobqueueError` catches all of them. The ValueError children keep ValueError as a second
base because callers (and older code) catch them as ValueError. Each class is also importable
from the module that raised it before this one existed (jobqueue.jobs, jobqueue.tasks,
jobqueue.llm.platforms, ...); the public ones from `jobqueue` itself.
"""

from __future__ import annotations


class JobqueueError(Exception):
    """The base of every exception jobqueue raises on purpose."""


class InvalidJob(JobqueueError, ValueError):
    """A job spec that cannot be enqueued; the message names the field."""


class SettingError(JobqueueError, ValueError):
    """An environment variable whose value does not parse; the message names the variable."""


class InvalidQueueSettings(JobqueueError, ValueError):
    """Queue settings (caps, fairness) that cannot be stored; the message names the field."""


class QueueBusy(JobqueueError):
    """Enqueues in flight held a change of a queue's fairness back; try again."""


class ConfigError(JobqueueError, ValueError):
    """A wrong config: the message names the file, the table and the field."""


class BatchFileError(JobqueueError, ValueError):
    """A problem in a batch file; str() is `FILE:LINE: field: what is wrong`, for people."""

    def __init__(self, path: str, line: int | None, field: str | None, problem: str):
        self.path = path
        self.line = line
        self.field = field
        self.problem = problem
        super().__init__(format_location(path, line, field, problem))


def format_location(path: str, line: int | None, field: str | None, problem: str) -> str:
    where = path if line is None else f"{path}:{line}"
    return f"{where}: {field}: {problem}" if field else f"{where}: {problem}"


class UnreadableDocument(JobqueueError, ValueError):
    """The file cannot be turned into text (a scanned PDF, say): retrying will not help."""


class DocumentTooLarge(UnreadableDocument):
    """The document's text (or its streams, inflated) or its chunks pass a configured limit
    (JOBQUEUE_DOCUMENT_MAX_CHARS, JOBQUEUE_DOCUMENT_MAX_CHUNKS); the message names it."""


class QuotaExceeded(JobqueueError):
    """New work refused by a per-owner quota (jobqueue/quotas.py); nothing was enqueued.

    `quota` names it ("kind:lesson"), `owner` whose it is, `budget` "jobs" or "tokens";
    `limit` per `period_seconds`, `remaining` now, `reset_seconds` until the budget is full
    again, and `retry_after` (seconds) / `retry_at` (a UTC datetime): when the refused work
    would fit. `requested` is what was asked for (jobs or tokens)."""

    def __init__(self, message: str, *, quota: str, owner: str, budget: str, limit: int,
                 period_seconds: float, remaining: float, reset_seconds: float,
                 retry_after: float, requested: float):
        from datetime import UTC, datetime, timedelta

        super().__init__(message)
        self.quota, self.owner, self.budget = quota, owner, budget
        self.limit, self.period_seconds = limit, period_seconds
        self.remaining, self.reset_seconds = remaining, reset_seconds
        self.retry_after, self.requested = retry_after, requested
        self.retry_at = datetime.now(UTC) + timedelta(seconds=retry_after)


class HandBack(JobqueueError):
    """Raise to give the job back as it was: it waits to be claimed again and the attempt is
    not counted (nothing was tried that could have failed). With `progress` (any JSON value,
    saying why for people), the job is due again only after `delay` seconds."""

    def __init__(self, message: str = "handed back", delay: float = 0.0,
                 progress: object = None):
        super().__init__(message)
        self.delay = delay
        self.progress = progress


class NoUsableKey(HandBack):
    """Every key of the platform is disabled (rejected, or out of quota): the job goes back to
    waiting, attempts untouched, and the platform's workers stop claiming until a key is
    enabled again (`jobqueue keys enable`)."""


class OverBudget(HandBack):
    """An LLM call would pass a budget (per owner, batch or campaign): the job goes back to
    waiting, attempts untouched, says "over budget" in its progress, and is looked at again
    after a while, or at once when the budget is raised (`jobqueue budgets set`)."""


class InvalidAnswer(JobqueueError):
    """The model's answer did not have the shape asked for; another attempt may do better."""


class RedactedError(JobqueueError):
    """An LLM call's exception whose text could not be scrubbed of API keys in place (its own
    __str__, say): its type's name and its scrubbed text (jobqueue/llm/redact.py)."""


class InvalidWebhook(JobqueueError, ValueError):
    """A webhook subscription we refuse (URL, host, event type, format); names the field."""


class WebhookRefused(JobqueueError):
    """A webhook's host resolved to an address the operator does not allow: nothing was
    sent (JOBQUEUE_WEBHOOK_ALLOW_PRIVATE, JOBQUEUE_WEBHOOK_ALLOWED_HOSTS)."""


class WebhookFailed(JobqueueError):
    """A webhook attempt failed: the receiver answered other than 2xx (a redirect too: none
    is followed), or could not be reached in time. The delivery job retries it."""


class Retry(JobqueueError):
    """Raise to ask for another attempt after `delay` seconds (or the usual backoff)."""

    def __init__(self, message: str = "retry requested", delay: float | None = None):
        super().__init__(message)
        self.delay = delay


class Permanent(JobqueueError):
    """Raise to dead-letter the job now: retrying cannot help (bad input, say)."""


class JobCancelled(JobqueueError):
    """Raised by ctx.check_cancelled() once someone has cancelled the running job."""


class WorkerFailed(JobqueueError, RuntimeError):
    """A worker service failed: the worker stopped, and `Worker.run()` raises this."""
