"""The `jobqueue` command: the root group and its entry point; each command group lives in a
module of its own beside this one (worker, jobs, batch, status, tokens, admin, demo, bench).

Every option can also come from the environment: JOBQUEUE_<COMMAND>_<OPTION>, e.g.
JOBQUEUE_WORKER_CONCURRENCY=50 (click's auto_envvar_prefix); the defaults come from
jobqueue/settings.py, as do the variables of the README's table (LOG_LEVEL, LOG_FORMAT, PORT...).
Exit codes: 0 ok, 1 the work failed (or the database is unreachable), 2 bad usage or input.
"""

from __future__ import annotations

import logging
import sys

import click
import psycopg

from jobqueue import logs, settings, signals
from jobqueue.cli.common import GLOBAL_ARGS, UserError, option_args


@click.group(context_settings={"auto_envvar_prefix": "JOBQUEUE", "show_default": True,
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


def _register() -> None:
    """Attach every command group (one module each) to the root command."""
    from jobqueue.cli import admin, batch, bench, demo, jobs, status, tokens, worker

    for command in (admin.migrate, admin.web, worker.worker, jobs.enqueue, jobs.jobs, jobs.dead,
                    status.status, batch.batch, tokens.tokens, demo.demo_command,
                    bench.bench_command):
        cli.add_command(command)


_register()


def main() -> None:
    try:
        cli.main(prog_name="jobqueue", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except settings.SettingError as exc:
        UserError(str(exc)).show()
        sys.exit(UserError.exit_code)
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
