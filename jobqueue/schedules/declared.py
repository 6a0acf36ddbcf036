"""Schedules declared in code and configuration, synchronised into Postgres at a worker's
start.

    # jobqueue.toml
    [schedules.nightly-report]
    cron = "30 2 * * *"
    timezone = "Europe/Berlin"
    kind = "build_report"          # or platform = "openai" + payload, or batch_file = ...
    misfire = "once"               # skip | once | all
    max_lateness = 21600           # seconds

    @task("cleanup", cron="*/15 * * * *")     # schedule "task:cleanup", enqueues cleanup {}

sync() saves each declared schedule with `only_if_changed`: a fleet restarting with the same
declarations changes nothing (next fires and pause state kept, no duplicates: the name is the
key); a changed declaration replaces its row. Config schedules that jobqueue.toml no longer
names are removed (every process reads the same file); task schedules are not, since a worker
knows only the tasks it imported (`jobqueue schedules remove task:NAME`).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import structlog

from jobqueue import config
from jobqueue.errors import ConfigError, InvalidSchedule
from jobqueue.schedules import store
from jobqueue.schedules.spec import ScheduleSpec, build

log = structlog.get_logger("jobqueue.schedules")

TASK_PREFIX = "task:"


def load(path: Path | str | None = None) -> dict[str, ScheduleSpec]:
    """The `[schedules.NAME]` tables of the project's config file, checked."""
    return config.load(parse, path, missing_ok=path is None and not config.explicitly_configured())


def parse(data: dict[str, Any], source: str = "config") -> dict[str, ScheduleSpec]:
    base = os.path.dirname(os.path.abspath(source))
    platforms = None
    if "platforms" in data:
        from jobqueue.llm import platforms as llm_platforms
        platforms = llm_platforms.parse(data, source)

    def one(name: str, table: dict[str, Any], source: str) -> ScheduleSpec:
        try:
            return build(name, table, origin="config", base_dir=base, platforms=platforms or {})
        except InvalidSchedule as exc:
            raise ConfigError(f"{source}: schedules.{name}.{exc}") from None

    return config.named_tables(data, "schedules", source, "cron", one)


def from_tasks(registry) -> dict[str, ScheduleSpec]:
    """A schedule per registered task with cron=..., named task:NAME."""
    found = {}
    for name in registry.names():
        task = registry.get(name)
        if task.cron:
            found[TASK_PREFIX + name] = build(
                TASK_PREFIX + name, {"cron": task.cron, "timezone": task.cron_timezone,
                                     "kind": name}, origin="task")
    return found


def sync(conn: psycopg.Connection, now: datetime, configured: dict[str, ScheduleSpec],
         tasks: dict[str, ScheduleSpec]) -> dict[str, list[str]]:
    """Save the declared schedules (only what changed) and drop config ones no longer
    declared; returns the names by what happened: created, updated, removed."""
    done: dict[str, list[str]] = {"created": [], "updated": [], "removed": []}
    with conn.transaction():
        for spec in [*configured.values(), *tasks.values()]:
            outcome = store.save(conn, spec, now, replace=True, only_if_changed=True)
            if outcome != "kept":
                done[outcome].append(spec.name)
        done["removed"] = store.remove_stale(conn, "config", list(configured))
    if any(done.values()):
        log.info("schedules_synced", **{k: v for k, v in done.items() if v})
    return done
