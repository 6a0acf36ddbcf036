"""The Gunicorn worker class of the shipped config: gthread, plus a hand-off of held requests.

A view that holds a request (SSE, `?wait=`; see web/streams.py) answers on its request thread
with its status and headers and a marker in the environ. This worker then does not write that
answer: it gives the request's socket to the process's stream loop and frees the thread at
once, so streams and long polls never compete with ordinary requests for Gunicorn's threads.
The connection leaves the worker's books (it no longer counts against `worker_connections`
nor delays a graceful stop); web/streams.py caps how many there are.

Only plain HTTP/1.x GET requests are handed off. Over TLS terminated by Gunicorn itself or
HTTP/2 the views hold their thread as before (the platforms this is shipped for terminate TLS
in their router). On a graceful stop, once the ordinary requests are done, the stream loop
ends its streams and answers its long polls.
"""

from __future__ import annotations

import threading

from gunicorn.workers.gthread import ThreadWorker

from web.streams import CAN_HAND_OFF, HELD

STOP_STREAMS_SECONDS = 3.0  # a stopping worker's held requests get this long to finish


class HandOffWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._current = threading.local()  # the connection a request thread serves

    def load_wsgi(self):
        super().load_wsgi()
        self.app_object, self.wsgi = self.wsgi, self._hand_off_wrapper(self.wsgi)

    def handle_request(self, req, conn):
        self._current.conn = conn
        try:
            return super().handle_request(req, conn)
        finally:
            self._current.conn = None

    def finish_request(self, conn, fs):
        if getattr(conn, "handed_off", False):  # the stream loop owns the socket now
            self.nr_conns -= 1
            return
        super().finish_request(conn, fs)

    def _hand_off_wrapper(self, app):
        def wsgi(environ, start_response):
            conn = getattr(self._current, "conn", None)
            if conn is None or self.cfg.is_ssl or environ.get("REQUEST_METHOD") != "GET":
                return app(environ, start_response)
            environ[CAN_HAND_OFF] = True
            answer: list = []

            def capture(status, headers, exc_info=None):
                if HELD not in environ:
                    return start_response(status, headers, exc_info)
                answer[:] = [status, headers]
                return lambda data: None

            body = app(environ, capture)
            held = environ.get(HELD)
            if held is None:
                return body
            if not answer:  # the app answered without start_response: nothing to hand off
                held.slot.release()
                return body
            if hasattr(body, "close"):
                body.close()  # ends Flask's request (teardown) before the loop takes over
            status, headers = answer
            # Gunicorn writes nothing for this request, keeps no books on the connection
            # (finish_request) and leaves the socket open: the stream loop has it.
            start_response(status, headers)
            gunicorn_response = start_response.__self__
            gunicorn_response.force_close()
            gunicorn_response.headers_sent = True
            gunicorn_response.chunked = False
            conn.handed_off = True
            held.start(conn.sock, status, headers, environ.get("SERVER_PROTOCOL", "HTTP/1.1"))
            return []

        return wsgi

    def run(self):
        try:
            super().run()
        finally:
            resources = getattr(self.app_object, "extensions", {}).get("jobqueue")
            if resources is not None:
                resources.stop_streams(STOP_STREAMS_SECONDS)
