"""What a job is, as callers see it: the spec they enqueue and the record they read back."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from jobqueue import settings
from jobqueue.errors import InvalidJob as InvalidJob

# A job's visible states. They are derived in SQL only, by jobqueue.job_state (see
# sql/migrations/0007_job_state.sql) and the view jobqueue.all_jobs: blocked (waiting for
# the jobs it depends on: a row of jobqueue.blocked, 0015), waiting (runnable now), scheduled
# (run_at in the future, never failed), retrying (run_at in the future after a failed
# attempt: its backoff), running (leased), and the finished ones. Python never works a state
# out of a row's columns. HOT_STATES are the unfinished ones.
HOT_STATES = ("blocked", "waiting", "scheduled", "retrying", "running")
FINISHED_STATES = ("succeeded", "dead", "cancelled")
STATES = HOT_STATES + FINISHED_STATES

# What a job that depends on others does when one of them ends dead or cancelled.
PARENT_FAILURE_POLICIES = ("cancel", "run")
# The most jobs one job may wait for (a batch's completion callback is not bound by it).
MAX_PARENTS = 1000

# Lower runs first. Names are for people; the column holds the number.
PRIORITIES = {"high": -10, "normal": 0, "low": 10}
PRIORITY_RANGE = (-32768, 32767)

# Limits on what a caller may ask for: the database's types and indexes hold these and no more,
# and every surface (Python API, CLI, HTTP API and its OpenAPI document) takes them from here.
# Names sit in btree indexes (the claim index, idempotency keys, paused queues), whose entries
# must stay under ~2,700 bytes: 200 characters is at most 800 bytes of UTF-8.
MAX_NAME_LENGTH = 200         # queue, kind, idempotency key
ATTEMPTS_RANGE = (1, 1000)    # max_attempts (an integer column; a retry loop has to end)
# timeout_seconds is a real: a millisecond and up (smaller floats underflowed it: a 500).
TIMEOUT_RANGE = (0.001, 7 * 86400.0)
MAX_DELAY_SECONDS = 10 * 366 * 86400.0  # how far ahead a job may be scheduled (delay)

# One compact encoder, reused: json.dumps(..., separators=...) builds a new one per call.
# allow_nan=False: NaN and Infinity are not JSON, and Postgres's jsonb refuses them.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode

# The deepest nesting of arrays and objects a payload or metadata may have. The worker decodes
# payloads with the json module, whose recursion a few hundred levels deeper than this would
# exhaust (the client used to accept depth 985, which crashed the worker with RecursionError);
# no real payload comes close.
MAX_JSON_DEPTH = 100

# What Postgres cannot store in text or jsonb: NUL (refused by both) and lone UTF-16 surrogates
# (not encodable as UTF-8). The encoder escapes NUL as \u0000 and keeps surrogates as they are,
# so one scan of the encoded text finds every candidate; only then is the value walked, to
# name the place.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


MAX_ID = 2**63 - 1  # bigint: the largest job or batch id


def id_from_text(text: Any) -> int | None:
    """A job or batch id written as text (a path, a budget's scope id): ASCII digits naming a
    number from 1 to MAX_ID; None for anything else. ('²' passes str.isdigit but is no int;
    nineteen 9s is past bigint; 4,300 digits are past what int() converts.)"""
    if not (isinstance(text, str) and text.isascii() and text.isdigit() and len(text) <= 19):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


def to_json(value: Any, field: str = "payload") -> str:
    """`value` as compact JSON, or InvalidJob naming `field` (and the place inside it) when it
    is not JSON or Postgres or a worker could not take it: NUL, a lone surrogate, NaN or an
    infinity, nesting deeper than MAX_JSON_DEPTH."""
    if value == {} and type(value) is dict:  # the common empty payload or metadata
        return "{}"
    try:
        encoded = _encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        _check_json(value, field)  # names the place when it is ours to name
        raise InvalidJob(f"{field}: not JSON-serialisable ({exc})") from None
    # Cheap screens first: a value cannot nest deeper than it has brackets.
    # isascii() is a flag check: ASCII text holds no surrogates, so most payloads skip the regex.
    if ("\\u0000" in encoded
            or (not encoded.isascii() and _SURROGATE.search(encoded) is not None)
            or encoded.count("[") + encoded.count("{") > MAX_JSON_DEPTH):
        _check_json(value, field)
    return encoded


def check_text(value: Any, field: str, *, optional: bool = True,
               max_length: int | None = None) -> None:
    """InvalidJob unless `value` is a string Postgres can store as text (or None if optional),
    of at most `max_length` characters."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise InvalidJob(f"{field}: must be a string, got {type(value).__name__}")
    problem = text_problem(value)
    if problem:
        raise InvalidJob(f"{field}: {problem}")
    if max_length is not None and len(value) > max_length:
        raise InvalidJob(f"{field}: longer than {max_length} characters ({len(value)})")


def text_problem(text: str) -> str | None:
    """What makes `text` unstorable in Postgres (NUL, a lone surrogate), or None."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which Postgres cannot store"
    surrogate = _SURROGATE.search(text)
    if surrogate:
        return (f"contains a lone surrogate (U+{ord(surrogate[0]):04X}), which is not "
                "valid Unicode text")
    return None


def _check_json(value: Any, field: str) -> None:
    """Walk `value` (without recursion) and raise InvalidJob at the first thing we refuse."""
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                raise InvalidJob(f"{where}: {problem}")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidJob(f"{where}: {item!r} is not a JSON number")
        elif isinstance(item, dict | list | tuple):
            if depth >= MAX_JSON_DEPTH:
                raise InvalidJob(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str):
                        problem = text_problem(key)
                        if problem:
                            raise InvalidJob(f"{where}: key {key!r}: {problem}")
                    stack.append((child, f"{where}.{key}", depth + 1))
            else:
                stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))


def check_run_at(run_at: Any) -> None:
    """InvalidJob unless `run_at` is an aware datetime that UTC can express (a time at year 1
    with a positive offset is year 0 in UTC: Postgres stores it, Python cannot read it back)."""
    if not isinstance(run_at, datetime):
        raise InvalidJob(f"run_at: must be a datetime, got {type(run_at).__name__}")
    if run_at.tzinfo is None or run_at.utcoffset() is None:
        raise InvalidJob("run_at: must carry a time zone")
    try:
        run_at.astimezone(UTC)
    except OverflowError:
        raise InvalidJob(f"run_at: {run_at.isoformat()} is outside years 1 to 9999 in UTC") \
            from None


# Defined in settings; named here too for the modules that import them from jobs.
DEFAULT_QUEUE = settings.DEFAULT_QUEUE
DEFAULT_MAX_ATTEMPTS = settings.DEFAULT_MAX_ATTEMPTS


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
    # Workflows: the ids of jobs to wait for (or, within one enqueue_many or batch, the
    # `ref` of an earlier spec), what to do if one of them ends dead or cancelled, and a
    # name later specs of the same call can depend on.
    depends_on: list[int | str] | None = None
    on_parent_failure: str | None = None
    ref: str | None = None

    def waits(self) -> bool:
        """Whether this spec takes part in a workflow (waits, or may be waited for by name)."""
        return bool(self.depends_on) or self.ref is not None

    def dependencies(self, limit: int = MAX_PARENTS) -> tuple[list[int | str], str]:
        """(depends_on, on_parent_failure), checked: InvalidJob names the field."""
        parents = self.depends_on or []
        if not isinstance(parents, list | tuple):
            raise InvalidJob("depends_on: must be a list of job ids")
        if len(parents) > limit:
            raise InvalidJob(f"depends_on: at most {limit} jobs, got {len(parents)}")
        for i, parent in enumerate(parents):
            if isinstance(parent, str):
                check_text(parent, f"depends_on[{i}]")
                if not parent:
                    raise InvalidJob(f"depends_on[{i}]: must be a job id or a non-empty ref")
            elif (isinstance(parent, bool) or not isinstance(parent, int)
                  or not 1 <= parent < 2**63):
                raise InvalidJob(f"depends_on[{i}]: must be a job id (a positive integer), "
                                 f"got {parent!r}")
        policy = self.on_parent_failure or "cancel"
        if policy not in PARENT_FAILURE_POLICIES:
            raise InvalidJob(f"on_parent_failure: must be one of "
                             f"{', '.join(PARENT_FAILURE_POLICIES)}, got {policy!r}")
        if self.ref is not None:
            check_text(self.ref, "ref")
            if not self.ref:
                raise InvalidJob("ref: must be a non-empty string")
        return list(parents), policy

    def validated_row(self, default_queue: str, default_max_attempts: int, now: datetime):
        """The values the insert needs, checked; raises InvalidJob naming the bad field."""
        if not isinstance(self.kind, str) or not self.kind:
            raise InvalidJob("kind: must be a non-empty string")
        check_text(self.kind, "kind", max_length=MAX_NAME_LENGTH)
        queue = self.queue or default_queue
        check_text(queue, "queue", optional=False, max_length=MAX_NAME_LENGTH)
        max_attempts = default_max_attempts if self.max_attempts is None else self.max_attempts
        lo, hi = ATTEMPTS_RANGE
        if (isinstance(max_attempts, bool) or not isinstance(max_attempts, int)
                or not lo <= max_attempts <= hi):
            raise InvalidJob(f"max_attempts: must be an integer from {lo} to {hi}, "
                             f"got {max_attempts!r}")
        lo, hi = TIMEOUT_RANGE
        if self.timeout is not None and not (
            isinstance(self.timeout, int | float) and not isinstance(self.timeout, bool)
            and lo <= self.timeout <= hi
        ):
            raise InvalidJob(f"timeout: must be a number of seconds from {lo:g} to {hi:g}, "
                             f"got {self.timeout!r}")
        run_at = self.run_at
        if self.delay is not None:
            if run_at is not None:
                raise InvalidJob("delay: give delay or run_at, not both")
            seconds = (self.delay.total_seconds() if isinstance(self.delay, timedelta)
                       else self.delay)
            if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
                    or not abs(seconds) <= MAX_DELAY_SECONDS):  # also refuses NaN
                raise InvalidJob(f"delay: must be a number of seconds within "
                                 f"±{MAX_DELAY_SECONDS:g}, got {self.delay!r}")
            run_at = now + timedelta(seconds=seconds)
        if run_at is not None:
            check_run_at(run_at)
        if self.metadata is not None and not isinstance(self.metadata, dict):
            raise InvalidJob("metadata: must be an object")
        check_text(self.idempotency_key, "idempotency_key", max_length=MAX_NAME_LENGTH)
        if self.idempotency_key == "":  # was silently no key at all: say so instead
            raise InvalidJob("idempotency_key: must be a non-empty string, or None for no key")
        check_text(self.owner, "owner")
        payload = to_json(self.payload, "payload")
        metadata = to_json(self.metadata or {}, "metadata")
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
            metadata,
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
