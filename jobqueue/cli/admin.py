"""`jobqueue migrate` and `jobqueue web`: the schema and the web app."""

from __future__ import annotations

import os
import sys

import click

from jobqueue import db
from jobqueue.cli.common import (
    UserError,
    database_url,
)


@click.command()
def migrate() -> None:
    """Create or update the schema (safe to run concurrently)."""
    from jobqueue.db import migrate

    url = db.database_url()
    with db.connect(url) as conn:
        ran = migrate.migrate(conn)
    click.echo(f"applied {len(ran)} migration(s)" if ran else "schema is up to date")


@click.command()
@click.option("--port", type=int, default=None, envvar="PORT", help="Default: $PORT or 8000.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Gunicorn worker processes (default: $WEB_CONCURRENCY or 2).")
def web(port, workers) -> None:
    """Serve the API and dashboard with Gunicorn (gthread, settings in web/gunicorn_conf.py)."""
    import shutil

    from web import SECRET_MISSING, secret_configured

    if not secret_configured():
        raise UserError(SECRET_MISSING)
    url = database_url()
    args = ["gunicorn", "-c", "python:web.gunicorn_conf", "web:create_app()"]
    if port:
        args += ["--bind", f"0.0.0.0:{port}"]
    if workers:
        args += ["--workers", str(workers)]
    exe = shutil.which("gunicorn") or os.path.join(os.path.dirname(sys.executable), "gunicorn")
    os.environ["DATABASE_URL"] = url
    os.execv(exe, args)

