"""Worker profiles: `[workers.NAME]` tables in jobqueue.toml, run by `jobqueue worker --profile
NAME`, so that a Procfile line stays one short command however many queues it serves.

    # jobqueue.toml
    [workers.all]
    queues = ["emails:20", "reports:5"]     # NAME or NAME:CONCURRENCY; or a table:
                                            # queues = { emails = 20, reports = 5 }
    platforms = ["openai:50", "gemini"]     # the same, for [platforms.NAME]
    processes = 2                           # worker processes (default 1)
    import = ["myapp.tasks"]                # task modules (a string or a list)
    prefetch = 100                          # any other worker option, by its name with
    grace_seconds = 20                      # underscores (see OPTIONS)

Every field is optional. Options given on the command line (or as JOBQUEUE_WORKER_* variables)
win over the profile's, field by field: `--queue x` replaces the profile's queues and keeps its
platforms. This module checks the table's shape and types and names the file, table and field
of a wrong one (`jobqueue.toml: workers.all.queues[1]: ...`); the worker command checks the
ranges of the options it passes on, with the same kind of message.

Also here: `parse_spec`, the one reading of `NAME[:N]` (the command line's --queue and
--platform use it too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobqueue import config
from jobqueue.errors import ConfigError
from jobqueue.settings import MAX_SECONDS, WORKER_DEFAULTS

# The worker options a profile may set besides its own fields, by WorkerConfig field (the
# `worker` command's option names with underscores; tests/unit/test_profiles.py keeps the two
# in step). Each value's kind is its default's: on/off, a whole number, or a number.
OPTIONS = ("concurrency", "lease_seconds", "poll_seconds", "listen", "grace_seconds",
           "claim_batch", "maintenance_seconds", "retention_seconds", "retry_base_seconds",
           "retry_max_seconds", "prefetch", "connect_timeout", "until_idle")
FIELDS = ("queues", "platforms", "processes", "import")

Spec = tuple[str, int | None]  # a queue or platform's name and its concurrency, if given


@dataclass(frozen=True)
class Profile:
    """One `[workers.NAME]` table, checked. `source` is the file it came from."""

    name: str
    source: str = "config"
    queues: tuple[Spec, ...] = ()
    platforms: tuple[Spec, ...] = ()
    processes: int | None = None
    imports: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def where(self, key: str) -> str:
        """`jobqueue.toml: workers.NAME.KEY`, for messages about one of its fields."""
        return f"{self.source}: workers.{self.name}.{key}"

    @staticmethod
    def specs(pairs: tuple[Spec, ...]) -> tuple[str, ...]:
        """The pairs as the command line writes them: NAME or NAME:N."""
        return tuple(name if n is None else f"{name}:{n}" for name, n in pairs)


def parse_spec(value: str) -> Spec:
    """NAME or NAME:CONCURRENCY (a whole number of at least 1); ValueError says what is wrong."""
    name, sep, number = value.partition(":")
    if (not name.strip() or "\x00" in name or (sep and not (number.isascii() and number.isdigit()))
            or (sep and int(number) < 1)):
        raise ValueError(f"{value!r}: expected NAME or NAME:CONCURRENCY (a whole number of "
                         "at least 1)")
    return name, int(number) if sep else None


def load(path: Path | str | None = None) -> dict[str, Profile]:
    """Every profile of the config file (default: see jobqueue/config.py). A missing file is a
    ConfigError: a profile was asked for, and it cannot be there."""
    return config.load(parse, path)


def get(name: str, path: Path | str | None = None) -> Profile:
    """The profile `name`; a ConfigError naming the file and the profiles it does define."""
    profiles = load(path)
    if name not in profiles:
        source = str(path or config.config_path())
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"{source}: workers.{name}: no such profile (defined: {known})")
    return profiles[name]


def parse(data: dict[str, Any], source: str = "config") -> dict[str, Profile]:
    """The `[workers.NAME]` tables of a parsed config document, checked."""
    return config.named_tables(data, "workers", source, "queues", _profile)


def _profile(name: str, table: dict[str, Any], source: str) -> Profile:
    where = f"{source}: workers.{name}"
    values: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in table.items():
        at = f"{where}.{key}"
        if key in ("queues", "platforms"):
            values[key] = _specs(value, at)
        elif key == "processes":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{at}: must be a whole number of at least 1, got {value!r}")
            values[key] = value
        elif key == "import":
            values["imports"] = _imports(value, at)
        elif key in OPTIONS:
            options[key] = _option(key, value, at)
        else:
            raise ConfigError(f"{at}: unknown field (known: {', '.join(FIELDS + OPTIONS)})")
    both = ({n for n, _ in values.get("queues", ())}
            & {n for n, _ in values.get("platforms", ())})
    if both:
        raise ConfigError(f"{where}: {', '.join(sorted(both))} is both in queues and in "
                          "platforms (a platform's queue has its name: list it once)")
    return Profile(name, source, options=options, **values)


def _specs(value: Any, at: str) -> tuple[Spec, ...]:
    """A list of "NAME[:N]" strings, or a table NAME = N."""
    pairs: list[Spec] = []
    if isinstance(value, dict):
        for name, n in value.items():
            if not name.strip() or "\x00" in name or ":" in name:
                raise ConfigError(f"{at}: {name!r}: not a queue name")
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ConfigError(f"{at}.{name}: must be a whole number of at least 1 (its "
                                  f"concurrency), got {n!r}")
            pairs.append((name, n))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(f"{at}[{i}]: must be a string NAME or NAME:CONCURRENCY, "
                                  f"got {item!r}")
            try:
                pairs.append(parse_spec(item))
            except ValueError as exc:
                raise ConfigError(f"{at}[{i}]: {exc}") from None
    else:
        raise ConfigError(f'{at}: must be a list such as ["emails:20", "reports"] or a table '
                          f"such as {{ emails = 20 }}, got {value!r}")
    names = [name for name, _ in pairs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"{at}: {', '.join(twice)} given twice")
    return tuple(pairs)


def _imports(value: Any, at: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ConfigError(f"{at}: must be a module name or a list of them, got {value!r}")
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip() or "\x00" in item:
            spot = at if isinstance(value, str) else f"{at}[{i}]"
            raise ConfigError(f"{spot}: must be a module name such as \"myapp.tasks\", "
                              f"got {item!r}")
    return tuple(items)


def _option(key: str, value: Any, at: str) -> Any:
    kind = type(WORKER_DEFAULTS[key])
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{at}: must be true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{at}: must be a whole number, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 <= value <= MAX_SECONDS:  # NaN fails both comparisons
        raise ConfigError(f"{at}: must be a number from 0 to {MAX_SECONDS:g}, got {value!r}")
    return value
