"""Keeping API keys out of what providers say back.

A provider (or a proxy in front of it) may quote the request's `Authorization` header in an
error. Its text would then travel into the job's errors and traceback, the API, exports, the
dashboard and the logs. Every error text of an LLM call is scrubbed here first: each configured
key, and anything shaped like a credential (a bearer or basic token, an `sk-...` key, a Google
`AIza...` key, an `api_key=...` pair), becomes `[redacted]`.
"""

from __future__ import annotations

import contextlib
import re
import traceback
from collections.abc import Iterable
from typing import Any

from jobqueue.errors import Permanent, RedactedError

REDACTED = "[redacted]"

_SHAPES = re.compile(
    # a credential after "Bearer"/"Basic" has a digit: "Basic authentication failed" stays
    r"(?i:\b(bearer|basic)(\s+|%20))(?=[A-Za-z0-9._~+/=-]*\d)[A-Za-z0-9._~+/=-]{8,}"
    r"|\bsk-[A-Za-z0-9_-]{8,}"
    r"|\bAIza[A-Za-z0-9_-]{20,}"
    r"|(?i:\b(api[_-]?key|x-api-key|access[_-]?token)([\"']?\s*[:=]\s*[\"']?))[^\s\"',;&)]{6,}")


def _shape(match: re.Match) -> str:
    if match.group(1):  # keep the scheme: "Bearer [redacted]"
        return match.group(1) + match.group(2) + REDACTED
    if match.group(3):
        return match.group(3) + match.group(4) + REDACTED
    return REDACTED


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()):
        # Longest first, so a key that contains another is replaced whole.
        found = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, found))) if found else None

    def text(self, value: str) -> str:
        if self._secrets is not None:
            value = self._secrets.sub(REDACTED, value)
        return _SHAPES.sub(_shape, value)

    def value(self, value: Any) -> Any:
        """Strings scrubbed inside any JSON-like structure (an error body)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.value(v) for v in value)
        return value

    def exception(self, exc: BaseException) -> BaseException:
        """`exc` with every text in it and in its chain (cause, context) scrubbed, in place, so
        its type still says what happened and still decides the retry; if its rendering still
        shows a secret (a `__str__` of its own), a RedactedError (or Permanent) with the
        scrubbed text instead."""
        seen: set[int] = set()
        link: BaseException | None = exc
        while link is not None and id(link) not in seen:
            seen.add(id(link))
            link.args = tuple(self.value(a) for a in link.args)
            for name in ("message", "body"):  # openai.APIError keeps both
                if isinstance(getattr(link, name, None), str | dict | list):
                    with contextlib.suppress(AttributeError):
                        setattr(link, name, self.value(getattr(link, name)))
            link = link.__cause__ or link.__context__
        rendered = "".join(traceback.format_exception(exc))
        if self.text(rendered) == rendered:
            return exc
        kind = Permanent if isinstance(exc, Permanent) else RedactedError
        return kind(f"{type(exc).__name__}: {self.text(str(exc))}")
