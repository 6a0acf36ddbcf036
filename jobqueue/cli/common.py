"""What every command shares: errors for people (exit codes 1 and 2), the database URL (the
embedded server when there is none), a client, the configured platforms, output
helpers."""

from __future__ import annotations

import json

import click

from jobqueue import db, settings


class UserError(click.ClickException):
    """Bad usage or input: one line, exit code 2, no traceback."""

    exit_code = 2


class WorkFailed(click.ClickException):
    exit_code = 1


def database_url() -> str:
    """The database URL; the embedded server is started (and migrated) when there is none."""
    from jobqueue.db import migrate

    url = settings.DATABASE_URL.get()
    if url:
        return url
    url = db.database_url()
    with db.connect(url) as conn:
        migrate.migrate(conn)
    settings.DATABASE_URL.export(url)  # children (worker --processes) share the same server
    return url


def open_client():
    from jobqueue.client import Client

    url = database_url()
    # One direct connection first: it fails at once with the server's own reason, where the
    # pool would wait out its timeout and then say only that it timed out.
    db.connect(url, connect_timeout=10).close()
    return Client(url, max_size=2)


def load_platform(name: str):
    from jobqueue.llm import platforms

    try:
        found = platforms.load()
    except platforms.ConfigError as exc:
        raise UserError(str(exc)) from None
    if name not in found:
        raise UserError(f"{platforms.config_path()}: no platform {name!r} "
                        f"(known: {', '.join(sorted(found))})")
    return found[name]


def platform_runtime(name: str):
    from jobqueue.llm.platforms import ConfigError
    from jobqueue.llm.runtime import PlatformRuntime

    try:
        return PlatformRuntime(load_platform(name), "")
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def print_json(value) -> None:
    click.echo(json.dumps(value, indent=2, default=str))



def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}s"
    return str(value)

