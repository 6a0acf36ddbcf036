"""API tokens: created once, shown once, stored only as SHA-256 hashes.

A token is `jq_` and 43 random URL-safe characters; its first ten characters (the prefix) are
kept in clear so people can tell their tokens apart in a list. SHA-256 without salt is right
here (unlike passwords): the token has 256 bits of entropy, so there is nothing to brute-force,
and an unsalted hash lets a request be authenticated by one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets

import psycopg

from jobqueue.db.queries import q

SCOPES = ("read", "write", "admin", "viewer")  # viewer: the dashboard, read-only
DEFAULT_RATE_LIMIT = 300  # requests per minute


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(conn: psycopg.Connection, owner: str, scopes: list[str],
           rate_limit: int = DEFAULT_RATE_LIMIT, note: str | None = None,
           write_rate_limit: int | None = None) -> tuple[str, dict]:
    """Create a token; returns (the token, its row). The token is not stored anywhere.
    `rate_limit` is its reads per minute (GET, SSE, ?wait); `write_rate_limit` its writes per
    minute (None: the same as reads). Each is a bucket of its own."""
    if not owner:
        raise ValueError("owner: required")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes: choose from {', '.join(SCOPES)} (got {', '.join(scopes)})")
    if rate_limit < 1:
        raise ValueError("rate_limit: must be at least 1 request per minute")
    if write_rate_limit is not None and write_rate_limit < 1:
        raise ValueError("write_rate_limit: must be at least 1 request per minute")
    token = "jq_" + secrets.token_urlsafe(32)
    row = conn.execute(q("token_create"), {
        "hash": hash_token(token), "prefix": token[:10], "owner": owner, "scopes": scopes,
        "rate_limit": rate_limit, "write_rate_limit": write_rate_limit,
        "note": note}).fetchone()
    return token, row


def list_tokens(conn: psycopg.Connection) -> list[dict]:
    return conn.execute(q("token_list")).fetchall()


def revoke(conn: psycopg.Connection, token_id: int) -> bool:
    return conn.execute(q("token_revoke"), {"id": token_id}).fetchone() is not None
