"""`jobqueue migrate` and `jobqueue web`: the schema and the web app."""

from __future__ import annotations

import os
import sys

import click

from jobqueue import db, settings
from jobqueue.cli.common import (
    UserError,
    database_url,
)


@click.command()
def migrate() -> None:
    """Create or update the schema (safe to run concurrently), then apply jobqueue.toml's
    [quotas] when the file exists (see `jobqueue quotas apply`). As the Procfile's `release`
    line under `honcho start`, it then stays up until honcho stops it."""
    from jobqueue import config, quotas
    from jobqueue.db import migrate

    url = db.database_url()
    with db.connect(url) as conn:
        ran = migrate.migrate(conn)
        applied = None
        if config.config_path().exists():
            applied = quotas.apply_config(conn, quotas.load())
    click.echo(f"applied {len(ran)} migration(s)" if ran else "schema is up to date")
    if applied and (applied["set"] or applied["removed"]):
        click.echo(f"quotas from {config.config_path()}: {len(applied['set'])} set"
                   + (f", removed {', '.join(applied['removed'])}" if applied["removed"] else ""))
    # Only the Procfile's release line (honcho names it "release.1"): a `migrate && gunicorn`
    # line under honcho must go on to its next command.
    process = settings.HONCHO_PROCESS_NAME.get() or ""
    if process.partition(".")[0] == "release":
        _hold_until_stopped(process)


def _hold_until_stopped(name: str) -> None:
    """`honcho start` runs the Procfile's `release` line as one of its processes, and stops
    every process as soon as one exits: a release step that exits after migrating took web
    and the workers down a second after they started. On a host (Heroku's release phase) the
    line exits as it should; under honcho (which names each process in HONCHO_PROCESS_NAME)
    it stays up, doing nothing, until honcho stops it, and then exits 0."""
    import signal

    from jobqueue.signals import STOP_SIGNALS

    # Blocked, then waited for: no window in which a stop signal could be missed.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    click.echo(f"{name}: migrations done; staying up while honcho runs the other processes "
               "(on a host the release phase ends here)")
    got = signal.sigwait(set(STOP_SIGNALS))
    click.echo(f"{name}: stopped by {signal.Signals(got).name}")


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=lambda: settings.PORT.get(),
              show_default=f"$PORT or {settings.PORT.default}")
@click.option("--workers", type=click.IntRange(1), default=lambda: settings.WEB_CONCURRENCY.get(),
              show_default=f"$WEB_CONCURRENCY or {settings.WEB_CONCURRENCY.default}",
              help="Gunicorn worker processes.")
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
    settings.DATABASE_URL.export(url)
    os.execv(exe, args)

