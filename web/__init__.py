"""The web app: JSON API under /api, the dashboard at /, health and metrics.

    gunicorn -c python:web.gunicorn_conf 'web:create_app()'

Everything that touches the database is created lazily, on first use in the serving process:
Gunicorn forks its workers after importing the app, and a connection pool must not cross a
fork.
"""

from __future__ import annotations

import secrets
import threading

from flask import Flask, g, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException

from jobqueue import settings
from jobqueue.client import Client
from jobqueue.db.queries import q

MB = settings.MB


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
        DOCUMENT_MAX_BYTES=settings.JOBQUEUE_DOCUMENT_MAX_BYTES.get(),
        BATCH_MAX_BYTES=settings.JOBQUEUE_BATCH_MAX_BYTES.get(),
        JSON_MAX_BYTES=settings.JOBQUEUE_JSON_MAX_BYTES.get(),
        METRICS_PUBLIC=settings.JOBQUEUE_METRICS_PUBLIC.get(),
        POOL_MAX_SIZE=settings.JOBQUEUE_POOL_MAX_SIZE.get(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.JOBQUEUE_COOKIE_SECURE.get(),
    )
    app.config.update(config or {})
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

    @app.after_request
    def _rate_headers(response):
        for name, value in getattr(g, "rate_headers", {}).items():
            response.headers[name] = value
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if request.path.startswith("/api") or request.accept_mimetypes.best == "application/json":
            return jsonify(error={"code": exc.name.lower().replace(" ", "_"),
                                  "message": exc.description}), exc.code
        return exc

    return app


class _SharedSecretSessions(SecureCookieSessionInterface):
    """Sessions (the dashboard) need one signing key shared by every process and instance:
    the configured one, or one created once in the database, looked up when first needed
    (before Flask opens the first session, which a before_request hook would be too late for).
    """

    def open_session(self, app: Flask, request):
        # API, health and metrics requests authenticate by token and never use a cookie
        # session: building one cost ~4% of an API request's CPU.
        if request.path.startswith(("/api/", "/healthz", "/readyz", "/metrics")):
            return self.make_null_session(app)
        return super().open_session(app, request)

    def get_signing_serializer(self, app: Flask):
        if not app.secret_key:
            app.secret_key = _shared_secret(app.extensions["jobqueue"].client)
        return super().get_signing_serializer(app)


def _shared_secret(client: Client) -> str:
    with client.pool.connection() as conn:
        row = conn.execute(q("setting_get_or_create"), {
            "name": "session_secret", "value": secrets.token_hex(32)}).fetchone()
    return row["value"]
