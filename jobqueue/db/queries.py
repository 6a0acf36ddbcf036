"""Where the `sql/` folder is, and the named queries in it (`sql/queries/<domain>.sql`).

DDL and queries live only in `sql/` at the top of the project. An installed wheel carries the
folder as `jobqueue/sql`; a source checkout has it beside the package. This module only loads
text: it never opens a connection.

A file holds `-- name: NAME` sections, one statement each, and `-- part: NAME` sections: a
piece of SQL that several statements share (the lease step of the three claims, say), never
run on its own. A statement takes a part with a line `-- include: NAME`, replaced by the
part's text when the files are loaded, so the server receives one whole statement, as if it
had been written out, and the SQL is written once.
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


_SECTION = re.compile(r"^-- (name|part): (\w+)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"^[ \t]*-- include: (\w+)[ \t]*$", re.MULTILINE)


def parse_sections(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Split a file into its statements {NAME: SQL} (`-- name:`) and its parts {NAME: SQL}
    (`-- part:`), includes not yet resolved."""
    parts = _SECTION.split(text)
    found: dict[str, dict[str, str]] = {"name": {}, "part": {}}
    for kind, name, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
        if name in found["name"] or name in found["part"]:
            raise ValueError(f"{name!r} is defined twice in one file")
        found[kind][name] = body.strip().rstrip(";") if kind == "name" else body.strip()
    return found["name"], found["part"]


def assemble(statements: dict[str, str], parts: dict[str, str]) -> dict[str, str]:
    """The statements with each `-- include: NAME` line replaced by that part. A part that is
    missing, includes another, or that no statement includes is an error: a part is shared
    text, not a query of its own."""
    for name, text in parts.items():
        if _INCLUDE.search(text):
            raise ValueError(f"part {name!r} includes another part")
    used: set[str] = set()

    def part(match: re.Match) -> str:
        if match[1] not in parts:
            raise ValueError(f"-- include: {match[1]}: no such part")
        used.add(match[1])
        return parts[match[1]]

    assembled = {name: _INCLUDE.sub(part, text) for name, text in statements.items()}
    if unused := sorted(set(parts) - used):
        raise ValueError(f"parts that no statement includes: {', '.join(unused)}")
    return assembled


@cache
def queries() -> dict[str, str]:
    """Every query of every `sql/queries/*.sql` file, by name (names are unique across files;
    a statement may include a part of another file)."""
    return load(sql_dir())


def load(folder: Path) -> dict[str, str]:
    """The queries of the `queries/*.sql` files below `folder` (an `sql/` folder: this
    installation's, or another checkout's for a benchmark), assembled."""
    statements: dict[str, str] = {}
    parts: dict[str, str] = {}
    for path in sorted((folder / "queries").glob("*.sql")):
        for found, into in zip(parse_sections(path.read_text()), (statements, parts),
                               strict=True):
            for name, text in found.items():
                if name in statements or name in parts:
                    raise ValueError(f"{name!r} is defined twice ({path.name})")
                into[name] = text
    return assemble(statements, parts)


def q(name: str) -> str:
    """The SQL text of the named query."""
    return queries()[name]
