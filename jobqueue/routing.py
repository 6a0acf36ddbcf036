"""Routing: which queue a job goes to, and its default options, decided where every process can
read it.

    # jobqueue.toml
    [tasks.send_email]
    queue = "emails"        # the queue `Client.enqueue("send_email", ...)` uses
    max_attempts = 5        # options a job gets unless the caller gives its own
    priority = "high"       # an integer (lower runs first) or high / normal / low
    timeout = 60            # seconds per attempt

For each field of a job: the caller's argument, else the task's `[tasks.NAME]` table, else the
built-in default (queue "default", 5 attempts, priority 0, no timeout). Nothing else: in
particular not whether the process that enqueues happened to import the task's module. A web
app or a script that never imports `myapp.tasks` sends `send_email` to the same queue as the
worker that runs it.

`@task(queue=..., max_attempts=...)` does not route anything. It is a claim the table must back:
registering a task whose decorator names a queue or max_attempts the table does not name too
(or names differently) raises ConfigError, so a worker importing it refuses to start and says
what to write in which file. A decorator's `timeout` is the worker's limit for jobs of that task
that carry none of their own; when the table also names one, they must agree.

The table comes from the project's config file (JOBQUEUE_CONFIG, else `jobqueue.toml` at the
project root: see jobqueue/config.py). A missing default file is an empty table; a missing
JOBQUEUE_CONFIG file, or a wrong field, is a ConfigError naming the file, table and field,
e.g. `jobqueue.toml: tasks.send_email.max_attempts: must be a positive integer, got 0`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobqueue import config
from jobqueue.errors import ConfigError
from jobqueue.jobs import DEFAULT_QUEUE, PRIORITIES, PRIORITY_RANGE, JobSpec


@dataclass(frozen=True)
class Route:
    """A task's `[tasks.NAME]` table: where its jobs go and the options they get by default."""

    queue: str | None = None
    max_attempts: int | None = None
    priority: int | None = None
    timeout: float | None = None


Routes = dict[str, Route]
_FIELDS = ("queue", "max_attempts", "priority", "timeout")


def load(path: Path | str | None = None) -> Routes:
    """The routing table of the project's config file; `{}` when the default file is absent."""
    return config.load(parse, path, missing_ok=path is None and not config.explicitly_configured())


def parse(data: dict[str, Any], source: str = "config") -> Routes:
    """The `[tasks.NAME]` tables of a parsed config document, checked."""
    return config.named_tables(data, "tasks", source, "queue", _route)


def _route(name: str, table: dict[str, Any], source: str) -> Route:
    where = f"{source}: tasks.{name}"
    values: dict[str, Any] = {}
    for key, value in table.items():
        at = f"{where}.{key}"
        if key == "queue":
            if not isinstance(value, str) or not value.strip() or "\x00" in value:
                raise ConfigError(f"{at}: must be a non-empty string, got {value!r}")
            values[key] = value
        elif key == "max_attempts":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{at}: must be a positive integer, got {value!r}")
            values[key] = value
        elif key == "priority":
            values[key] = _priority(value, at)
        elif key == "timeout":
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not 0 < value < float("inf")):
                raise ConfigError(f"{at}: must be a positive number of seconds, got {value!r}")
            values[key] = float(value)
        else:
            raise ConfigError(f"{at}: unknown field (known: {', '.join(_FIELDS)})")
    return Route(**values)


def _priority(value: Any, at: str) -> int:
    if isinstance(value, str) and value in PRIORITIES:
        return PRIORITIES[value]
    lo, hi = PRIORITY_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{at}: must be an integer in {lo}..{hi} or one of "
                          f"{', '.join(PRIORITIES)}, got {value!r}")
    return value


def apply(spec: JobSpec, routes: Routes) -> JobSpec:
    """`spec` with every field the caller left out taken from its task's table (a copy when
    anything changes). Fields neither gives keep their built-in defaults at validation."""
    route = routes.get(spec.kind) if isinstance(spec.kind, str) else None
    if route is None:
        return spec
    changes = {name: getattr(route, name) for name in _FIELDS
               if getattr(spec, name) is None and getattr(route, name) is not None}
    return dataclasses.replace(spec, **changes) if changes else spec


def check_task(name: str, *, queue: str | None = None, max_attempts: int | None = None,
               timeout: float | None = None, routes: Routes | None = None) -> None:
    """Raise ConfigError unless what a `@task(...)` decorator claims agrees with the table."""
    claims = {"queue": queue, "max_attempts": max_attempts, "timeout": timeout}
    if all(value is None for value in claims.values()):
        return
    source = str(config.config_path())
    routes = load() if routes is None else routes
    route = routes.get(name)
    for field, claimed in claims.items():
        if claimed is None:
            continue
        configured = getattr(route, field) if route is not None else None
        if field == "timeout" and configured is None:
            continue  # the decorator's timeout is the worker's own default: nothing to route
        if configured is None:
            raise ConfigError(
                f"{source}: tasks.{name}.{field}: @task({name!r}, {field}={claimed!r}) names "
                f"a {field} the routing table does not, so processes that do not import the "
                f"task would use another; add `[tasks.{name}] {field} = {_toml(claimed)}` to "
                f"{source}, or drop {field}= from the decorator")
        if configured != claimed:
            raise ConfigError(
                f"{source}: tasks.{name}.{field}: is {_toml(configured)} but "
                f"@task({name!r}, {field}={claimed!r}) says {_toml(claimed)}; make them agree "
                "(the table decides where jobs go)")


def unrouted_here(names: Iterable[str], worker_queues: str | Iterable[str],
                  routes: Routes | None = None) -> list[str]:
    """For a worker's start: the tasks it registered whose table sends their jobs to none of
    the queues it works (it sees them only when a caller names one of its queues)."""
    queues = {worker_queues} if isinstance(worker_queues, str) else set(worker_queues)
    routes = load() if routes is None else routes
    return [f"task {name} is routed to queue {routes[name].queue!r}, not "
            f"{', '.join(repr(q) for q in sorted(queues))}"
            for name in names
            if name in routes and (routes[name].queue or DEFAULT_QUEUE) not in queues]


def _toml(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)
