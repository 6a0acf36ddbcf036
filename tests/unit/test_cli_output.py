"""A list command's output (jobqueue/cli/common.py `print_rows`): JSON as read with --json,
the empty message, else the rendered rows."""

from __future__ import annotations

import json

from jobqueue.cli.common import lines, print_rows


def shout(rows: list[dict]) -> str:
    for r in rows:
        r["loud"] = r["name"].upper()  # what a render adds for its table
    return "\n".join(r["loud"] for r in rows)


class TestPrintRows:
    def test_json_is_the_rows_as_read(self, capsys):
        """--json prints the rows without what the render would add."""
        print_rows([{"name": "a"}], True, "none", shout)
        assert json.loads(capsys.readouterr().out) == [{"name": "a"}]

    def test_no_rows_prints_the_empty_message_or_nothing(self, capsys):
        print_rows([], False, "no widgets", shout)
        assert capsys.readouterr().out == "no widgets\n"
        print_rows([], False, None, shout)
        assert capsys.readouterr().out == ""
        print_rows([], True, "no widgets", shout)
        assert capsys.readouterr().out == "[]\n"

    def test_rows_are_rendered_one_line_each(self, capsys):
        print_rows([{"name": "a"}, {"name": "b"}], False, "none", lines(lambda r: r["name"]))
        assert capsys.readouterr().out == "a\nb\n"
