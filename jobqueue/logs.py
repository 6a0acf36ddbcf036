"""structlog set up once per process: JSON lines when not on a terminal (or LOG_FORMAT=json),
readable colour on one; ISO UTC timestamps; ids bound with contextvars ride along."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from contextvars import ContextVar

import structlog

from jobqueue import settings

# The running job of this asyncio task (or handler thread): (job_id, queue, kind, attempt,
# worker). One ContextVar set per job is far cheaper than binding five structlog contextvars.
current_job: ContextVar[tuple | None] = ContextVar("jobqueue_current_job", default=None)
_JOB_FIELDS = ("job_id", "queue", "kind", "attempt", "worker")


def add_job_context(logger, method_name, event_dict):
    """structlog processor: every line logged while a job runs carries the job's ids."""
    job = current_job.get()
    if job is not None:
        for key, value in zip(_JOB_FIELDS, job, strict=True):
            event_dict.setdefault(key, value)
    return event_dict


class _Held:
    """Log lines held back while a progress bar owns the terminal line: the first `limit`,
    and a count of the others (memory stays bounded however long the bar runs)."""

    def __init__(self, limit: int):
        self.lines: list[str] = []
        self.limit, self.dropped = limit, 0

    def add(self, text: str) -> None:
        if len(self.lines) < self.limit:
            self.lines.append(text)
        else:
            self.dropped += 1


# See `held_back`: None when lines go straight out.
_held: _Held | None = None
_held_lock = threading.Lock()


class _Stderr:
    """Where log lines go: sys.stderr, except that a line nobody can read any more is dropped.
    A worker of `worker --processes` writes into a pipe to its supervisor; if the supervisor
    dies (the worker then gets SIGTERM), a BrokenPipeError from a log call must not stop the
    worker from finishing its jobs and handing the rest back. While `held_back` is in force,
    lines wait in memory instead."""

    # try/except, not contextlib.suppress: this runs for every log line.
    def write(self, text: str) -> None:
        if _held is not None:
            with _held_lock:
                if _held is not None:
                    _held.add(text)
                    return
        try:  # noqa: SIM105
            sys.stderr.write(text)
        except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
            pass

    def flush(self) -> None:
        try:  # noqa: SIM105
            sys.stderr.flush()
        except (BrokenPipeError, ValueError):
            pass


def configure(level: str | None = None, fmt: str | None = None) -> tuple[str, str]:
    """Set up structlog; returns the level and format in force (the environment's, or the
    terminal's, where the arguments give none), which `worker --processes` hands on."""
    level_name = (level or settings.LOG_LEVEL.get()).upper()
    fmt = fmt or settings.LOG_FORMAT.get() or ("console" if sys.stderr.isatty() else "json")
    if fmt not in ("json", "console"):
        raise ValueError(f"log format must be json or console, not {fmt!r}")
    renderer = (structlog.processors.JSONRenderer() if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_job_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level_name]),
        logger_factory=structlog.WriteLoggerFactory(file=_Stderr()),
        cache_logger_on_first_use=True,
    )
    return level_name, fmt


@contextlib.contextmanager
def held_back(limit: int = 10_000) -> Iterator[None]:
    """Hold this process's log lines (every thread's) while a progress bar draws its line, and
    write them to stderr when the block ends, after the bar has finished its line: a log line
    never lands in the middle of the bar when both share a terminal or a pipe. At most `limit`
    lines are kept (the newest are dropped past it, and counted)."""
    global _held
    held = _Held(limit)
    with _held_lock:
        _held = held
    try:
        yield
    finally:
        with _held_lock:
            _held = None
        out = _Stderr()
        for text in held.lines:
            out.write(text)
        if held.dropped:
            out.write(f"({held.dropped} more log lines dropped)\n")
        out.flush()
