"""What every command shares: errors for people (exit codes 1 and 2), the database URL (the
embedded server when there is none), a client, the configured platforms, the global options
as arguments for a child process, output helpers."""

from __future__ import annotations

import json

import click

from jobqueue import db, settings

# ctx.meta key: the root command's options as arguments, e.g. ["--log-level", "DEBUG", ...].
GLOBAL_ARGS = "jobqueue.global_args"


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


def option_args(command: click.Command, values: dict) -> list[str]:
    """Command-line arguments that give each option of `command` the value in `values`
    (options whose value is None are left out). Every option of `command` must be in
    `values`, so a new global option cannot be forgotten by `worker --processes`."""
    args: list[str] = []
    for param in command.params:
        if not isinstance(param, click.Option) or not param.expose_value:
            continue
        value = values[param.name]
        if value is None:
            continue
        if param.is_flag and param.secondary_opts:
            args.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            if value:
                args.append(param.opts[0])
        elif param.multiple:
            for item in value:
                args += [param.opts[0], str(item)]
        else:
            args += [param.opts[0], str(value)]
    return args


def global_args() -> list[str]:
    """The root command's options, as given or resolved, for a child `jobqueue` process."""
    return list(click.get_current_context().meta.get(GLOBAL_ARGS, []))


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

