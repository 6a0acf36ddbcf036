"""What a valid schedule is: its fields checked, whoever gives them (CLI, HTTP, dashboard,
jobqueue.toml, @task(cron=...)), and what one fire enqueues.

A schedule enqueues either a job (kind, queue or platform, payload, options) or a batch: a
batch file (JSONL or CSV, with an optional template) checked and stored with the schedule
when it is saved, so every worker on every host enqueues the same rows. Every problem is an
InvalidSchedule whose message starts with the field at fault.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobqueue.errors import ConfigError, InvalidJob, InvalidSchedule
from jobqueue.jobs import DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, JobSpec, check_text, to_json
from jobqueue.schedules import cron

MISFIRE_POLICIES = ("skip", "once", "all")
ORIGINS = ("api", "config", "task")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$")
# A stored batch file's largest size: it lives in the schedule's row.
MAX_BATCH_BYTES = 16 * 1024 * 1024
# The fields a flat definition (a TOML table, an HTTP body, CLI options) may carry.
JOB_FIELDS = ("kind", "queue", "platform", "payload", "priority", "max_attempts", "timeout",
              "metadata")
BATCH_FIELDS = ("batch", "batch_file", "format", "template", "on_complete")
ON_COMPLETE_FIELDS = ("kind", "queue", "payload", "priority", "max_attempts")
COMMON_FIELDS = ("cron", "timezone", "misfire", "max_lateness", "owner", "paused")
FIELDS = COMMON_FIELDS + JOB_FIELDS + BATCH_FIELDS


@dataclass
class ScheduleSpec:
    """A checked schedule definition, as stored (the run-time state is the store's)."""

    name: str
    cron: str
    timezone: str = "UTC"
    target: dict[str, Any] = field(default_factory=dict)
    batch_content: str | None = None
    misfire: str = "once"
    max_lateness: float | None = None
    owner: str | None = None
    origin: str = "api"
    paused: bool = False

    def parsed_cron(self) -> cron.Cron:
        return cron.parse(self.cron, self.timezone)

    def definition(self) -> tuple:
        """What start-up sync compares: a change of any of these replaces the row."""
        return (self.cron, self.timezone, self.target, self.batch_content, self.misfire,
                self.max_lateness, self.owner)


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidSchedule("name: 1-100 characters of letters, digits and _ . : @ -, "
                              f"starting with a letter or digit; got {name!r}")
    return name


# The names of campaigns' own schedules (jobqueue/campaigns/store.py makes them, with a
# campaign target): no schedule built from fields may take one, or it would be read, run and
# replaced as some campaign's schedule, whoever owns it.
CAMPAIGN_PREFIX = "campaign:"


def build(name: str, fields: dict[str, Any], *, origin: str = "api",
          base_dir: str | None = None, platforms: dict | None = None) -> ScheduleSpec:
    """A ScheduleSpec from flat fields (see FIELDS). `batch_file` is read relative to
    `base_dir`; `batch` is the file's text itself (the HTTP API's form). `platforms`: the
    configured platforms (loaded from jobqueue.toml when a platform is named and None)."""
    check_name(name)
    if name.startswith(CAMPAIGN_PREFIX):
        raise InvalidSchedule(f"name: {CAMPAIGN_PREFIX!r} names are campaigns' own schedules "
                              f"(give the campaign a schedule instead); got {name!r}")
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise InvalidSchedule(f"{unknown[0]}: unknown field (known: {', '.join(FIELDS)})")
    given = {k: v for k, v in fields.items() if v is not None}
    expression = given.get("cron")
    timezone = given.get("timezone", "UTC")
    cron.parse(expression, timezone)  # InvalidSchedule naming cron or timezone
    misfire = given.get("misfire", "once")
    if misfire not in MISFIRE_POLICIES:
        raise InvalidSchedule(f"misfire: must be one of {', '.join(MISFIRE_POLICIES)}, "
                              f"got {misfire!r}")
    lateness = given.get("max_lateness")
    if lateness is not None and (isinstance(lateness, bool)
                                 or not isinstance(lateness, int | float)
                                 or not 0 < lateness < 10 ** 9):
        raise InvalidSchedule(f"max_lateness: must be a positive number of seconds, "
                              f"got {lateness!r}")
    paused = given.get("paused", False)
    if not isinstance(paused, bool):
        raise InvalidSchedule(f"paused: must be true or false, got {paused!r}")
    owner = given.get("owner")
    _text(owner, "owner")
    spec = ScheduleSpec(name=name, cron=" ".join(expression.split()), timezone=timezone,
                        misfire=misfire, owner=owner, origin=origin, paused=paused,
                        max_lateness=float(lateness) if lateness is not None else None)
    if "batch" in given or "batch_file" in given:
        extra = sorted(set(given) & {"kind", "queue", "payload", "max_attempts", "timeout"})
        if extra == [] and "on_complete" in given:
            _on_complete(given["on_complete"])
        if extra:
            raise InvalidSchedule(f"{extra[0]}: a batch schedule takes platform, batch_file "
                                  "(or batch), format and template; not job fields")
        spec.target, spec.batch_content = _batch_target(given, base_dir, platforms)
    else:
        stray = sorted(set(given) & {"format", "template", "on_complete"})
        if stray:
            raise InvalidSchedule(f"{stray[0]}: goes with batch_file (or batch)")
        spec.target = _job_target(given, platforms)
    return spec


def _on_complete(value: Any) -> None:
    """A batch schedule's callback: a job {kind, queue?, payload?, priority?, max_attempts?}
    enqueued once every job of a fire's batch has ended (it gets the batch id and counts)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise InvalidSchedule('on_complete: must be a table/object like {kind = "summarise"}')
    unknown = sorted(set(value) - set(ON_COMPLETE_FIELDS))
    if unknown:
        raise InvalidSchedule(f"on_complete.{unknown[0]}: unknown field (known: "
                              f"{', '.join(ON_COMPLETE_FIELDS)})")
    if not isinstance(value.get("kind"), str) or not value["kind"].strip():
        raise InvalidSchedule("on_complete.kind: required, the task to run")
    if not isinstance(value.get("payload", {}), dict):
        raise InvalidSchedule("on_complete.payload: must be an object")
    try:
        on_complete_spec(value, None, "check", datetime.now(UTC)).validated_row(
            "default", 1, datetime.now(UTC))
    except ValueError as exc:
        raise InvalidSchedule(f"on_complete.{exc}") from None


def on_complete_spec(value: dict, owner: str | None, schedule: str,
                     fire_at: datetime) -> JobSpec:
    """The callback job of one fire's batch (its payload names the schedule and fire)."""
    return JobSpec(kind=value["kind"], queue=value.get("queue"),
                   payload=dict(value.get("payload") or {}) | {
                       "schedule": schedule, "fire_at": fire_at.isoformat()},
                   priority=value.get("priority"), max_attempts=value.get("max_attempts"),
                   owner=owner)


def _text(value: Any, where: str) -> None:
    try:
        check_text(value, where)
    except InvalidJob as exc:
        raise InvalidSchedule(str(exc)) from None


def platform_settings(name: Any, platforms: dict | None = None):
    """The named platform of jobqueue.toml; InvalidSchedule naming `platform` otherwise."""
    if not isinstance(name, str) or not name:
        raise InvalidSchedule("platform: must be the name of a platform of jobqueue.toml")
    if platforms is None:
        from jobqueue.llm import platforms as llm_platforms
        try:
            platforms = llm_platforms.load()
        except ConfigError as exc:
            raise InvalidSchedule(f"platform: {exc}") from None
    if name not in platforms:
        raise InvalidSchedule(f"platform: unknown platform {name!r} (known: "
                              f"{', '.join(sorted(platforms)) or 'none'})")
    return platforms[name]


def _job_target(given: dict[str, Any], platforms: dict | None) -> dict[str, Any]:
    kind, queue = given.get("kind"), given.get("queue")
    max_attempts = given.get("max_attempts")
    if "platform" in given:
        if queue is not None:
            raise InvalidSchedule("queue: give platform or queue, not both")
        settings = platform_settings(given["platform"], platforms)
        queue, kind = given["platform"], kind or "chat"
        max_attempts = max_attempts if max_attempts is not None else settings.max_attempts
    if not kind:
        raise InvalidSchedule("kind: required for a job schedule (the task to run), or give "
                              "platform (chat jobs) or batch_file")
    target = {"type": "job", "kind": kind, "queue": queue,
              "payload": given.get("payload", {}), "priority": given.get("priority"),
              "max_attempts": max_attempts, "timeout": given.get("timeout"),
              "metadata": given.get("metadata")}
    try:  # checked now as an enqueue would: the same InvalidJob, one field named
        job_spec(target, "check", datetime(2000, 1, 1, tzinfo=UTC), None).validated_row(
            DEFAULT_QUEUE, DEFAULT_MAX_ATTEMPTS, datetime.now(UTC))
        to_json(target, "target")
    except InvalidJob as exc:
        raise InvalidSchedule(str(exc)) from None
    return target


def job_spec(target: dict[str, Any], schedule: str, fire_at: datetime,
             owner: str | None) -> JobSpec:
    """The job one fire of a job schedule enqueues; its metadata names the schedule and fire."""
    metadata = dict(target.get("metadata") or {})
    metadata |= {"schedule": schedule, "fire_at": fire_at.isoformat()}
    return JobSpec(kind=target["kind"], payload=target.get("payload", {}),
                   queue=target.get("queue"), priority=target.get("priority"),
                   max_attempts=target.get("max_attempts"), timeout=target.get("timeout"),
                   owner=owner, metadata=metadata)


def _batch_target(given: dict[str, Any], base_dir: str | None,
                  platforms: dict | None) -> tuple[dict[str, Any], str]:
    if "batch" in given and "batch_file" in given:
        raise InvalidSchedule("batch: give batch (the file's text) or batch_file, not both")
    platform_settings(given.get("platform"), platforms)
    fmt, template = given.get("format"), given.get("template")
    if fmt is not None and fmt not in ("jsonl", "csv"):
        raise InvalidSchedule(f"format: must be jsonl or csv, got {fmt!r}")
    _text(template, "template")
    if "batch_file" in given:
        path = given["batch_file"]
        if not isinstance(path, str) or not path:
            raise InvalidSchedule("batch_file: must be a path")
        full = os.path.join(base_dir or os.getcwd(), path)
        try:
            if os.path.getsize(full) > MAX_BATCH_BYTES:
                raise InvalidSchedule(f"batch_file: {path}: larger than {MAX_BATCH_BYTES} bytes")
            with open(full, encoding="utf-8") as f:
                content = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidSchedule(f"batch_file: {path}: cannot read it ({exc})") from None
        _text(content, "batch_file")
        source = os.path.abspath(full)
        fmt = fmt or ("csv" if path.lower().endswith(".csv") else "jsonl")
    else:
        content = given["batch"]
        if not isinstance(content, str):
            raise InvalidSchedule("batch: must be the batch file's text")
        _text(content, "batch")  # stored as text: no NUL, no lone surrogate
        if len(content.encode("utf-8", "surrogatepass")) > MAX_BATCH_BYTES:
            raise InvalidSchedule(f"batch: larger than {MAX_BATCH_BYTES} bytes")
        source, fmt = None, fmt or "jsonl"
    target = {"type": "batch", "platform": given["platform"], "format": fmt,
              "template": template, "source": source}
    if given.get("on_complete") is not None:
        target["on_complete"] = given["on_complete"]
    with stored_file(content, fmt) as path:
        from jobqueue.batches import files as batchfiles
        report = batchfiles.validate(path, template=template, fmt=fmt)
    if not report.ok:
        where = source or "batch"
        first = report.lines()[0].replace(path, where)
        raise InvalidSchedule(f"batch_file: {first} ({report.error_count} problem(s))")
    if report.rows == 0:
        raise InvalidSchedule("batch_file: has no rows")
    target["rows"] = report.rows
    return target, content


@contextlib.contextmanager
def stored_file(content: str, fmt: str) -> Iterator[str]:
    """The stored batch text as a file the batch reader can stream (deleted afterwards)."""
    fd, path = tempfile.mkstemp(prefix="jobqueue-schedule-", suffix=f".{fmt}")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(content)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def batch_name(schedule: str, fire_at: datetime, timezone: str) -> str:
    """The name of the batch a fire makes: which schedule, which fire (local time and zone)."""
    local = fire_at.astimezone(cron.parse_timezone(timezone))
    return f"schedule {schedule} @ {local.strftime('%Y-%m-%d %H:%M %Z')} ({fire_at:%H:%MZ})"

