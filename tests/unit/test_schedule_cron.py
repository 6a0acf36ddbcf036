"""Cron expressions: nicknames, refusals naming the field, and any text answered with either
a Cron or InvalidSchedule (never another exception)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobqueue.errors import InvalidSchedule
from jobqueue.schedules import cron, tick

FIELD = st.one_of(st.just("*"), st.integers(-5, 70).map(str), st.text("*/,-0123456789LW#?",
                                                                      max_size=6),
                  st.sampled_from(["MON", "jan", "*/0", "1-", "7", "SUN-SAT"]))


@given(st.one_of(st.text(max_size=40), st.lists(FIELD, min_size=1, max_size=7).map(" ".join)),
       st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Nowhere", "", "../etc"]))
def test_any_text_is_a_cron_or_a_refusal_naming_the_field(expression, zone):
    try:
        parsed = cron.parse(expression, zone)
    except InvalidSchedule as exc:
        assert str(exc).startswith(("cron:", "timezone:"))
        return
    fire = parsed.after(datetime(2026, 1, 1, tzinfo=UTC))
    assert fire > datetime(2026, 1, 1, tzinfo=UTC) and fire.tzinfo is not None


@pytest.mark.parametrize("name, same", [("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"),
                                        ("@weekly", "0 0 * * 0"), ("@monthly", "0 0 1 * *"),
                                        ("@yearly", "0 0 1 1 *"), ("@ANNUALLY", "0 0 1 1 *")])
def test_nicknames(name, same):
    assert cron.parse(name).expression == same


def test_fires_are_utc_and_follow_the_zone():
    berlin = cron.parse("0 9 * * 1-5", "Europe/Berlin")
    assert berlin.after(datetime(2026, 7, 3, 12, tzinfo=UTC)) == datetime(2026, 7, 6, 7,
                                                                           tzinfo=UTC)
    assert berlin.latest_at_or_before(datetime(2026, 7, 6, 7, tzinfo=UTC)) == datetime(
        2026, 7, 6, 7, tzinfo=UTC)


def test_decide_all_paces_a_long_backlog():
    """`all` runs CATCH_UP_PER_TICK missed fires per tick and leaves the rest for the next."""
    row = {"cron": "* * * * *", "timezone": "UTC", "misfire": "all", "max_lateness": None,
           "next_fire_at": datetime(2026, 1, 1, tzinfo=UTC)}
    plan = tick.decide(row, datetime(2026, 1, 2, tzinfo=UTC))
    assert len(plan.run) == tick.CATCH_UP_PER_TICK and not plan.skipped
    assert plan.next_fire_at == datetime(2026, 1, 1, 1, 40, tzinfo=UTC)
