"""The signature every webhook request carries, as Stripe's does:

    Jobqueue-Signature: t=1764600000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff5...

`t` is the Unix time of the attempt; `v1` is the hex HMAC-SHA256, keyed with the
subscription's secret, of `t`, a period and the raw request body. A receiver recomputes it
over the body bytes it received (before parsing them), compares in constant time and refuses
a `t` too far from its clock, so a captured request cannot be replayed later. Each attempt is
signed anew; the event id (Jobqueue-Event-Id) stays the same across attempts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

HEADER = "Jobqueue-Signature"
SCHEME = "v1"
TOLERANCE_SECONDS = 300


def new_secret() -> str:
    """A subscription's signing secret: `whsec_` and 256 random bits."""
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body,
                    hashlib.sha256).hexdigest()


def header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The Jobqueue-Signature value for `body` sent now (or at `timestamp`)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},{SCHEME}={signature(secret, t, body)}"


def verify(secret: str, value: str, body: bytes, tolerance: float = TOLERANCE_SECONDS,
           now: float | None = None) -> bool:
    """Whether `value` (the header) signs `body` with `secret` within `tolerance` seconds of
    `now`: what a receiver does (the README shows the same in a few lines)."""
    parts = dict(item.split("=", 1) for item in value.split(",") if "=" in item)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    # bytes: compare_digest refuses str with non-ASCII characters (a TypeError)
    return hmac.compare_digest(parts.get(SCHEME, "").encode(), signature(secret, t, body).encode())
