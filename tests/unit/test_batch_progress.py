"""The batch page's pure parts: the prompt and answer read out of a job's payload and result
(its rate and ETA are jobqueue/batches/eta.py's: tests/unit/test_eta.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jobqueue.batches.progress import answer_of, like_pattern, prompt_of


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
