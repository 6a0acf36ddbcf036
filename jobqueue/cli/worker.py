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


@click.command()
@click.option("--queue", "-q", default=None,
              help=f"The queue to work (default: {DEFAULTS['queue']!r}).")
@click.option("--platform", default=None,
              help="Work a platform of jobqueue.toml (its queue has the platform's name).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 10000), default=None,
              help=f"Jobs in flight per process (default {DEFAULTS['concurrency']}, or the "
                   "platform's).")
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
@click.pass_context
def worker(ctx, queue, platform, concurrency, processes, imports, lease_seconds, poll_seconds,
           listen, grace_seconds, claim_batch, maintenance_seconds, retention_seconds,
           retry_base_seconds, retry_max_seconds) -> None:
    """Run worker process(es) for a queue or a platform until SIGTERM (warm stop; a second
    is hard)."""
    if queue and platform:
        raise UserError("give --queue or --platform, not both")
    runtime = None
    if platform:
        runtime = platform_runtime(platform)
        queue = platform
        concurrency = concurrency or runtime.platform.concurrency
        if runtime.platform.timeout >= grace_seconds:
            raise UserError(f"platform {platform}: timeout ({runtime.platform.timeout}s) must "
                            f"be shorter than --grace-seconds ({grace_seconds}s)")
    queue = queue or DEFAULTS["queue"]
    concurrency = concurrency or DEFAULTS["concurrency"]
    # The task modules are imported here even when children will run the jobs: a module that
    # cannot be imported is bad usage (exit 2, one line), not N children failing in a loop.
    sys.path.insert(0, os.getcwd())
    for module in imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UserError(f"--import {module}: {exc}") from None
    url = database_url()
    if runtime is not None:
        runtime.url = url
    if processes > 1:
        from jobqueue.worker.supervisor import supervise

        # Each child gets every option of this command and of the root one (--log-level...).
        child = option_args(ctx.command, ctx.params | {"processes": 1})
        sys.exit(supervise([*global_args(), ctx.info_name, *child], processes))

    from jobqueue import builtin_tasks  # noqa: F401  (registers noop, echo, sleep, fail)
    from jobqueue.worker import WorkerConfig, run_worker

    config = WorkerConfig(
        queue=queue, concurrency=concurrency, lease_seconds=lease_seconds,
        poll_seconds=poll_seconds, listen=listen, grace_seconds=grace_seconds,
        claim_batch=claim_batch, maintenance_seconds=maintenance_seconds,
        retention_seconds=retention_seconds, retry_base_seconds=retry_base_seconds,
        retry_max_seconds=retry_max_seconds)

    async def on_start() -> None:
        # run_worker calls on_start once its loop handles SIGTERM/SIGINT: a stop requested
        # while the process started reaches the worker now.
        signals.replay()
        if runtime is not None:
            await runtime.start()

    if runtime is not None:
        run_worker(url, config, runtime.registry(), on_start=on_start, on_stop=runtime.stop)
    else:
        run_worker(url, config, on_start=on_start)
    # The loop is closed and its signal handlers gone: a late signal must not kill us now.
    signals.install_early()
    with contextlib.suppress(OSError):  # a supervisor that died took our stderr with it
        sys.stdout.flush()
        sys.stderr.flush()
    # Threads of sync handlers that ignored the stop would keep the interpreter alive; their
    # jobs were handed back, so leave now.
    os._exit(0)
