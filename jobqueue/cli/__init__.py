"""The `jobqueue` command: the root group and its entry point; each command group lives in a
module of its own beside this one (worker, jobs, batch, status, tokens, quotas, budgets, admin,
demo, bench, db, schedules, webhooks, alerts, queues).

Every option can also come from the environment: JOBQUEUE_<COMMAND>_<OPTION>, e.g.
JOBQUEUE_WORKER_CONCURRENCY=50 (click's auto_envvar_prefix); the defaults come from
jobqueue/settings.py, as do the variables of the README's table (LOG_LEVEL, LOG_FORMAT, PORT...).
Exit codes: 0 ok, 1 the work failed (or the database is unreachable), 2 bad usage or input.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click
import psycopg

from jobqueue import logs, settings, signals
from jobqueue.cli.common import GLOBAL_ARGS, option_args
from jobqueue.errors import JobqueueError

# Each command and the module that defines it, imported only when that command runs: a
# worker must not pay for the demo's imports (openai, the simulator, Flask): importing every
# command up front added 1.7 s to each worker's start.
COMMANDS = {
    "migrate": "jobqueue.cli.admin:migrate",
    "web": "jobqueue.cli.admin:web",
    "worker": "jobqueue.cli.worker:worker",
    "enqueue": "jobqueue.cli.jobs:enqueue",
    "jobs": "jobqueue.cli.jobs:jobs",
    "dead": "jobqueue.cli.jobs:dead",
    "status": "jobqueue.cli.status:status",
    "batch": "jobqueue.cli.batch:batch",
    "tokens": "jobqueue.cli.tokens:tokens",
    "keys": "jobqueue.cli.keys:keys",
    "quotas": "jobqueue.cli.quotas:quotas_group",
    "budgets": "jobqueue.cli.budgets:budgets",
    "demo": "jobqueue.cli.demo:demo_command",
    "bench": "jobqueue.cli.bench:bench_command",
    "db": "jobqueue.cli.db:db_group",
    "schedules": "jobqueue.cli.schedules:schedules",
    "campaigns": "jobqueue.cli.campaigns:campaigns",
    "webhooks": "jobqueue.cli.webhooks:webhooks",
    "alerts": "jobqueue.cli.alerts:alerts",
    "queues": "jobqueue.cli.queues:queues",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (see COMMANDS)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup,
             context_settings={"auto_envvar_prefix": "JOBQUEUE", "show_default": True,
                               "help_option_names": ["-h", "--help"]})
@click.option("--log-level", type=click.Choice(list(logging.getLevelNamesMapping()),
                                                case_sensitive=False),
              default=lambda: settings.LOG_LEVEL.get(), show_default="$LOG_LEVEL or INFO",
              help="DEBUG shows every job.")
@click.option("--log-format", type=click.Choice(["json", "console"]),
              default=lambda: settings.LOG_FORMAT.get(),
              show_default="$LOG_FORMAT, else console on a terminal and json elsewhere")
@click.version_option(settings.VERSION, prog_name="jobqueue")
@click.pass_context
def cli(ctx: click.Context, log_level: str, log_format: str | None) -> None:
    """jobqueue: a Postgres-only job queue for LLM and API workloads."""
    if ctx.invoked_subcommand != "worker":
        signals.release()  # only the worker acts on a stop signal received while starting
    settings.check()  # a bad value anywhere in the environment fails now, naming itself
    level, fmt = logs.configure(log_level, log_format)
    # What a child process needs to run as this one does (worker --processes passes it on):
    # every global option, with the values in force (the format this terminal chose, too).
    ctx.meta[GLOBAL_ARGS] = option_args(ctx.command,
                                        ctx.params | {"log_level": level, "log_format": fmt})

def main() -> None:
    # Bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape), which no
    # database text can hold: refuse them here, once, rather than as a traceback wherever an
    # argument meets psycopg or a file name.
    for i, arg in enumerate(sys.argv[1:], 1):
        if any("\ud800" <= ch <= "\udfff" for ch in arg):
            click.echo(f"Error: argument {i} ({arg.encode('utf-8', 'replace').decode()!r}) "
                       "is not valid UTF-8", err=True)
            sys.exit(2)
    try:
        cli.main(prog_name="jobqueue", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except JobqueueError as exc:
        # Ours and raised on purpose (a wrong jobqueue.toml or environment variable, a job we
        # refuse, a task whose decorator disagrees with the routing table): bad input, one
        # line, no traceback.
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(f"Error: cannot reach the database: {first}", err=True)
        sys.exit(1)
    except psycopg.errors.UndefinedTable as exc:
        click.echo(f"Error: the database has no jobqueue schema ({str(exc).splitlines()[0]}); "
                   "run `jobqueue migrate`", err=True)
        sys.exit(1)
    except psycopg.Error as exc:
        click.echo(f"Error: database: {str(exc).strip().splitlines()[0]}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
