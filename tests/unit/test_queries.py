"""Named queries and shared parts (jobqueue/db/queries.py): a statement that includes a part
is sent as one whole statement, and the claim and idempotent inserts share theirs."""

from __future__ import annotations

import re

import pytest

from jobqueue.db.queries import assemble, parse_sections, queries


def parse_queries(text: str) -> dict[str, str]:
    """One text's statements with its own parts included (a file of sql/queries alone may
    include another file's parts: queries.load assembles the whole folder)."""
    return assemble(*parse_sections(text))

FILE = """
-- name: first
-- The first statement.
WITH a AS (SELECT 1 AS x),
-- include: tail
;


-- part: tail
-- A tail both statements share.
b AS (SELECT x FROM a)
SELECT x FROM b


-- name: second
WITH a AS (SELECT 2 AS x),
-- include: tail
"""


class TestParts:
    def test_an_include_line_becomes_the_part(self):
        """Each `-- include: NAME` line is replaced by the part's text; parts are no queries."""
        found = parse_queries(FILE)
        assert set(found) == {"first", "second"}
        assert found["first"] == ("-- The first statement.\nWITH a AS (SELECT 1 AS x),\n"
                                  "-- A tail both statements share.\nb AS (SELECT x FROM a)\n"
                                  "SELECT x FROM b\n")
        assert found["second"].startswith("WITH a AS (SELECT 2 AS x),\n-- A tail")

    def test_a_missing_part_is_an_error(self):
        """An include naming no part fails at load, not at the first execution."""
        with pytest.raises(ValueError, match="no such part"):
            parse_queries("-- name: s\nSELECT 1\n-- include: nowhere\n")

    def test_a_part_no_statement_includes_is_an_error(self):
        """A part nobody uses is dead SQL: refused."""
        with pytest.raises(ValueError, match="no statement includes: lonely"):
            parse_queries("-- name: s\nSELECT 1\n\n-- part: lonely\nSELECT 2\n")

    def test_a_name_is_a_statement_or_a_part_not_both(self):
        with pytest.raises(ValueError, match="defined twice"):
            parse_queries("-- name: s\nSELECT 1\n-- include: s\n-- part: s\nSELECT 2\n")

    def test_parts_do_not_include_parts(self):
        with pytest.raises(ValueError, match="includes another part"):
            parse_queries("-- name: s\n-- include: a\n-- part: a\n-- include: b\n"
                          "-- part: b\nSELECT 1\n")


def lease_step(statement: str) -> str:
    """The statement from its `claimed` CTE on, comments left out."""
    text = re.sub(r"--[^\n]*", "", queries()[statement])
    return " ".join(text[text.index("claimed AS ("):].split())


class TestSharedSql:
    def test_the_three_claims_lease_with_the_same_text(self):
        """claim, claim_fair and claim_capped lease, announce and answer with one text (the
        claim_lease part), each then adding its own marker rows."""
        plain = lease_step("claim")
        assert "-- include:" not in queries()["claim"]
        for other in ("claim_fair", "claim_capped"):
            shared = lease_step(other)
            end = shared.index("UNION ALL")
            assert plain[:plain.index("UNION ALL")] == shared[:end], other

    def test_no_statement_keeps_an_include_line(self):
        assert not [name for name, text in queries().items() if "-- include:" in text]


def test_load_takes_parts_across_the_files_of_any_sql_folder(tmp_path):
    """load(folder) is what queries() reads, and what a benchmark uses on another checkout's
    sql/ folder: a statement of one file may include a part of another."""
    from jobqueue.db.queries import load

    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "a.sql").write_text("-- name: s\nSELECT\n-- include: p\n")
    (tmp_path / "queries" / "b.sql").write_text("-- part: p\n1 AS one\n")
    assert load(tmp_path) == {"s": "SELECT\n1 AS one"}
