"""Scrubbing API keys out of provider error text (jobqueue/llm/redact.py)."""

from __future__ import annotations

import traceback

import pytest

from jobqueue.llm.redact import REDACTED, RedactedError, Redactor
from jobqueue.tasks import Permanent


class TestRedactor:
    def test_configured_keys_and_key_shapes_are_replaced(self):
        r = Redactor(["my-own-secret-1", "short"])
        text = ("echo: Authorization: Bearer abc.DEF_123-xyz; key my-own-secret-1 and short; "
                "sk-proj-AbCdEf0123456789 AIzaSyA1234567890abcdefghijkl api_key=zz9plural")
        out = r.text(text)
        for secret in ("abc.DEF_123-xyz", "my-own-secret-1", "short", "sk-proj-AbCdEf012",
                       "AIzaSyA12345", "zz9plural"):
            assert secret not in out, out
        assert "Bearer " + REDACTED in out and "api_key=" + REDACTED in out

    def test_ordinary_text_is_left_alone(self):
        text = ("The server had an error while processing your request (code 500, task-7). "
                "Basic authentication failed; send a Bearer token.")
        assert Redactor(["sk-x"]).text(text) == text

    def test_an_exception_and_its_chain_are_scrubbed_in_place(self):
        key = "sk-" + "secret-value"  # not in the source lines the traceback shows
        r = Redactor([key])
        try:
            try:
                raise ValueError(f"inner Bearer {key}")
            except ValueError as inner:
                raise ConnectionError(f"outer {key}") from inner
        except ConnectionError as exc:
            raised, clean = exc, r.exception(exc)
        assert clean is raised and isinstance(clean, ConnectionError)
        assert "sk-secret" not in "".join(traceback.format_exception(clean))

    @pytest.mark.parametrize("base, kind", [(Exception, RedactedError), (Permanent, Permanent)])
    def test_a_custom_str_is_replaced_keeping_permanence(self, base, kind):
        class Loud(base):
            def __str__(self):
                return "key sk-secret-value"

        clean = Redactor(["sk-secret-value"]).exception(Loud())
        assert type(clean) is kind and "sk-secret" not in str(clean)
