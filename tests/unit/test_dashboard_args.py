"""The dashboard's query-string parsers for sorting, the answers table and charts: any input
gives a value or a 400 naming the field, never another error (property tests)."""

from __future__ import annotations

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest

from web import dashboard_jobs

app = Flask(__name__)
TEXT = st.text(max_size=30)


@given(sort=TEXT, direction=TEXT, page=TEXT | st.sampled_from(["²", "٣", "1", "99", "100"]))
def test_parse_sort_answers_a_sort_or_400_naming_the_field(sort, direction, page):
    args = MultiDict({"sort": sort, "dir": direction, "page": page})
    try:
        parsed = dashboard_jobs.parse_sort(args)
    except BadRequest as exc:
        assert exc.description.split(":")[0] in ("sort", "dir", "page")
        return
    assert parsed.key in (None, *dashboard_jobs.SORTS)
    assert 0 <= parsed.page < dashboard_jobs.MAX_SORTED_PAGES


@pytest.mark.parametrize("value,name", [(-10, "high"), (0, "normal"), (10, "low"), (3, "3"),
                                        (None, "—")])
def test_priority_names(value, name):
    assert dashboard_jobs.priority_name(value) == name


@settings(deadline=None)  # a request context each: slow on a busy machine, not wrong
@given(after=TEXT | st.sampled_from(["²", "٣", "0", "9" * 20]), q=st.text(max_size=300))
def test_answers_arguments_are_a_cursor_and_text_or_400(after, q):
    from web.dashboard_batches import MAX_SEARCH, _search_args

    with app.test_request_context(query_string={"after": after, "q": q}):
        try:
            cursor, text = _search_args()
        except BadRequest as exc:
            assert exc.description.split(":")[0] in ("after", "q")
            return
    assert cursor >= 0
    assert text is None or (len(text) <= MAX_SEARCH and "\x00" not in text)


@settings(deadline=None)
@given(window=TEXT, by=TEXT, queue=st.text(max_size=300), kind=TEXT)
def test_chart_arguments_are_checked_or_400(window, by, queue, kind):
    from web.dashboard_charts import WINDOWS, _args

    with app.test_request_context(query_string={"window": window, "by": by, "queue": queue,
                                                "kind": kind}):
        try:
            w, _, _, b = _args()
        except BadRequest as exc:
            assert exc.description.split(":")[0] in ("window", "by", "queue", "kind")
            return
    assert w in WINDOWS and b in ("queue", "kind")
