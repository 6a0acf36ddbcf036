"""Settings: every environment variable a user can set, and every default, defined once.

This module owns:
- `ENVIRONMENT`: each variable jobqueue reads (name, default, meaning, parser). Nothing else in
  the package reads `os.environ` for its own settings; code calls `settings.NAME.get()`, which
  reads the variable at that moment (tests and the CLI may change the environment).
- one truthy parser (`parse_bool`) that refuses anything but 1/true/yes/on and 0/false/no/off,
  and a `SettingError` naming the variable when a value does not parse;
- the defaults of the worker (`WORKER_DEFAULTS`, keyed by `WorkerConfig` field), of the web
  app's limits, the default queue name, and the version string.

Not here: the names of API-key variables (jobqueue.toml's `api_key_env` chooses them; see
`jobqueue.llm.platforms`), and `JOBQUEUE_<COMMAND>_<OPTION>`, which click reads for every
command option (auto_envvar_prefix; `jobqueue/cli/__init__.py`) and whose defaults come from here.
The README's configuration table is checked against `ENVIRONMENT` by tests/unit/test_settings.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from jobqueue import errors

VERSION = "0.1.0"

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 5  # a job's, unless its task or the enqueue says otherwise
# The longest duration any setting may give (a lease, a poll, a platform's timeout, a CLI
# option): ~31 years. NaN and infinity are none: Postgres's timestamps overflow on them.
MAX_SECONDS = 10**9

MB = 1024 * 1024

# Every WorkerConfig field's default, keyed by field: the CLI's defaults and WorkerConfig's.
WORKER_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "queue": DEFAULT_QUEUE,
    "concurrency": 10,            # jobs in flight per process (a platform has its own)
    "lease_seconds": 30.0,        # a crashed worker's jobs come back after this long
    "poll_seconds": 1.0,          # look for work at least this often (LISTEN wakes sooner)
    "listen": True,               # False: poll only (PgBouncer in transaction mode)
    "grace_seconds": 25.0,        # SIGTERM: in-flight jobs may finish for this long
    "claim_batch": 500,           # most jobs claimed by one statement
    "retry_base_seconds": 1.0,    # first retry's delay; doubles per attempt (with jitter)
    "retry_max_seconds": 3600.0,  # the longest retry delay
    "maintenance_seconds": 5.0,   # rescue expired leases, prune, this often
    "schedules": True,            # run the schedules service (every worker may)
    "retention_seconds": 7 * 86400.0,  # finished jobs are pruned after this long
    "heartbeat_seconds": None,    # lease renewal period; None: a third of the lease
    "default_timeout": None,      # a job's timeout when neither it nor its task gives one
    "connect_timeout": 30.0,      # a starting worker waits this long for the database
    "max_result_bytes": 1 << 20,  # a larger result (JSON text) fails its job permanently
    "prefetch": 0,                # jobs claimed ahead of free slots, per queue (0: off)
    "until_idle": False,          # exit once nothing is runnable and nothing is in flight
    "queues": (),                 # several queues (QueueConfig), each with its own slots
})

# Gunicorn (web/gunicorn_conf.py): Heroku and Render allow 30 s between SIGTERM and SIGKILL.
WEB_TIMEOUT_SECONDS = 30
WEB_GRACEFUL_TIMEOUT_SECONDS = 25


SettingError = errors.SettingError  # a value that does not parse; the message names it


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_bool(raw: str) -> bool:
    """The one truthy parser: 1/true/yes/on or 0/false/no/off (any case); nothing else."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected {'/'.join(_TRUE)} (on) or {'/'.join(_FALSE)} (off)")


def parse_positive_int(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value < 1:
        raise ValueError("expected a number of at least 1")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected {' or '.join(choices)}")
        return value

    return parse


def _log_level(raw: str) -> str:
    import logging

    value = raw.strip().upper()
    if value not in logging.getLevelNamesMapping():
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def _text(raw: str) -> str:
    return raw


@dataclass(frozen=True)
class Variable:
    """One environment variable: read with `get()`; unset or empty means the default."""

    name: str
    default: Any
    meaning: str
    parse: Callable[[str], Any] = _text
    shown_default: str | None = None  # the README's words when `default` says too little

    def get(self, environ: Mapping[str, str] | None = None) -> Any:
        raw = (os.environ if environ is None else environ).get(self.name, "")
        if raw == "":
            return self.default
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise SettingError(f"environment variable {self.name}={raw!r}: {exc}") from None

    def export(self, value: str) -> None:
        """Set it for this process and the processes it starts (e.g. worker --processes)."""
        os.environ[self.name] = value

    @property
    def default_text(self) -> str:
        """The default as the README shows it."""
        if self.shown_default is not None:
            return self.shown_default
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        return str(self.default)


ENVIRONMENT: dict[str, Variable] = {}


def _variable(*args, **kwargs) -> Variable:
    variable = Variable(*args, **kwargs)
    ENVIRONMENT[variable.name] = variable
    return variable


# -- the database ---------------------------------------------------------------------------
DATABASE_URL = _variable(
    "DATABASE_URL", None, "the Postgres to use",
    shown_default="an embedded server under `JOBQUEUE_HOME`")
_ROOT = ("the project root (the nearest directory upwards holding `jobqueue.toml`, "
         "`pyproject.toml` or `.git`; see jobqueue/config.py)")
JOBQUEUE_HOME = _variable(
    "JOBQUEUE_HOME", None, "where the embedded server keeps its data",
    parse=Path, shown_default=f"`.jobqueue` in {_ROOT}")
JOBQUEUE_PGBOUNCER = _variable(
    "JOBQUEUE_PGBOUNCER", False,
    "`1` behind PgBouncer in transaction mode: no prepared statements, no session `SET`s "
    "(LISTEN needs a session: set `JOBQUEUE_LISTEN_DATABASE_URL` too, or run workers "
    "`--poll-only`)", parse=parse_bool)
JOBQUEUE_LISTEN_DATABASE_URL = _variable(
    "JOBQUEUE_LISTEN_DATABASE_URL", None, "a direct connection (not through PgBouncer) used "
    "only for LISTEN, by workers and the web app, when `DATABASE_URL` is a PgBouncer in "
    "transaction mode", shown_default="`DATABASE_URL`")

# -- platforms and logs ---------------------------------------------------------------------
JOBQUEUE_CONFIG = _variable(
    "JOBQUEUE_CONFIG", None, "the config file: platforms, `[tasks.NAME]` routing and "
    "`[workers.NAME]` worker profiles (TOML)",
    parse=Path, shown_default="`jobqueue.toml` in the project root")
LOG_FORMAT = _variable(
    "LOG_FORMAT", None, "`json` or `console`", parse=_choice("json", "console"),
    shown_default="console on a terminal, json elsewhere")
LOG_LEVEL = _variable(
    "LOG_LEVEL", "INFO", "`DEBUG` logs every job; `INFO` logs failures, retries, lifecycle",
    parse=_log_level, shown_default="`INFO`")
NO_COLOR = _variable(
    "NO_COLOR", None, "any value: no colour in the CLI's tables even on a terminal "
    "(no-color.org); without it colour is used on a terminal only", shown_default="unset")

HONCHO_PROCESS_NAME = _variable(
    "HONCHO_PROCESS_NAME", None, "set by `honcho start` for each Procfile process: the "
    "`release` line (`jobqueue migrate`) then stays up after migrating until honcho stops it, "
    "since honcho stops every process when one exits", shown_default="unset")

# -- the web app ----------------------------------------------------------------------------
PORT = _variable("PORT", 8000, "the web server's port", parse=parse_positive_int)
WEB_CONCURRENCY = _variable(
    "WEB_CONCURRENCY", 2, "Gunicorn worker processes", parse=parse_positive_int)
GUNICORN_THREADS = _variable(
    "GUNICORN_THREADS", 8, "threads per Gunicorn worker", parse=parse_positive_int)
GUNICORN_ACCESS_LOG = _variable(
    "GUNICORN_ACCESS_LOG", None, "where Gunicorn writes its access log (`-`: stdout)",
    shown_default="none")
JOBQUEUE_SECRET_KEY = _variable(
    "JOBQUEUE_SECRET_KEY", None, "signs the dashboard's session cookie; required by `jobqueue "
    "web` and `web:create_app()`, the same in every process and instance",
    shown_default="none: refuse to start")
JOBQUEUE_DEV = _variable(
    "JOBQUEUE_DEV", False, "`1`: a development run; the web app may keep its signing secret "
    "in the database", parse=parse_bool)
JOBQUEUE_TRUSTED_PROXIES = _variable(
    "JOBQUEUE_TRUSTED_PROXIES", 0, "how many proxies in front of the web app set "
    "`X-Forwarded-For`/`-Proto` (1 behind Heroku's, Render's or Railway's router); 0 ignores "
    "those headers", parse=lambda raw: parse_positive_int(raw) if raw.strip() != "0" else 0)
JOBQUEUE_AUTH_FAILURES_PER_MINUTE = _variable(
    "JOBQUEUE_AUTH_FAILURES_PER_MINUTE", 30, "failed authentications per client address and "
    "minute before 429 (0: no limit)",
    parse=lambda raw: parse_positive_int(raw) if raw.strip() != "0" else 0)
JOBQUEUE_COOKIE_SECURE = _variable(
    "JOBQUEUE_COOKIE_SECURE", False, "`1`: the session cookie is always `Secure` (it already "
    "is on every HTTPS request)", parse=parse_bool)
JOBQUEUE_METRICS_PUBLIC = _variable(
    "JOBQUEUE_METRICS_PUBLIC", False, "`1`: `/metrics` answers without a token",
    parse=parse_bool)
JOBQUEUE_POOL_MAX_SIZE = _variable(
    "JOBQUEUE_POOL_MAX_SIZE", 10, "database connections per web process, at most",
    parse=parse_positive_int)
JOBQUEUE_STREAMS_PER_TOKEN = _variable(
    "JOBQUEUE_STREAMS_PER_TOKEN", 100, "SSE streams and `?wait=` long polls one token may "
    "hold open in one web process; more get 429 with `Retry-After`", parse=parse_positive_int)
JOBQUEUE_STREAMS_PER_PROCESS = _variable(
    "JOBQUEUE_STREAMS_PER_PROCESS", 1000, "SSE streams and `?wait=` long polls one web process "
    "holds open, all tokens together (each is a socket: keep it under the open-files limit); "
    "more get 429 with `Retry-After`", parse=parse_positive_int)
JOBQUEUE_READ_DATABASE_URL = _variable(
    "JOBQUEUE_READ_DATABASE_URL", None, "a streaming replica for the web app's reads (job, "
    "batch and document pages, lists, exports, metrics), over read-only connections; writes, "
    "sign-in, sessions, rate limits, `?wait=` and SSE stay on `DATABASE_URL`, and a row the "
    "replica has not replayed yet is read there too", shown_default="none: reads use "
    "`DATABASE_URL`")
JOBQUEUE_READ_MAX_LAG_SECONDS = _variable(
    "JOBQUEUE_READ_MAX_LAG_SECONDS", 10, "a read replica further behind than this (by WAL "
    "position), or unreachable, is not read from until it catches up: reads go to "
    "`DATABASE_URL`", parse=parse_positive_int)
JOBQUEUE_DOCUMENT_MAX_BYTES = _variable(
    "JOBQUEUE_DOCUMENT_MAX_BYTES", 10 * MB, "largest uploaded document, in bytes",
    parse=parse_positive_int, shown_default="10485760 (10 MB)")
JOBQUEUE_DOCUMENT_MAX_CHARS = _variable(
    "JOBQUEUE_DOCUMENT_MAX_CHARS", 10_000_000, "most characters extracted from one document; "
    "more (or PDF streams inflating past 4 bytes a character) fails its job at once, and a "
    "text upload over it is refused with 422", parse=parse_positive_int)
JOBQUEUE_DOCUMENT_MAX_CHUNKS = _variable(
    "JOBQUEUE_DOCUMENT_MAX_CHUNKS", 200, "most chunks (one LLM call each, about 12,000 "
    "characters) of one document; more fails its job at once, before any call",
    parse=parse_positive_int)
JOBQUEUE_DOCUMENT_RETENTION_SECONDS = _variable(
    "JOBQUEUE_DOCUMENT_RETENTION_SECONDS", 7 * 86400, "uploaded documents are deleted this "
    "long after upload, once their job has finished (by the workers' maintenance)",
    parse=parse_positive_int, shown_default="604800 (7 days)")
JOBQUEUE_DOCUMENT_KEEP_ORIGINAL = _variable(
    "JOBQUEUE_DOCUMENT_KEEP_ORIGINAL", True, "`0`: a document's uploaded bytes are dropped "
    "once its text is extracted (only the text is kept)", parse=parse_bool)
JOBQUEUE_BATCH_MAX_BYTES = _variable(
    "JOBQUEUE_BATCH_MAX_BYTES", 50 * MB, "largest uploaded batch file, in bytes",
    parse=parse_positive_int, shown_default="52428800 (50 MB)")
JOBQUEUE_JSON_MAX_BYTES = _variable(
    "JOBQUEUE_JSON_MAX_BYTES", 10 * MB, "largest JSON request body, in bytes",
    parse=parse_positive_int, shown_default="10485760 (10 MB)")


# -- webhooks -------------------------------------------------------------------------------
def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in raw.split(",") if part.strip())


def _networks(raw: str) -> tuple:
    import ipaddress

    found = []
    for part in _names(raw):
        try:
            found.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP network (e.g. 127.0.0.1/32 or "
                             "10.0.0.0/8)") from None
    return tuple(found)


def _positive_seconds(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not 0 < value <= 300:
        raise ValueError("expected a number of seconds above 0 and at most 300")
    return value


JOBQUEUE_WEBHOOK_ALLOWED_HOSTS = _variable(
    "JOBQUEUE_WEBHOOK_ALLOWED_HOSTS", ("*",), "comma-separated host names webhook URLs may "
    "name; `*.example.com` matches its subdomains, `*` any host (private addresses stay "
    "refused either way)", parse=_names, shown_default="`*`")
JOBQUEUE_WEBHOOK_ALLOW_PRIVATE = _variable(
    "JOBQUEUE_WEBHOOK_ALLOW_PRIVATE", (), "comma-separated IP networks webhooks may reach "
    "although they are private, loopback, link-local or otherwise not global (e.g. "
    "`10.1.2.0/24` for an internal receiver); every other such address is refused",
    parse=_networks, shown_default="none")
JOBQUEUE_WEBHOOK_TIMEOUT_SECONDS = _variable(
    "JOBQUEUE_WEBHOOK_TIMEOUT_SECONDS", 10.0, "a webhook request's whole time limit: "
    "connect, send, and read the answer's status line and headers",
    parse=_positive_seconds)


def check(environ: Mapping[str, str] | None = None) -> None:
    """Parse every variable that is set: a bad value fails here, at start, naming itself."""
    for variable in ENVIRONMENT.values():
        variable.get(environ)


def markdown_table() -> str:
    """The README's configuration table (tests/unit/test_settings.py keeps them equal)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{v.name}` | {v.default_text} | {v.meaning} |" for v in ENVIRONMENT.values()]
    return "\n".join(rows)


if __name__ == "__main__":  # python -m jobqueue.settings: the table, for the README
    print(markdown_table())
