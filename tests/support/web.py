"""The web app served in the test process over real HTTP on loopback, and a small API client."""

from __future__ import annotations

import threading

import requests
from werkzeug.serving import make_server

from web import create_app


class Server:
    """The Flask app served by werkzeug's threaded server in a background thread."""

    def __init__(self, url: str, **config):
        self.app = create_app({"DATABASE_URL": url, "SECRET_KEY": "test"} | config)
        self.httpd = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.app.extensions["jobqueue"].close()


class Api:
    def __init__(self, base: str, token: str | None):
        self.base, self.session = base, requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def __getattr__(self, method):
        return lambda path, **kw: self.session.request(method.upper(), self.base + path,
                                                       timeout=30, **kw)
