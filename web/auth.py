"""Who is asking, may they, and have they asked too often.

API requests carry `Authorization: Bearer TOKEN`. One statement (`token_use`) finds the token
by its hash and charges its per-minute bucket, which every Gunicorn worker and instance shares.
Reads (GET, HEAD: job status, SSE, ?wait) and writes spend separate buckets of the token, so
a client that spent its writes can still poll what it made. Every answer to an authenticated
request carries X-RateLimit-Limit, -Remaining and -Reset of the bucket it spent (seconds until
that bucket is full again); over the limit it is 429 with Retry-After.

The dashboard signs in with an admin token, or a `viewer` one (read-only: every page, no
action; web/dashboard.py refuses its POSTs with 403). A token with `read` alone does not
sign in: the dashboard shows every owner's jobs. A sign-in is a row of
jobqueue.web_sessions (owner, token, created, expires, last seen, revoked); the signed
cookie carries only that session's random secret (the row keeps its SHA-256), so neither the
token nor anything the database holds can be turned into a session. Each request checks the
session and its token and charges the token like an API request; sign-out revokes the row,
and owners list and revoke sessions at /api/sessions. Every form carries a CSRF token bound
to the session. A manual action on jobs is recorded with who made it (`acting`).

All of this writes, so all of it runs on the primary's pool (`resources().client`), never on
the reader's: a request's reads can then come from a replica or a read-only connection, and
a revoked token or session stops working at once, whatever the replica's lag.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import random
import secrets
from dataclasses import dataclass
from datetime import timedelta

from flask import abort, g, jsonify, request, session

from jobqueue.audit import Audit
from jobqueue.db.queries import q
from jobqueue.tokens import hash_token


@dataclass(frozen=True)
class Principal:
    token_id: int
    owner: str
    scopes: tuple[str, ...]

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def read_only(self) -> bool:
        """The dashboard's read-only role (every page, every owner's jobs, no action): a
        token given the `viewer` scope on purpose, never one that merely holds `read` (an
        application's users hold those, for their own jobs)."""
        return "viewer" in self.scopes and not self.admin

    def allows(self, scope: str) -> bool:
        # admin implies write implies read; viewer adds nothing in the API
        rank = {"read": 0, "write": 1, "admin": 2}
        return any(rank.get(s, -1) >= rank[scope] for s in self.scopes)

    def owner_filter(self) -> str | None:
        """The owner whose jobs this principal may see; None means every owner (admin)."""
        return None if self.admin else self.owner

    def can_see(self, owner: str | None) -> bool:
        return self.admin or owner == self.owner


class Denied(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def check_token_hash(token_hash: str) -> Principal:
    """Authenticate and charge one request to the token's read bucket (GET, HEAD: reads,
    SSE, ?wait) or its write bucket (everything else); raises Denied (401 or 429)."""
    from web.resources import resources

    write = request.method not in READ_METHODS
    with resources().client.pool.connection() as conn:
        row = conn.execute(q("token_use"), {"hash": token_hash, "write": write}).fetchone()
    if row is None:
        raise Denied(401, "unauthorized", "unknown or revoked token",
                     {"WWW-Authenticate": 'Bearer realm="jobqueue"'})
    limit, remaining = row["rate_limit"], row["remaining"]
    per_second = limit / 60.0
    g.rate_headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, math.floor(remaining))),
        "X-RateLimit-Reset": str(math.ceil(max(0.0, limit - remaining) / per_second)),
    }
    if not row["allowed"]:
        retry = max(1, math.ceil((1 - remaining) / per_second))
        kind = "write" if write else "read"
        raise Denied(429, "rate_limited",
                     f"rate limit of {limit} {kind} requests per minute exceeded; retry in "
                     f"{retry}s" + ("; reads (GET) have a bucket of their own" if write else ""),
                     {"Retry-After": str(retry)})
    return Principal(row["id"], row["owner"], tuple(row["scopes"]))


def authenticate(token: str) -> Principal:
    """check_token_hash for a token a client sent; an unknown or revoked one is a failed
    authentication of the client's address, and past the address's limit the answer is 429
    with Retry-After instead of 401.

    A valid token is always served, whatever its address did: the address may be a NAT or,
    without JOBQUEUE_TRUSTED_PROXIES, the platform's router, shared by every client, and a
    token (256 random bits) cannot be guessed, so the limit is there to slow floods and make
    clients back off, not to guard a guessable secret."""
    try:
        return check_token_hash(hash_token(token))
    except Denied as denied:
        if denied.status == 401:
            _failed_authentication()
        raise


def _failed_authentication() -> None:
    from flask import current_app

    from web.resources import resources

    per_minute = current_app.config["AUTH_FAILURES_PER_MINUTE"]
    if not per_minute:
        return
    with resources().client.pool.connection() as conn:
        level = conn.execute(q("auth_failure_charge"), {
            "address": request.remote_addr or "unknown", "per_minute": per_minute,
        }).fetchone()["level"]
        if random.random() < 0.01:  # now and then, forget addresses long quiet
            conn.execute(q("auth_failures_prune"))
    if level < 0:
        retry = max(1, math.ceil(-level * 60.0 / per_minute))
        raise Denied(429, "rate_limited",
                     f"too many failed authentications from this address; retry in {retry}s",
                     {"Retry-After": str(retry)})


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require(scope: str):
    """Decorator for API routes: a valid bearer token with `scope`, within its rate limit."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            token = bearer_token()
            try:
                if token is None:
                    raise Denied(401, "unauthorized",
                                 "send Authorization: Bearer <token> (jobqueue tokens create)",
                                 {"WWW-Authenticate": 'Bearer realm="jobqueue"'})
                principal = authenticate(token)
                if not principal.allows(scope):
                    raise Denied(403, "forbidden", f"this token lacks the {scope} scope")
            except Denied as denied:
                return api_error(denied.status, denied.code, denied.message, denied.headers)
            g.principal = principal
            return view(*args, **kwargs)

        wrapped.required_scope = scope  # read by the OpenAPI document (web/openapi.py)
        return wrapped

    return decorate


def api_error(status: int, code: str, message: str, headers: dict | None = None,
              field: str | None = None):
    body = {"code": code, "message": message}
    if field:
        body["field"] = field
    response = jsonify(error=body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# -- dashboard sessions ---------------------------------------------------------------------

SESSION_LIFETIME = timedelta(hours=12)  # then sign in again, however active the session


def _session_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def sign_in(token: str) -> Principal:
    """Check a token for the dashboard and open a server-side session for it: an admin token,
    or a `viewer` one (read-only: it sees every page and changes nothing)."""
    principal = authenticate(token)
    if not (principal.admin or principal.read_only):
        raise Denied(403, "forbidden", "the dashboard needs a token with the admin scope, or "
                                       "the viewer scope (read-only)")
    from web.resources import resources

    secret = secrets.token_urlsafe(32)
    with resources().client.pool.connection() as conn:
        conn.execute(q("session_create"), {
            "hash": _session_hash(secret), "token_id": principal.token_id,
            "owner": principal.owner, "seconds": SESSION_LIFETIME.total_seconds()})
    session.clear()
    session["sid"] = secret
    session["csrf"] = secrets.token_urlsafe(32)
    return principal


def sign_out() -> None:
    """End the session on the server, then forget the cookie's contents."""
    secret = session.get("sid")
    if isinstance(secret, str):
        from web.resources import resources

        with resources().client.pool.connection() as conn:
            conn.execute(q("session_end"), {"hash": _session_hash(secret)})
    session.clear()


def session_principal() -> Principal | None:
    secret = session.get("sid")
    if not isinstance(secret, str) or not secret:
        return None
    from web.resources import resources

    with resources().client.pool.connection() as conn:
        row = conn.execute(q("session_use"), {"hash": _session_hash(secret)}).fetchone()
    if row is None:  # revoked, expired, or its token revoked
        session.clear()
        return None
    try:
        principal = check_token_hash(row["token_hash"])
    except Denied as denied:
        if denied.status == 401:
            session.clear()
            return None
        raise
    return principal if principal.admin or principal.read_only else None


def acting(detail: str | None = None) -> Audit:
    """The author of a manual action on jobs in this request, for its record (given to the
    store function that acts, which writes it in the same statement: jobqueue/audit.py): the
    signed-in token's owner, via the dashboard on its pages and via the API everywhere else."""
    via = "dashboard" if request.blueprint == "dashboard" else "api"
    return Audit(g.principal.owner, via, detail)


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf() -> None:
    """Every state-changing dashboard request must echo the session's CSRF token."""
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get("csrf") or ""
    # bytes: compare_digest refuses str with non-ASCII characters (a TypeError, so a 500)
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(400, description="missing or wrong CSRF token; reload the page")
