"""The web app: JSON API under /api, the dashboard at /, health and metrics.

    gunicorn -c python:web.gunicorn_conf 'web:create_app()'

Everything that touches the database is created lazily, on first use in the serving process:
Gunicorn forks its workers after importing the app, and a connection pool must not cross a
fork.
"""

from __future__ import annotations

import secrets
import threading

from flask import Flask, g, has_request_context, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from jobqueue import settings
from jobqueue.client import Client
from jobqueue.db.queries import q

MB = settings.MB

# Every answer's security headers. The dashboard runs no inline script or style (everything is
# in web/static), so the policy allows only this origin's files; data: is the blank favicon.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Referrer-Policy": "same-origin",
}
# The body each route takes at most (a config key, plus room for multipart framing); every
# other route takes JSON_MAX_BYTES (plus the byte that tells "over" from "at" the limit).
# Werkzeug holds a chunked body (no Content-Length) to the same limit while reading it: 413,
# as for a body that declares its length.
BODY_LIMITS = {"api.upload_document": ("DOCUMENT_MAX_BYTES", 64 * 1024),
               "api.create_batch": ("BATCH_MAX_BYTES", 64 * 1024)}


SECRET_MISSING = (
    "JOBQUEUE_SECRET_KEY is not set. The web app signs its session cookies with it; set it to "
    "a long random value, the same in every process and instance (python -c 'import secrets; "
    "print(secrets.token_hex(32))'). Only for a development run, JOBQUEUE_DEV=1 lets the app "
    "use a secret it stores in the database, where anyone who can read the database finds it.")


def secret_configured() -> bool:
    """Whether the web app may start here: a secret from the environment, or a development
    run (JOBQUEUE_DEV=1, as `jobqueue demo` and the tests are)."""
    return bool(settings.JOBQUEUE_SECRET_KEY.get()) or settings.JOBQUEUE_DEV.get()


class Resources:
    """Per-process resources of the app, made on first use (after any fork)."""

    def __init__(self, app: Flask):
        self.app = app
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._hub = None

    @property
    def url(self) -> str:
        from jobqueue import db

        return self.app.config["DATABASE_URL"] or db.database_url()

    @property
    def client(self) -> Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = Client(self.url, min_size=1,
                                          max_size=self.app.config["POOL_MAX_SIZE"])
        return self._client

    @property
    def hub(self):
        """The LISTEN hub behind SSE and ?wait=: one connection per process."""
        if self._hub is None:
            with self._lock:
                if self._hub is None:
                    from web.events import Hub

                    self._hub = Hub(self.url)
                    self._hub.start()
        return self._hub

    def close(self) -> None:
        if self._hub is not None:
            self._hub.stop()
        if self._client is not None:
            self._client.close()


def resources() -> Resources:
    from flask import current_app

    return current_app.extensions["jobqueue"]


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        DATABASE_URL=settings.DATABASE_URL.get(),
        SECRET_KEY=settings.JOBQUEUE_SECRET_KEY.get(),
        # A development run may sign cookies with a secret kept in the database.
        DEV=settings.JOBQUEUE_DEV.get(),
        DOCUMENT_MAX_BYTES=settings.JOBQUEUE_DOCUMENT_MAX_BYTES.get(),
        BATCH_MAX_BYTES=settings.JOBQUEUE_BATCH_MAX_BYTES.get(),
        JSON_MAX_BYTES=settings.JOBQUEUE_JSON_MAX_BYTES.get(),
        METRICS_PUBLIC=settings.JOBQUEUE_METRICS_PUBLIC.get(),
        POOL_MAX_SIZE=settings.JOBQUEUE_POOL_MAX_SIZE.get(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.JOBQUEUE_COOKIE_SECURE.get(),
        # How many proxies in front of the app set X-Forwarded-For/-Proto (the platform's
        # router: 1). 0 ignores those headers, which any client can send.
        TRUSTED_PROXIES=settings.JOBQUEUE_TRUSTED_PROXIES.get(),
        # Failed authentications per client address and minute before 429 (0: no limit).
        AUTH_FAILURES_PER_MINUTE=settings.JOBQUEUE_AUTH_FAILURES_PER_MINUTE.get(),
    )
    app.config.update(config or {})
    if not app.config["SECRET_KEY"] and not app.config["DEV"]:
        raise RuntimeError(SECRET_MISSING)
    if app.config["TRUSTED_PROXIES"]:
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    # The largest body any route takes; each route checks its own, smaller, limit.
    app.config["MAX_CONTENT_LENGTH"] = max(app.config["DOCUMENT_MAX_BYTES"],
                                           app.config["BATCH_MAX_BYTES"],
                                           app.config["JSON_MAX_BYTES"]) + MB
    app.extensions["jobqueue"] = Resources(app)

    from web import api, dashboard, health

    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp, url_prefix="/api")
    app.register_blueprint(dashboard.bp)

    app.session_interface = _SharedSecretSessions()

    @app.before_request
    def _body_limit():
        key, extra = BODY_LIMITS.get(request.endpoint, ("JSON_MAX_BYTES", 1))
        request.max_content_length = app.config[key] + extra

    @app.after_request
    def _headers(response):
        for name, value in getattr(g, "rate_headers", {}).items():
            response.headers[name] = value
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if request.path.startswith("/api") or request.accept_mimetypes.best == "application/json":
            code = "too_large" if exc.code == 413 else exc.name.lower().replace(" ", "_")
            return jsonify(error={"code": code, "message": exc.description}), exc.code
        return exc

    return app


class _SharedSecretSessions(SecureCookieSessionInterface):
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
