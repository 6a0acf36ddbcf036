"""`jobqueue worker`: run a worker (or several, with --processes) for a queue or a platform.

The option defaults are the worker's own (settings.WORKER_DEFAULTS). A stop signal received
while the command starts is kept (jobqueue/signals.py) and acted on once the worker, or the
supervisor, is ready: a deploy that stops a worker it has just started gets a clean exit 0.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

import click

from jobqueue import settings, signals
from jobqueue.cli.common import (
    UserError,
    database_url,
    global_args,
    option_args,
    platform_runtime,
)

DEFAULTS = settings.WORKER_DEFAULTS


def _queue_spec(value: str) -> tuple[str, int | None]:
    """NAME or NAME:CONCURRENCY."""
    name, sep, number = value.partition(":")
    if not name or (sep and not number.isdigit()) or (sep and int(number) < 1):
        raise click.BadParameter(f"{value!r}: expected NAME or NAME:CONCURRENCY (a whole "
                                 "number of at least 1)")
    return name, int(number) if sep else None


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
@click.option("--lease-seconds", type=click.FloatRange(0.5), default=DEFAULTS["lease_seconds"],
              help="A crashed worker's jobs come back after this long.")
@click.option("--poll-seconds", type=click.FloatRange(0.01), default=DEFAULTS["poll_seconds"],
              help="Look for work at least this often (LISTEN wakes sooner).")
@click.option("--listen/--poll-only", default=DEFAULTS["listen"],
              help="--poll-only for PgBouncer in transaction mode (no LISTEN).")
@click.option("--grace-seconds", type=click.FloatRange(0), default=DEFAULTS["grace_seconds"],
              help="On SIGTERM, how long in-flight jobs may finish before being handed back.")
@click.option("--claim-batch", type=click.IntRange(1, 10000), default=DEFAULTS["claim_batch"])
@click.option("--maintenance-seconds", type=click.FloatRange(0.1),
              default=DEFAULTS["maintenance_seconds"])
@click.option("--retention-seconds", type=click.FloatRange(0),
              default=DEFAULTS["retention_seconds"],
              help="Finished jobs are pruned after this long.")
@click.option("--retry-base-seconds", type=click.FloatRange(0),
              default=DEFAULTS["retry_base_seconds"],
              help="A failed job's first retry waits about this long; it doubles per attempt.")
@click.option("--retry-max-seconds", type=click.FloatRange(0),
              default=DEFAULTS["retry_max_seconds"], help="The longest retry delay.")
@click.option("--prefetch", type=click.IntRange(0, 10000), default=DEFAULTS["prefetch"],
              help="Jobs per queue claimed ahead of free slots, started as slots free "
                   "(for many short I/O-bound jobs; 0: off).")
@click.option("--connect-timeout", type=click.FloatRange(0), default=DEFAULTS["connect_timeout"],
              help="At start, how long to wait for the database before giving up (exit 1).")
@click.pass_context
def worker(ctx, queues, platforms, concurrency, processes, imports, lease_seconds,
           poll_seconds, listen, grace_seconds, claim_batch, maintenance_seconds,
           retention_seconds, retry_base_seconds, retry_max_seconds, prefetch,
           connect_timeout) -> None:
    """Run worker process(es) for queues and platforms until SIGTERM (warm stop; a second
    is hard). One process serves every queue and platform given, each with its own slots:
    `jobqueue worker --queue emails:20 --queue reports:5 --platform openai:50`."""
    from jobqueue.worker.config import QueueConfig

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
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UserError(f"--import {module}: {exc}") from None
    from jobqueue import routing

    routing.load()  # a bad [tasks] table is bad usage now, not N children failing later
    url = database_url()
    for runtime in runtimes.values():
        runtime.url = url
    if processes > 1:
        from jobqueue.worker.supervisor import supervise

        # Each child gets every option of this command and of the root one (--log-level...).
        child = option_args(ctx.command, ctx.params | {"processes": 1})
        sys.exit(supervise([*global_args(), ctx.info_name, *child], processes))

    from jobqueue import builtin_tasks  # noqa: F401  (registers noop, echo, sleep, fail)
    from jobqueue.tasks import registry
    from jobqueue.worker import WorkerConfig, run_worker

    for problem in routing.unrouted_here(registry.names(), names):
        click.echo(f"warning: {problem}; this worker runs such jobs only when a caller "
                   "names one of its queues", err=True)
    config = WorkerConfig(
        queues=tuple(wanted), lease_seconds=lease_seconds,
        poll_seconds=poll_seconds, listen=listen, grace_seconds=grace_seconds,
        maintenance_seconds=maintenance_seconds, retention_seconds=retention_seconds,
        retry_base_seconds=retry_base_seconds, retry_max_seconds=retry_max_seconds,
        prefetch=prefetch, connect_timeout=connect_timeout)
    # A platform's queue runs its LLM kinds and, with --import, the user's own tasks too.
    tasks = {qc.name: registry for qc in wanted}
    for name, runtime in runtimes.items():
        tasks[name] = runtime.registry().merged_with(registry)

    async def on_start() -> None:
        # run_worker calls on_start once its loop handles SIGTERM/SIGINT: a stop requested
        # while the process started reaches the worker now.
        signals.replay()
        for runtime in runtimes.values():
            await runtime.start()

    async def on_stop() -> None:
        for runtime in runtimes.values():
            with contextlib.suppress(Exception):
                await runtime.stop()

    run_worker(url, config, tasks, on_start=on_start, on_stop=on_stop)
    # The loop is closed and its signal handlers gone: a late signal must not kill us now.
    signals.install_early()
    with contextlib.suppress(OSError):  # a supervisor that died took our stderr with it
        sys.stdout.flush()
        sys.stderr.flush()
    # Threads of sync handlers that ignored the stop would keep the interpreter alive; their
    # jobs were handed back, so leave now.
    os._exit(0)
