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



def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """`rows` as an aligned text table under a header: columns (key, heading); numbers are
    right-aligned, everything else left-aligned, None shown as "-"."""
    texts = [[cell(r.get(key)) for key, _ in columns] for r in rows]
    numeric = [all(isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)
                   for r in rows if r.get(key) is not None) for key, _ in columns]
    widths = [max([len(h)] + [len(t[i]) for t in texts]) for i, (_, h) in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    return "\n".join([line([h for _, h in columns])] + [line(t) for t in texts])


def duration(seconds: float | None) -> str:
    """8.3s, 4m12s, 2h05m, 3d04h: short and readable."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}s"
    return str(value)

