"""The dashboard's cookie sessions: signed with one key shared by every process and instance,
Secure over HTTPS, and not built at all for token-authenticated routes. The cookie carries
only a server-side session id (the records are web/auth.py's)."""

from __future__ import annotations

import secrets

from flask import Flask, has_request_context, request
from flask.sessions import SecureCookieSessionInterface

from jobqueue.client import Client
from jobqueue.db.queries import q


class SharedSecretSessions(SecureCookieSessionInterface):
    """Sessions (the dashboard) need one signing key shared by every process and instance:
    JOBQUEUE_SECRET_KEY or, in a development run only, one created once in the database,
    looked up when first needed (before Flask opens the first session, which a before_request
    hook would be too late for). The cookie carries only a session id (web/auth.py)."""

    def open_session(self, app: Flask, request):
        # API, health and metrics requests authenticate by token and never use a cookie
        # session: building one cost ~4% of an API request's CPU.
        if request.path.startswith(("/api/", "/healthz", "/readyz", "/metrics")):
            return self.make_null_session(app)
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure whenever the request came over HTTPS (seen through a trusted proxy's
        X-Forwarded-Proto, see TRUSTED_PROXIES), or always with JOBQUEUE_COOKIE_SECURE."""
        return super().get_cookie_secure(app) or (has_request_context() and request.is_secure)

    def get_signing_serializer(self, app: Flask):
        if not app.secret_key:
            app.secret_key = _shared_secret(app.extensions["jobqueue"].client)
        return super().get_signing_serializer(app)


def _shared_secret(client: Client) -> str:
    with client.pool.connection() as conn:
        row = conn.execute(q("setting_get_or_create"), {
            "name": "session_secret", "value": secrets.token_hex(32)}).fetchone()
    return row["value"]
