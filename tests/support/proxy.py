"""A TCP proxy on loopback between a client under test and Postgres, able to cut the line the
way a network partition does: after it forwards a client packet holding some bytes, it goes
silent in both directions (nothing forwarded, nothing closed), as a dead link would, until the
test heals it (then it closes every connection, as a reset would)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from psycopg.conninfo import conninfo_to_dict, make_conninfo

_RESET = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")  # struct linger {on, 0 s}


class PartitionProxy:
    def __init__(self, url: str, cut_after: bytes | None = None, bind: str = "127.0.0.1"):
        params = conninfo_to_dict(url)
        host, port = params.get("host") or "127.0.0.1", int(params.get("port") or 5432)
        # A Unix-socket server (the embedded one) is reached through its socket file.
        self.target = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        self.cut_after = cut_after
        self.cut = threading.Event()
        self._listener = socket.create_server((bind, 0))
        self.port = self._listener.getsockname()[1]
        self.url = make_conninfo(url, host=bind, port=self.port)
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.append(client)
                if self._closed:
                    client.close()
                    return
                if self.cut.is_set():
                    continue  # a new connection into the void
                if isinstance(self.target, str):
                    server = socket.socket(socket.AF_UNIX)
                    server.connect(self.target)
                else:
                    server = socket.create_connection(self.target)
                self._sockets.append(server)
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        pair = {client: server, server: client}
        while not self._closed:
            if self.cut.is_set():
                return  # silent: keep both sockets open, forward nothing
            try:
                ready, _, _ = select.select(list(pair), [], [], 0.05)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self.cut.is_set():
                        return
                    pair[sock].sendall(data)
                    if sock is client and self.cut_after and self.cut_after in data:
                        self.cut.set()
            except OSError:
                return

    def heal(self) -> None:
        """End the partition: every connection through the proxy is reset."""
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        self._acceptor.join(5)
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                if sock.family != socket.AF_UNIX:  # reset, as a healed link would find
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                sock.close()
