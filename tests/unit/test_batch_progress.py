"""The batch page's pure parts: the smoothed rate, the ETA, and the prompt and answer read
out of a job's payload and result."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jobqueue.batches.progress import answer_of, eta_seconds, like_pattern, prompt_of, smoothed_rate


class TestRate:
    def test_no_finished_minute_gives_no_rate(self):
        """Before anything finished there is nothing to go by."""
        assert smoothed_rate([]) is None
        assert smoothed_rate([0, 0, 0]) is None

    def test_leading_idle_minutes_are_left_out(self):
        """A batch started two minutes ago is not averaged with the idle minutes before it."""
        assert smoothed_rate([0, 0, 0, 60, 60]) == 60

    def test_one_odd_minute_moves_the_rate_a_little(self):
        """A steady 100/min with one minute of 10 stays near 100: the ETA does not swing."""
        rate = smoothed_rate([100] * 10 + [10])
        assert 70 <= rate <= 80
        assert smoothed_rate([100] * 10 + [10, 100]) > rate

    @given(st.lists(st.integers(0, 10_000), min_size=1, max_size=30))
    def test_the_rate_lies_between_the_smallest_and_largest_minute(self, minutes):
        rate = smoothed_rate(minutes)
        if rate is not None:
            nonzero = minutes[next(i for i, m in enumerate(minutes) if m):]
            assert min(nonzero) - 1e-9 <= rate <= max(nonzero) + 1e-9

    def test_eta(self):
        assert eta_seconds(0, None) == 0
        assert eta_seconds(120, 60.0) == 120
        assert eta_seconds(5, None) is None and eta_seconds(5, 0.0) is None


class TestPromptAndAnswer:
    def test_the_prompt_is_the_last_user_message(self):
        payload = {"messages": [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "first"},
                                {"role": "assistant", "content": "ok"},
                                {"role": "user", "content": "second"}]}
        assert prompt_of(payload) == "second"

    def test_content_parts_are_joined(self):
        payload = {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}},
            {"type": "text", "text": "b"}]}]}
        assert prompt_of(payload) == "a b"

    def test_other_payloads(self):
        assert prompt_of({"prompt": "p"}) == "p"
        assert prompt_of({"text": "doc"}) == "doc"
        assert prompt_of({"to": "x@example.com"}) is None
        assert prompt_of(["not", "a", "dict"]) is None
        assert prompt_of({"messages": [{"role": "system", "content": "s"}]}) is None

    def test_answer(self):
        assert answer_of({"text": "hi", "model": "m"}) == "hi"
        assert answer_of({"ok": True}) is None and answer_of(None) is None

    @given(st.text(max_size=50))
    def test_search_text_is_taken_literally(self, text):
        pattern = like_pattern(text)
        assert pattern.startswith("%") and pattern.endswith("%")
        inner = pattern[1:-1]
        # every % or _ of the text is escaped
        i = 0
        while i < len(inner):
            if inner[i] == "\\":
                assert inner[i + 1] in "\\%_"
                i += 2
            else:
                assert inner[i] not in "%_"
                i += 1
