"""The web app served in the test process over real HTTP on loopback, a small API client, and
a browser-like dashboard session."""

from __future__ import annotations

import re
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
        if method.startswith("_"):  # not an HTTP method (hypothesis looks for _repr_pretty_)
            raise AttributeError(method)
        return lambda path, **kw: self.session.request(method.upper(), self.base + path,
                                                       timeout=30, **kw)


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Dashboard:
    """A browser-like session: cookies, and the CSRF token of the last page it read."""

    def __init__(self, base: str):
        self.base = base
        self.http = requests.Session()
        self.csrf = ""

    def get(self, path: str, **kw) -> requests.Response:
        r = self.http.get(self.base + path, timeout=30, **kw)
        if found := CSRF.search(r.text):
            self.csrf = found.group(1)
        return r

    def post(self, path: str, data=None, csrf: bool = True, **kw) -> requests.Response:
        data = list((data or {}).items()) if isinstance(data, dict) else list(data or [])
        if csrf:
            data.append(("csrf_token", self.csrf))
        r = self.http.post(self.base + path, data=data, timeout=30, **kw)
        if found := CSRF.search(r.text):
            self.csrf = found.group(1)
        return r

    def sign_in(self, token: str, next_url: str = "") -> requests.Response:
        self.get("/login")
        return self.post("/login", {"token": token, "next": next_url}, allow_redirects=False)

    def page(self, path: str) -> str:
        r = self.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:500])
        return r.text
