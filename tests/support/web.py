"""The web app served over real HTTP on loopback (in the test process, or under Gunicorn with
the shipped config), a small API client, raw held requests, and a browser-like dashboard
session."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading

import requests
from werkzeug.serving import make_server

from web import create_app


class Server:
    """The Flask app served by werkzeug's threaded server in a background thread."""

    def __init__(self, url: str, **config):
        self.app = create_app({"DATABASE_URL": url, "SECRET_KEY": "test",
                               "API_CHECK_RESPONSES": True} | config)
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
        if method.startswith("_"):  # not an HTTP method (hypothesis asks for _repr_pretty_)
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """The app under Gunicorn with the shipped config (`gunicorn -c python:web.gunicorn_conf`),
    in a process of its own on a free loopback port; `env` adds to this process's environment."""

    def __init__(self, url: str, **env: str):
        from tests.support.helpers import ROOT

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        environ = os.environ | {"DATABASE_URL": url, "PORT": str(self.port),
                                "WEB_CONCURRENCY": "1"} | env
        self.proc = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "-c",
             "python:web.gunicorn_conf", "web:create_app()"], cwd=ROOT, env=environ,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            self._wait_up()
        except BaseException:
            self.stop()
            raise

    def _wait_up(self, timeout: float = 30.0) -> None:
        """Up when /healthz answers (another process: no event to await)."""
        from tests.support.helpers import wait_until

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited: {self.proc.stderr.read()[-2000:]}")
            try:
                return requests.get(self.base + "/healthz", timeout=5).status_code == 200
            except (requests.ConnectionError, requests.Timeout):
                # not listening yet, or its first request still importing and connecting
                # (slow on a busy machine): ask again
                return False

        wait_until(up, timeout=timeout, message="gunicorn up")

    def stop(self) -> str:
        """SIGTERM, then its stderr (after SIGKILL if it does not stop within 40 s)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


class RawStream:
    """A request on a socket of its own, read up to the end of its head: a held request
    (SSE, ?wait=) that stays open until `close()`, as a browser's EventSource would."""

    def __init__(self, base: str, path: str, token: str, timeout: float = 10.0,
                 read_head: bool = True):
        host, port = base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                          f"{token}\r\nAccept: text/event-stream\r\n\r\n".encode())
        self.status, self.headers, self.rest = 0, {}, b""
        if read_head:  # a long poll's head comes with its answer: read_head() then
            self.read_head()

    def read_head(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, self.rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines[0] else 0
        self.headers = {k.strip().lower(): v.strip() for k, _, v in
                        (line.partition(":") for line in lines[1:])}

    def read_body(self) -> bytes:
        """The rest of an answer whose end is the connection's close (or Content-Length)."""
        data, size = self.rest, int(self.headers.get("content-length", -1))
        while size < 0 or len(data) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()
