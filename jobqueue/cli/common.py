"""What every command shares: errors for people (exit codes 1 and 2), the database URL (the
embedded server when there is none), a client or one of its connections, the configured
platforms, the global options as arguments for a child process, output helpers (JSON, the
table, a list command's output)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import click

from jobqueue import db, settings

# ctx.meta key: the root command's options as arguments, e.g. ["--log-level", "DEBUG", ...].
GLOBAL_ARGS = "jobqueue.global_args"


# A job, batch, token, webhook or delivery id: a bigint, so a larger number is bad usage
# (exit 2) rather than a database error (exit 1).
ID = click.IntRange(max=2**63 - 1)


class UserError(click.ClickException):
    """Bad usage or input: one line, exit code 2, no traceback."""

    exit_code = 2


class WorkFailed(click.ClickException):
    exit_code = 1


def json_option(text: str | None, option: str, default: Any = None) -> Any:
    """The JSON an option gives (`default` when it is absent); UserError naming the option
    when it is not JSON or is nested too deeply for the decoder (a RecursionError)."""
    if text is None:
        return default
    try:
        return json.loads(text)
    except RecursionError:
        raise UserError(f"{option}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise UserError(f"{option}: not valid JSON ({exc})") from None


class FiniteFloat(click.FloatRange):
    """A float within [min, max] (settings.MAX_SECONDS unless given) that is a number:
    click's FloatRange lets NaN through (it compares false with both bounds), and an
    unbounded one lets infinity through (a lease of inf seconds overflowed Postgres's
    timestamps)."""

    def __init__(self, min=None, max=settings.MAX_SECONDS, **kwargs):
        super().__init__(min, max, **kwargs)

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if number != number:  # NaN
            self.fail(f"{value!r} is not a number.", param, ctx)
        return number


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


@contextlib.contextmanager
def connection() -> Iterator:
    """A connection of a fresh client (`open_client`), for a command that only runs queries."""
    with open_client() as jq, jq.pool.connection() as conn:
        yield conn


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


def print_rows(rows: list[dict], as_json: bool, empty: str | None,
               render: Callable[[list[dict]], str]) -> None:
    """A list command's output: the rows as JSON with --json (as read, whatever `render`
    adds), else `empty` when there are none (nothing when None), else `render(rows)` (a
    `table`, or `lines`)."""
    if as_json:
        print_json(rows)
    elif not rows:
        if empty is not None:
            click.echo(empty)
    else:
        click.echo(render(rows))


def lines(line: Callable[[dict], str]) -> Callable[[list[dict]], str]:
    """A `print_rows` render of one line per row."""
    return lambda rows: "\n".join(line(r) for r in rows)


class Column(NamedTuple):
    """A column of `table`: the row key, its heading, and how its values read.

    kind: "auto" (numbers right-aligned, the rest left-aligned), "duration" (seconds shown
    as `8m17s`, right-aligned), "text" (left-aligned whatever the values). `style`, when
    given, names a colour per value (e.g. a state), used on a terminal only."""

    key: str
    heading: str
    kind: str = "auto"
    style: Callable[[Any], str | None] | None = None


def use_colour(stream=None) -> bool:
    """Colour on a terminal only, and never with NO_COLOR set (https://no-color.org)."""
    stream = stream or sys.stdout
    return (not settings.NO_COLOR.get() and hasattr(stream, "isatty") and stream.isatty())


def table(rows: list[dict], columns: list, colour: bool | None = None) -> str:
    """`rows` as an aligned text table under a header, the one table of the CLI. `columns`
    are `Column`s or (key, heading[, kind]) tuples. Numbers and durations are right-aligned,
    everything else left-aligned, None shown as "-". Colour (a bold header, `style`d cells)
    only on a terminal unless `colour` says otherwise; widths are measured without it."""
    cols = [c if isinstance(c, Column) else Column(*c) for c in columns]
    colour = use_colour() if colour is None else colour

    def shown(value, col: Column) -> str:
        if col.kind == "duration":
            return "-" if value is None else duration(value)
        return cell(value)

    texts = [[shown(r.get(c.key), c) for c in cols] for r in rows]
    right = [c.kind == "duration" or (c.kind == "auto" and all(
        _is_number(r.get(c.key)) for r in rows if r.get(c.key) is not None)) for c in cols]
    widths = [max([len(c.heading)] + [len(t[i]) for t in texts]) for i, c in enumerate(cols)]

    def line(values: list[str], styles: list[str | None], bold: bool = False) -> str:
        parts = []
        for v, w, r, st in zip(values, widths, right, styles, strict=True):
            text = v.rjust(w) if r else v.ljust(w)
            if colour and (st or bold):
                text = click.style(text, fg=st, bold=bold)
            parts.append(text)
        return "  ".join(parts).rstrip()

    out = [line([c.heading for c in cols], [None] * len(cols), bold=True)]
    for r, t in zip(rows, texts, strict=True):
        out.append(line(t, [c.style(r.get(c.key)) if c.style else None for c in cols]))
    return "\n".join(out)


STATE_COLOURS = {"succeeded": "green", "dead": "red", "retrying": "yellow",
                 "running": "cyan", "cancelled": "bright_black", "paused": "yellow",
                 "rate-limited": "magenta", "disabled": "red", "blocked": "yellow"}


def state_colour(value) -> str | None:
    """The colour of a state word (dead red, succeeded green, ...), for `Column.style`."""
    return STATE_COLOURS.get(str(value).split(":")[0]) if value is not None else None


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
    """A value as table text: None "-", floats with one decimal (durations use `duration`)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)
