"""A platform key's state in one word (jobqueue/llm/ratelimit.py `key_state`): what `status`,
`keys list` and the /metrics headroom say of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobqueue.cli.keys import _keys_table
from jobqueue.llm.ratelimit import estimate_tokens, key_state


def later() -> datetime:
    """A block's end still to come (read when the test runs, not when it is collected)."""
    return datetime.now(UTC) + timedelta(hours=1)


def earlier() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)


def row(**changes) -> dict:
    return {"platform": "openai", "model": "m", "key_id": "K:ab12", "requests_total": 3,
            "throttled_total": 1, "idle_seconds": 5.0, "disabled_reason": None,
            "blocked_until": None} | changes


class TestKeysList:
    def test_a_key_blocked_by_a_429_is_listed_as_blocked_not_usable(self):
        """`keys list` said "usable" of a key every process waits on until its
        retry-after has passed; it says what `status` says."""
        rows = [row(blocked_until=later()), row(),
                row(blocked_until=earlier()),
                row(disabled_reason="401 invalid key")]
        _keys_table(rows)
        assert [r["state"] for r in rows] == ["blocked", "ok", "ok",
                                              "disabled: 401 invalid key"]


class TestKeyState:
    def test_disabled_says_why_and_outranks_a_block(self):
        assert key_state(row(disabled_reason="insufficient_quota",
                             blocked_until=later())) == \
            "disabled: insufficient_quota"

    def test_a_block_lasts_until_its_time(self):
        """blocked_until in the past (or none) is ok; in the future, blocked."""
        assert key_state(row(blocked_until=later())) == "blocked"
        assert key_state(row(blocked_until=earlier())) == "ok"
        assert key_state(row()) == "ok"


class TestHeadroom:
    def test_a_key_that_is_not_ok_has_no_headroom(self):
        """/metrics' jobqueue_ratelimit_headroom_ratio: 0 for a blocked or disabled key,
        else the share left of its emptier bucket."""
        from web.metrics import _headroom

        full = row(rpm=60, tpm=6000, burst_seconds=60, req_available=60.0,
                   tok_available=3000.0)
        assert _headroom(full) == 0.5
        assert _headroom(full | {"blocked_until": later()}) == 0.0
        assert _headroom(full | {"disabled_reason": "401"}) == 0.0


def test_token_estimate_counts_only_text_parts_that_are_text():
    """A content part whose "text" is not a string made `batch submit --dry-run` raise."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "abcd" * 10},
                                             {"type": "text", "text": 5},
                                             {"type": "image_url"}, "stray"]}]
    assert estimate_tokens(messages, 16) == 10 + 16
