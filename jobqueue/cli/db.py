"""`jobqueue db status|stop`: which database the commands use, and stopping the embedded one.

    $ jobqueue db status
    database: embedded Postgres in /src/app/.jobqueue/pgdata (DATABASE_URL is not set)
    server:   running, pid 4242, socket /tmp/pgserver-1a2b/.s.PGSQL.5432
    schema:   5 of 5 migrations applied (up to date)

`status` starts nothing: it reads the embedded server's postmaster.pid, and connects only to a
server that is already there. Exit 1 when DATABASE_URL's server cannot be reached.
"""

from __future__ import annotations

import click
import psycopg

from jobqueue import db, settings
from jobqueue.cli.common import UserError, WorkFailed, print_json


@click.group("db")
def db_group() -> None:
    """Which database jobqueue uses; stop the embedded one."""


@db_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Which database (DATABASE_URL, password hidden, or the embedded server's directory),
    whether it runs (pid, port or socket), and the schema version applied vs available."""
    from jobqueue.db import embedded, migrate

    available = [m.version for m in migrate.available()]
    report: dict = {"database": db.describe(), "available": max(available, default=0)}
    url = settings.DATABASE_URL.get()
    if url:
        report["kind"] = "url"
    else:
        found = embedded.state()
        report |= {"kind": "embedded", "pgdata": str(found.pgdata), "running": found.running,
                   "pid": found.pid, "port": found.port, "socket_dir": found.socket_dir,
                   "address": found.address, "initialised": found.initialised}
        url = found.url  # None unless running: status starts nothing
    error = None
    if url:
        try:
            with db.connect(url, connect_timeout=10) as conn:
                report["server_version"] = conn.info.server_version
                done = migrate.applied(conn)
            report["reachable"] = True
            report["applied"] = sorted(done)
            report["pending"] = [v for v in available if v not in done]
        except psycopg.OperationalError as exc:
            report["reachable"] = False
            error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            report["error"] = error
    if as_json:
        print_json(report)
    else:
        click.echo(f"database: {report['database']}")
        click.echo(f"server:   {_server_line(report)}")
        click.echo(f"schema:   {_schema_line(report)}")
    if report["kind"] == "url" and not report["reachable"]:
        raise WorkFailed(f"cannot reach the database: {error}")


def _server_line(report: dict) -> str:
    if report["kind"] == "embedded" and not report["running"]:
        made = "initialised" if report["initialised"] else "not created yet"
        return f"not running ({made}; the next jobqueue command starts it)"
    if not report.get("reachable"):
        return f"unreachable ({report.get('error')})"
    version = report["server_version"]
    line = f"reachable, PostgreSQL {version // 10000}.{version % 10000}"
    if report["kind"] == "embedded":
        line = f"running, pid {report['pid']}, {report['address']}; {line}"
    return line


def _schema_line(report: dict) -> str:
    if not report.get("reachable"):
        return f"unknown ({report['available']} migration(s) available)"
    applied, pending, available = report["applied"], report["pending"], report["available"]
    if not pending:
        return f"version {available}, {len(applied)} of {available} migrations applied (up to date)"
    return (f"version {max(applied, default=0)}, {len(applied)} of {len(applied) + len(pending)}"
            f" applied; pending {', '.join(map(str, pending))} (run `jobqueue migrate`)")


@db_group.command("stop")
def stop() -> None:
    """Stop the embedded server (fast shutdown). With DATABASE_URL set there is nothing of
    ours to stop: exit 2."""
    from jobqueue.db import embedded

    url = settings.DATABASE_URL.get()
    if url:
        raise UserError(f"DATABASE_URL is set ({db.redact(url)}): "
                        "jobqueue does not manage that server, so there is nothing to stop")
    pgdata = embedded.pgdata_dir()
    pid = embedded.stop(pgdata)
    if pid is None:
        click.echo(f"the embedded Postgres in {pgdata} is not running; nothing to stop")
    else:
        click.echo(f"stopped the embedded Postgres in {pgdata} (pid {pid})")
