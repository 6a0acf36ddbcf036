"""The web app's factory, create_app(): the JSON API under /api, the dashboard at /, health
and metrics, wired with the security headers, body limits and error pages every route
shares. Resources (web/resources.py) and sessions (web/sessions.py) live beside it.

    gunicorn -c python:web.gunicorn_conf 'web:create_app()'

Everything that touches the database is created lazily, on first use in the serving process:
Gunicorn forks its workers after importing the app, and a connection pool must not cross a
fork.
"""

from __future__ import annotations

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter, PathConverter, UnicodeConverter

from jobqueue import settings
from web.contract import BadRequest, operation_of
from web.resources import Resources
from web.sessions import SharedSecretSessions

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
MULTIPART_ROOM = 64 * 1024  # a multipart body's framing, over its route's limit


def body_limit(app: Flask, endpoint: str | None) -> tuple[str, int]:
    """The body a route takes at most: the config key its @operation names (`limit=`), plus
    room for multipart framing on a route that takes a form, else the byte that tells "over"
    from "at" the limit; JSON_MAX_BYTES on a route without @operation. Werkzeug holds a
    chunked body (no Content-Length) to the same limit while reading it: 413, as for a body
    that declares its length."""
    op = operation_of(app, endpoint)
    if op is None:
        return "JSON_MAX_BYTES", 1
    return op.limit, MULTIPART_ROOM if op.form is not None else 1


SECRET_MISSING = (
    "JOBQUEUE_SECRET_KEY is not set. The web app signs its session cookies with it; set it to "
    "a long random value, the same in every process and instance (python -c 'import secrets; "
    "print(secrets.token_hex(32))'). Only for a development run, JOBQUEUE_DEV=1 lets the app "
    "use a secret it stores in the database, where anyone who can read the database finds it.")


def secret_configured() -> bool:
    """Whether the web app may start here: a secret from the environment, or a development
    run (JOBQUEUE_DEV=1, as `jobqueue demo` and the tests are)."""
    return bool(settings.JOBQUEUE_SECRET_KEY.get()) or settings.JOBQUEUE_DEV.get()


class IdConverter(IntegerConverter):
    """<int:...> in every route: an id Postgres's bigint holds, else no match (404). Werkzeug's
    own takes any number of digits, and 10**30 reached the database as a 500."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(map, *args, **kwargs)


class TextConverter(UnicodeConverter):
    """<name> in every route: no NUL, else no match (404). Postgres cannot take a NUL in text,
    and one reached it from a schedule's name as a 500."""

    def __init__(self, map, *args, **kwargs):
        super().__init__(map, *args, **kwargs)
        self.regex = self.regex.replace("[^/]", "[^/\\x00]")


class TextPathConverter(PathConverter):
    """<path:...>: as TextConverter, slashes allowed."""

    regex = "[^/\\x00][^\\x00]*?"


def _dashboard_pages() -> tuple:
    """The dashboard's batch page, charts and controls (issue 15): modules that add their
    routes to the dashboard's blueprint (`attach`)."""
    from web import dashboard_batches, dashboard_charts, dashboard_controls

    return dashboard_batches, dashboard_charts, dashboard_controls


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)
    # before any route is added
    app.url_map.converters.update(int=IdConverter, default=TextConverter, string=TextConverter,
                                  path=TextPathConverter)
    app.config.from_mapping(
        DATABASE_URL=settings.DATABASE_URL.get(),
        LISTEN_DATABASE_URL=settings.JOBQUEUE_LISTEN_DATABASE_URL.get(),
        # Reads that may lag a moment go to this replica (web/resources.py); None: the primary.
        READ_DATABASE_URL=settings.JOBQUEUE_READ_DATABASE_URL.get(),
        READ_MAX_LAG_SECONDS=settings.JOBQUEUE_READ_MAX_LAG_SECONDS.get(),
        SECRET_KEY=settings.JOBQUEUE_SECRET_KEY.get(),
        # A development run may sign cookies with a secret kept in the database.
        DEV=settings.JOBQUEUE_DEV.get(),
        DOCUMENT_MAX_BYTES=settings.JOBQUEUE_DOCUMENT_MAX_BYTES.get(),
        DOCUMENT_MAX_CHARS=settings.JOBQUEUE_DOCUMENT_MAX_CHARS.get(),
        BATCH_MAX_BYTES=settings.JOBQUEUE_BATCH_MAX_BYTES.get(),
        JSON_MAX_BYTES=settings.JOBQUEUE_JSON_MAX_BYTES.get(),
        METRICS_PUBLIC=settings.JOBQUEUE_METRICS_PUBLIC.get(),
        POOL_MAX_SIZE=settings.JOBQUEUE_POOL_MAX_SIZE.get(),
        # Held requests (SSE streams and ?wait= long polls) open at once (web/streams.py).
        STREAMS_PER_TOKEN=settings.JOBQUEUE_STREAMS_PER_TOKEN.get(),
        STREAMS_PER_PROCESS=settings.JOBQUEUE_STREAMS_PER_PROCESS.get(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.JOBQUEUE_COOKIE_SECURE.get(),
        # How many proxies in front of the app set X-Forwarded-For/-Proto (the platform's
        # router: 1). 0 ignores those headers, which any client can send.
        TRUSTED_PROXIES=settings.JOBQUEUE_TRUSTED_PROXIES.get(),
        # Failed authentications per client address and minute before 429 (0: no limit).
        AUTH_FAILURES_PER_MINUTE=settings.JOBQUEUE_AUTH_FAILURES_PER_MINUTE.get(),
        # Tests: fail an /api answer that its @operation does not describe (web/contract.py).
        API_CHECK_RESPONSES=False,
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

    from web import api, costs, dashboard, dashboard_webhooks, health, quotas, schedules, webhooks

    for pages in _dashboard_pages():
        pages.attach(dashboard.bp)
    dashboard_webhooks.attach(dashboard.bp)
    from web import campaigns, dashboard_campaigns  # AI-visibility campaigns (issue 14.2)

    dashboard_campaigns.attach(dashboard.bp)

    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp, url_prefix="/api")
    app.register_blueprint(webhooks.bp, url_prefix="/api")
    app.register_blueprint(quotas.bp, url_prefix="/api")
    app.register_blueprint(costs.bp, url_prefix="/api")
    app.register_blueprint(schedules.bp, url_prefix="/api/schedules")
    app.register_blueprint(campaigns.bp, url_prefix="/api/campaigns")
    app.register_blueprint(dashboard.bp)

    app.session_interface = SharedSecretSessions()
    if app.config["API_CHECK_RESPONSES"]:
        from web.contract import check_answers

        check_answers(app)

    @app.before_request
    def _body_limit():
        key, extra = body_limit(app, request.endpoint)
        request.max_content_length = app.config[key] + extra

    @app.after_request
    def _headers(response):
        for name, value in getattr(g, "rate_headers", {}).items():
            response.headers[name] = value
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    # A client error a view raises (web/contract.py), answered by the exception itself, so a
    # Rejected keeps its list of problems; the same for every blueprint.
    app.register_error_handler(BadRequest, lambda exc: exc.response())

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if request.path.startswith("/api") or request.accept_mimetypes.best == "application/json":
            code = "too_large" if exc.code == 413 else exc.name.lower().replace(" ", "_")
            response = jsonify(error={"code": code, "message": exc.description})
            # What the exception says besides its body: Allow on a 405, for one.
            for name, value in exc.get_headers():
                if name.lower() != "content-type":
                    response.headers[name] = value
            return response, exc.code
        return exc

    return app
