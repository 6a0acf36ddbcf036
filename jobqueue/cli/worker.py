"""`jobqueue worker`: run a worker (or several, with --processes) for a queue or a platform.

The option defaults are the worker's own (settings.WORKER_DEFAULTS). A stop signal received
while the command starts is kept (jobqueue/signals.py) and acted on once the worker, or the
supervisor, is ready: a deploy that stops a worker it has just started gets a clean exit 0.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys

import click
from click.core import ParameterSource

from jobqueue import settings, signals
from jobqueue.cli.common import (
    FiniteFloat,
    UserError,
    database_url,
    global_args,
    option_args,
    platform_runtime,
)

DEFAULTS = settings.WORKER_DEFAULTS
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")  # what --import may name


def _queue_spec(value: str) -> tuple[str, int | None]:
    """NAME or NAME:CONCURRENCY."""
    from jobqueue.profiles import parse_spec

    try:
        return parse_spec(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


# Where an option's value counts as given, and so wins over the profile's.
_EXPLICIT = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _with_profile(ctx: click.Context, name: str) -> dict:
    """The command's parameters with the profile's values filled in wherever the command line
    (or a JOBQUEUE_WORKER_* variable) gave none. The profile's values pass through each
    option's own type and range, and a bad one is named by file, table and field."""
    from jobqueue import profiles

    profile = profiles.get(name)
    values = dict(ctx.params)
    given: dict[str, tuple[str, object]] = {
        "queues": ("queues", profile.specs(profile.queues)),
        "platforms": ("platforms", profile.specs(profile.platforms)),
        "processes": ("processes", profile.processes),
        "imports": ("import", profile.imports),
    } | {key: (key, value) for key, value in profile.options.items()}
    options = {p.name: p for p in ctx.command.params}
    for param_name, (key, value) in given.items():
        if value in (None, ()) or ctx.get_parameter_source(param_name) in _EXPLICIT:
            continue
        try:
            values[param_name] = options[param_name].type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise UserError(f"{profile.where(key)}: {exc.message}") from None
    return values


@click.command()
@click.option("--queue", "-q", "queues", multiple=True, metavar="NAME[:N]",
              help=f"A queue to work, with its own concurrency N; repeatable (default: "
                   f"{DEFAULTS['queue']!r}).")
@click.option("--platform", "platforms", multiple=True, metavar="NAME[:N]",
              help="A platform of jobqueue.toml to work (its queue has the platform's name), "
                   "with N calls in flight (default: the platform's); repeatable.")
@click.option("--concurrency", "-c", type=click.IntRange(1, 10000), default=None,
              help=f"Jobs in flight per queue without a :N (default {DEFAULTS['concurrency']}, "
                   "or the platform's).")
@click.option("--processes", "-p", type=click.IntRange(1, 256), default=1,
              help="Worker processes to run and supervise.")
@click.option("--import", "imports", multiple=True, metavar="MODULE",
              help="Module(s) defining tasks; repeatable.")
@click.option("--lease-seconds", type=FiniteFloat(0.5), default=DEFAULTS["lease_seconds"],
              help="A crashed worker's jobs come back after this long.")
@click.option("--poll-seconds", type=FiniteFloat(0.01), default=DEFAULTS["poll_seconds"],
              help="Look for work at least this often (LISTEN wakes sooner).")
@click.option("--listen/--poll-only", default=DEFAULTS["listen"],
              help="--poll-only: no LISTEN (behind PgBouncer in transaction mode without "
                   "JOBQUEUE_LISTEN_DATABASE_URL).")
@click.option("--grace-seconds", type=FiniteFloat(0), default=DEFAULTS["grace_seconds"],
              help="On SIGTERM, how long in-flight jobs may finish before being handed back.")
@click.option("--claim-batch", type=click.IntRange(1, 10000), default=DEFAULTS["claim_batch"])
@click.option("--maintenance-seconds", type=FiniteFloat(0.1),
              default=DEFAULTS["maintenance_seconds"])
@click.option("--retention-seconds", type=FiniteFloat(0),
              default=DEFAULTS["retention_seconds"],
              help="Finished jobs are pruned after this long.")
@click.option("--retry-base-seconds", type=FiniteFloat(0),
              default=DEFAULTS["retry_base_seconds"],
              help="A failed job's first retry waits about this long; it doubles per attempt.")
@click.option("--retry-max-seconds", type=FiniteFloat(0),
              default=DEFAULTS["retry_max_seconds"], help="The longest retry delay.")
@click.option("--prefetch", type=click.IntRange(0, 10000), default=DEFAULTS["prefetch"],
              help="Jobs per queue claimed ahead of free slots, started as slots free "
                   "(for many short I/O-bound jobs; 0: off).")
@click.option("--connect-timeout", type=FiniteFloat(0), default=DEFAULTS["connect_timeout"],
              help="At start, how long to wait for the database before giving up (exit 1).")
@click.option("--until-idle", is_flag=True, default=DEFAULTS["until_idle"],
              help="Drain and exit 0: stop once every queue found nothing runnable and no job "
                   "is in flight (jobs scheduled for later, retries included, do not keep it "
                   "running). For cron services and CI.")
@click.option("--profile", metavar="NAME", default=None,
              help="Take queues, platforms, processes, imports and options from the "
                   "[workers.NAME] table of jobqueue.toml; options given here (or as "
                   "JOBQUEUE_WORKER_* variables) win, option by option.")
@click.pass_context
def worker(ctx, profile, **params) -> None:
    """Run worker process(es) for queues and platforms until SIGTERM (warm stop; a second
    is hard), or with --until-idle until there is nothing left to do. One process serves
    every queue and platform given, each with its own slots:
    `jobqueue worker --queue emails:20 --queue reports:5 --platform openai:50`, or
    `jobqueue worker --profile all` for a [workers.all] table of jobqueue.toml."""
    from jobqueue.worker.config import QueueConfig

    if profile is not None:
        params = _with_profile(ctx, profile)
        del params["profile"]
    queues, platforms, concurrency, processes, imports, grace_seconds, claim_batch = (
        params["queues"], params["platforms"], params["concurrency"], params["processes"],
        params["imports"], params["grace_seconds"], params["claim_batch"])

    wanted: list[QueueConfig] = []
    runtimes = {}
    for spec in platforms:
        name, n = _queue_spec(spec)
        runtime = runtimes[name] = platform_runtime(name)
        if runtime.platform.timeout >= grace_seconds:
            raise UserError(f"platform {name}: timeout ({runtime.platform.timeout}s) must "
                            f"be shorter than --grace-seconds ({grace_seconds}s)")
        wanted.append(QueueConfig(name, n or concurrency or runtime.platform.concurrency,
                                  claim_batch))
    for spec in queues or (() if platforms else (DEFAULTS["queue"],)):
        name, n = _queue_spec(spec)
        if name in runtimes:
            raise UserError(f"--queue {name}: also given as --platform")
        wanted.append(QueueConfig(name, n or concurrency or DEFAULTS["concurrency"],
                                  claim_batch))
    names = [qc.name for qc in wanted]
    if len(set(names)) != len(names):
        raise UserError(f"a queue is given twice: {', '.join(names)}")
    # The task modules are imported here even when children will run the jobs: a module that
    # cannot be imported is bad usage (exit 2, one line), not N children failing in a loop.
    sys.path.insert(0, os.getcwd())
    for module in imports:
        # A name Python refuses ("", ".x": ValueError, TypeError) or a module that cannot be
        # imported (missing, or not valid Python) is bad usage. A module that raises as it
        # runs is a crash of the user's code: its traceback says where (exit 1).
        if not MODULE_NAME.fullmatch(module):
            raise UserError(f"--import {module!r}: not a module name (such as myapp.tasks)")
        try:
            importlib.import_module(module)
        except (ImportError, SyntaxError) as exc:
            raise UserError(f"--import {module}: {exc}") from None
    from jobqueue import routing

    routing.load()  # a bad [tasks] table is bad usage now, not N children failing later
    url = database_url()
    for runtime in runtimes.values():
        runtime.url = url
    if processes > 1:
        from jobqueue.worker.supervisor import supervise

        # Each child gets every option of this command and of the root one (--log-level...),
        # with the profile's values already in (so every child runs what was checked here).
        child = option_args(ctx.command, params | {"processes": 1, "profile": None})
        sys.exit(supervise([*global_args(), ctx.info_name, *child], processes,
                           until_idle=params["until_idle"]))

    from jobqueue import builtin_tasks  # noqa: F401  (registers noop, echo, sleep, fail)
    from jobqueue.tasks import registry
    from jobqueue.worker import WorkerConfig, run_worker

    for problem in routing.unrouted_here(registry.names(), names):
        click.echo(f"warning: {problem}; this worker runs such jobs only when a caller "
                   "names one of its queues", err=True)
    config = WorkerConfig(queues=tuple(wanted), **{
        name: params[name] for name in (
            "lease_seconds", "poll_seconds", "listen", "grace_seconds", "maintenance_seconds",
            "retention_seconds", "retry_base_seconds", "retry_max_seconds", "prefetch",
            "connect_timeout", "until_idle")})
    # A platform's queue runs its LLM kinds and, with --import, the user's own tasks too.
    tasks = {qc.name: registry for qc in wanted}
    for name, runtime in runtimes.items():
        tasks[name] = runtime.registry().merged_with(registry)

    async def on_start() -> None:
        # run_worker calls on_start once its loop handles SIGTERM/SIGINT: a stop requested
        # while the process started reaches the worker now.
        signals.replay()
        for runtime in runtimes.values():
            # Every platform borrows the worker's finish connection: no pool of its own. It
            # also lends itself to ctx.llm(name) in the user's tasks.
            await runtime.start()

    async def on_stop() -> None:
        for runtime in runtimes.values():
            with contextlib.suppress(Exception):
                await runtime.stop()

    run_worker(url, config, tasks, on_start=on_start, on_stop=on_stop,
               gates={name: runtime.claim_gate for name, runtime in runtimes.items()})
    # The loop is closed and its signal handlers gone: a late signal must not kill us now.
    signals.install_early()
    with contextlib.suppress(OSError):  # a supervisor that died took our stderr with it
        sys.stdout.flush()
        sys.stderr.flush()
    # Threads of sync handlers that ignored the stop would keep the interpreter alive; their
    # jobs were handed back, so leave now.
    os._exit(0)
