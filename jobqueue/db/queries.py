"""Where the `sql/` folder is, and the named queries in it (`sql/queries/<domain>.sql`).

DDL and queries live only in `sql/` at the top of the project. An installed wheel carries the
folder as `jobqueue/sql`; a source checkout has it beside the package. This module only loads
text: it never opens a connection.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


@cache
def sql_dir() -> Path:
    for candidate in (_PACKAGE / "sql", _PACKAGE.parent / "sql"):
        if (candidate / "schema.sql").is_file():
            return candidate
    raise FileNotFoundError("jobqueue's sql/ folder is missing from the installation")


_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split a file of `-- name: NAME` sections into {NAME: SQL}."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice in one file")
        queries[name] = body.strip().rstrip(";")
    return queries


@cache
def queries() -> dict[str, str]:
    """Every query of every `sql/queries/*.sql` file, by name (names are unique across files)."""
    found: dict[str, str] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        for name, text in parse_queries(path.read_text()).items():
            if name in found:
                raise ValueError(f"query {name!r} is defined twice ({path.name})")
            found[name] = text
    return found


def q(name: str) -> str:
    """The SQL text of the named query."""
    return queries()[name]
