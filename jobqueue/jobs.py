"""What a job is, as callers see it: the spec they enqueue and the record they read back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jobqueue import settings

HOT_STATES = ("waiting", "scheduled", "running")
FINISHED_STATES = ("succeeded", "dead", "cancelled")
STATES = HOT_STATES + FINISHED_STATES

# Lower runs first. Names are for people; the column holds the number.
PRIORITIES = {"high": -10, "normal": 0, "low": 10}
PRIORITY_RANGE = (-32768, 32767)

# One compact encoder, reused: json.dumps(..., separators=...) builds a new one per call.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def to_json(value: Any) -> str:
    if value == {} and type(value) is dict:  # the common empty payload or metadata
        return "{}"
    return _encode(value)


# Defined in settings; named here too for the modules that import them from jobs.
DEFAULT_QUEUE = settings.DEFAULT_QUEUE
DEFAULT_MAX_ATTEMPTS = settings.DEFAULT_MAX_ATTEMPTS


class InvalidJob(ValueError):
    """A job spec that cannot be enqueued; the message names the field."""


def parse_priority(value: int | str | None) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        if value in PRIORITIES:
            return PRIORITIES[value]
        try:
            value = int(value)
        except ValueError:
            names = ", ".join(PRIORITIES)
            raise InvalidJob(
                f"priority: expected an integer or one of {names}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJob(f"priority: expected an integer, got {type(value).__name__}")
    lo, hi = PRIORITY_RANGE
    if not lo <= value <= hi:
        raise InvalidJob(f"priority: {value} is outside {lo}..{hi}")
    return value


@dataclass(slots=True)
class JobSpec:
    """One job to enqueue. `delay` (seconds or timedelta) and `run_at` are alternatives."""

    kind: str
    payload: Any = field(default_factory=dict)
    queue: str | None = None
    priority: int | str | None = None
    run_at: datetime | None = None
    delay: float | timedelta | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    idempotency_key: str | None = None
    owner: str | None = None
    batch_id: int | None = None
    metadata: dict | None = None

    def validated_row(self, default_queue: str, default_max_attempts: int, now: datetime):
        """The values the insert needs, checked; raises InvalidJob naming the bad field."""
        if not isinstance(self.kind, str) or not self.kind:
            raise InvalidJob("kind: must be a non-empty string")
        queue = self.queue or default_queue
        if not isinstance(queue, str):
            raise InvalidJob("queue: must be a string")
        max_attempts = default_max_attempts if self.max_attempts is None else self.max_attempts
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise InvalidJob(f"max_attempts: must be a positive integer, got {max_attempts!r}")
        if self.timeout is not None and not (
            isinstance(self.timeout, int | float) and self.timeout > 0
        ):
            raise InvalidJob(f"timeout: must be a positive number of seconds, got {self.timeout!r}")
        run_at = self.run_at
        if self.delay is not None:
            if run_at is not None:
                raise InvalidJob("delay: give delay or run_at, not both")
            delay = self.delay if isinstance(self.delay, timedelta) else timedelta(
                seconds=float(self.delay))
            run_at = now + delay
        if run_at is not None and run_at.tzinfo is None:
            raise InvalidJob("run_at: must carry a time zone")
        if self.metadata is not None and not isinstance(self.metadata, dict):
            raise InvalidJob("metadata: must be an object")
        if self.idempotency_key is not None and not isinstance(self.idempotency_key, str):
            raise InvalidJob("idempotency_key: must be a string")
        try:
            payload = to_json(self.payload)
        except (TypeError, ValueError) as exc:
            raise InvalidJob(f"payload: not JSON-serialisable ({exc})") from None
        return (
            queue,
            self.kind,
            payload,
            parse_priority(self.priority),
            run_at,
            max_attempts,
            self.timeout,
            self.owner,
            self.batch_id,
            to_json(self.metadata or {}),
            self.idempotency_key,
        )


@dataclass
class Job:
    """A job as stored, in either table. `errors` has one entry per failed attempt."""

    id: int
    queue: str
    kind: str
    state: str
    payload: Any
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    timeout_seconds: float | None
    result: Any
    errors: list[dict]
    progress: Any
    owner: str | None
    batch_id: int | None
    idempotency_key: str | None
    metadata: dict
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_owner: Any = None
    cancel_requested: bool = False

    @classmethod
    def from_row(cls, row: dict) -> Job:
        return cls(**row)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def to_dict(self) -> dict:
        out = {}
        for key, value in self.__dict__.items():
            if isinstance(value, datetime):
                value = value.isoformat()
            elif key == "lease_owner" and value is not None:
                value = str(value)
            out[key] = value
        return out
