"""A PgBouncer of the test's own, in transaction mode, in front of the test's Postgres.

Debian's `pgbouncer` (1.18 on bookworm: no prepared statements in transaction mode, so
jobqueue runs with JOBQUEUE_PGBOUNCER=1). It listens on a free loopback port, trusts every
client (auth_type trust, a userlist naming the user) and sends every database name to the
server of the test's DATABASE_URL (TCP, or the embedded server's socket directory). PgBouncer
refuses to run as root: as root it runs as the owner of that socket directory, or as
`postgres` (else `nobody`) for a TCP server.

`PgBouncer(url).url(db_url)` is `db_url` with its host and port swapped for the bouncer's.
Without the binary the caller skips, except under CI (env CI set), where it fails.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.helpers import wait_until
from tests.support.web import free_port


def require_pgbouncer() -> str:
    """The pgbouncer binary; skips the test without it (fails under CI: .ci/run installs it)."""
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None)
    if found:
        return found
    reason = "pgbouncer is not installed (apt-get install pgbouncer)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the PgBouncer tests", pytrace=False)
    pytest.skip(reason)


class PgBouncer:
    def __init__(self, server_url: str, pool_size: int = 20, max_client_conn: int = 500):
        binary = require_pgbouncer()
        target = conninfo_to_dict(server_url)
        host = str(target.get("host") or "127.0.0.1")
        port = str(target.get("port") or 5432)
        self.user = str(target.get("user") or "postgres")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="jobqueue-pgbouncer-"))
        self.dir.chmod(0o755)
        (self.dir / "users.txt").write_text(f'"{self.user}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(f"""\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir / "users.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = {max_client_conn}
max_db_connections = {pool_size}
server_reset_query =
ignore_startup_parameters = extra_float_digits
""")
        for name in ("users.txt", "pgbouncer.ini"):
            (self.dir / name).chmod(0o644)
        command = [binary]
        if os.geteuid() == 0:
            command += ["-u", _unprivileged_user(host)]
        self.log_path = self.dir / "pgbouncer.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([*command, str(self.dir / "pgbouncer.ini")],
                                         stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(self._answers, timeout=15, message="pgbouncer up")
        except BaseException:
            self.stop()
            raise

    def url(self, db_url: str) -> str:
        """`db_url` through the bouncer."""
        parts = conninfo_to_dict(db_url) | {"host": "127.0.0.1", "port": str(self.port)}
        return make_conninfo(**parts)

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"pgbouncer exited: {self.log()[-2000:]}")
        try:
            psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres",
                            connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _unprivileged_user(host: str) -> str:
    if host.startswith("/"):  # a socket directory: whoever owns it can reach the server
        owner = pwd.getpwuid(os.stat(host).st_uid).pw_name
        if owner != "root":
            return owner
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user to run pgbouncer as")
