"""Where a project's files are, and reading its `jobqueue.toml`.

Every jobqueue process of a project must see the same configuration and the same embedded
database, whichever directory it was started from (the web app from the project root, a script
from `scripts/`, a worker from a Procfile). So both are found from the *project root*: walking up
from the working directory, the first directory that holds `jobqueue.toml`, `pyproject.toml` or
`.git`. With no such directory above, the working directory is the root.

- The config file is `JOBQUEUE_CONFIG` when set, else `<root>/jobqueue.toml`.
- The embedded server's home is `JOBQUEUE_HOME` when set, else `<root>/.jobqueue`
  (see jobqueue/db/embedded.py).

The file is parsed once per version (path, mtime and size): a process that asks on every request
pays a stat, and an edit is still seen. Each part of the file has its own parser beside its
users: `[platforms.NAME]` in jobqueue/llm/platforms.py, `[tasks.NAME]` in jobqueue/routing.py,
`[workers.NAME]` in jobqueue/profiles.py.
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from jobqueue import settings
from jobqueue.errors import ConfigError

T = TypeVar("T")

ROOT_MARKERS = ("jobqueue.toml", "pyproject.toml", ".git")


def project_root(start: Path | str | None = None) -> Path:
    """The first directory from `start` (default: the working directory) upwards that holds
    jobqueue.toml, pyproject.toml or .git; `start` itself when none does. Looked up once per
    directory and process (a walk costs a hundred microseconds; every enqueue asks)."""
    return _root(str(start or os.getcwd()))


@functools.lru_cache(maxsize=64)
def _root(start: str) -> Path:
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).exists() for marker in ROOT_MARKERS):
            return folder
    return here


def config_path() -> Path:
    """JOBQUEUE_CONFIG, else jobqueue.toml at the project root (shown relative to the working
    directory when it lies below it, so messages stay short)."""
    given = settings.JOBQUEUE_CONFIG.get()
    return _config_path(os.getcwd(), str(given) if given else "")


@functools.lru_cache(maxsize=64)
def _config_path(cwd: str, given: str) -> Path:
    if given:
        return Path(given)
    path = _root(cwd) / "jobqueue.toml"
    try:
        return path.relative_to(Path(cwd).resolve())
    except ValueError:
        return path


def explicitly_configured() -> bool:
    """True when JOBQUEUE_CONFIG names the file: then a missing file is an error everywhere."""
    return settings.JOBQUEUE_CONFIG.get() is not None


def load(parser: Callable[[dict[str, Any], str], T], path: Path | str | None = None, *,
         missing_ok: bool = False) -> T:
    """`parser(document, source)` applied to the config file, computed once per version of the
    file. A missing file is a ConfigError, or `parser({}, name)` with `missing_ok`; a file that
    is not TOML is always a ConfigError naming it."""
    path = Path(path) if path else config_path()
    try:
        stat = path.stat()
    except FileNotFoundError:
        if missing_ok:
            return parser({}, str(path))
        raise ConfigError(f"{path}: no such file (set JOBQUEUE_CONFIG or create it)") from None
    return _load(parser, str(path), os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _load(parser: Callable[[dict[str, Any], str], T], path: str, absolute: str,
          mtime_ns: int, size: int) -> T:
    """`absolute` keys the cache: two directories' `jobqueue.toml` are different files."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (set JOBQUEUE_CONFIG or create it)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc})") from None
    except RecursionError:  # arrays or tables nested deeper than the parser goes
        raise ConfigError(f"{path}: not valid TOML (nested too deeply)") from None
    except OSError as exc:  # a directory, no permission... (FileNotFoundError is above)
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return parser(data, path)


def named_tables(data: dict[str, Any], section: str, source: str, example: str,
                 parse_one: Callable[[str, dict[str, Any], str], T]) -> dict[str, T]:
    """The `[SECTION.NAME]` tables of a parsed document, each checked to be a table and
    parsed by `parse_one(name, table, source)`; an absent section is no tables. (Routing and
    worker profiles share it.)"""
    tables = data.get(section, {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{source}: {section}: must be a table of [{section}.NAME] tables")
    parsed = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {section}.{name}: must be a table ([{section}.{name}] "
                              f"with {example} = ...)")
        parsed[name] = parse_one(name, table, source)
    return parsed
