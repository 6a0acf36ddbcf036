"""From a batch file's rows to job specs (what each row enqueues)."""

from __future__ import annotations

from jobqueue.batches.files import BatchRow
from jobqueue.jobs import JobSpec


def chat_spec(row: BatchRow, max_attempts: int) -> JobSpec:
    payload: dict = {"messages": row.messages}
    for name in ("model", "max_tokens", "temperature"):
        value = getattr(row, name)
        if value is not None:
            payload[name] = value
    return JobSpec("chat", payload, priority=row.priority, max_attempts=max_attempts,
                   idempotency_key=row.idempotency_key, metadata=row.metadata, ref=row.ref,
                   depends_on=row.depends_on, on_parent_failure=row.on_parent_failure)
