"""The `jobqueue` command.

Every option can also come from the environment: JOBQUEUE_<COMMAND>_<OPTION>, e.g.
JOBQUEUE_WORKER_CONCURRENCY=50 (click's auto_envvar_prefix). Exit codes: 0 ok, 1 the work
failed (or the database is unreachable), 2 bad usage or input.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from datetime import datetime

import click
import psycopg

from jobqueue import db, logs
from jobqueue.jobs import InvalidJob


class UserError(click.ClickException):
    """Bad usage or input: one line, exit code 2, no traceback."""

    exit_code = 2


class WorkFailed(click.ClickException):
    exit_code = 1


def _url() -> str:
    """The database URL; the embedded server is started (and migrated) when there is none."""
    from jobqueue import migrations

    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    url = db.database_url()
    with db.connect(url) as conn:
        migrations.migrate(conn)
    os.environ["DATABASE_URL"] = url  # children (worker --processes) share the same server
    return url


def _client():
    from jobqueue.client import Client

    url = _url()
    # One direct connection first: it fails at once with the server's own reason, where the
    # pool would wait out its timeout and then say only that it timed out.
    db.connect(url, connect_timeout=10).close()
    return Client(url, max_size=2)


def _print_json(value) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@click.group(context_settings={"auto_envvar_prefix": "JOBQUEUE", "show_default": True,
                               "help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", help="DEBUG shows every job.")
@click.option("--log-format", type=click.Choice(["json", "console"]), default=None,
              envvar="LOG_FORMAT", help="Default: console on a terminal, json elsewhere.")
def cli(log_level: str, log_format: str | None) -> None:
    """jobqueue: a Postgres-only job queue for LLM and API workloads."""
    logs.configure(log_level, log_format)


@cli.command()
def migrate() -> None:
    """Create or update the schema (safe to run concurrently)."""
    from jobqueue import migrations

    url = db.database_url()
    with db.connect(url) as conn:
        ran = migrations.migrate(conn)
    click.echo(f"applied {len(ran)} migration(s)" if ran else "schema is up to date")


@cli.command()
@click.option("--queue", "-q", default="default", help="The queue to work.")
@click.option("--concurrency", "-c", type=click.IntRange(1, 10000), default=10,
              help="Jobs in flight per process.")
@click.option("--processes", "-p", type=click.IntRange(1, 256), default=1,
              help="Worker processes to run and supervise.")
@click.option("--import", "imports", multiple=True, metavar="MODULE",
              help="Module(s) defining tasks; repeatable.")
@click.option("--lease-seconds", type=click.FloatRange(0.5), default=30.0,
              help="A crashed worker's jobs come back after this long.")
@click.option("--poll-seconds", type=click.FloatRange(0.01), default=1.0,
              help="Look for work at least this often (LISTEN wakes sooner).")
@click.option("--listen/--poll-only", default=True,
              help="--poll-only for PgBouncer in transaction mode (no LISTEN).")
@click.option("--grace-seconds", type=click.FloatRange(0), default=25.0,
              help="On SIGTERM, how long in-flight jobs may finish before being handed back.")
@click.option("--claim-batch", type=click.IntRange(1, 10000), default=500)
@click.option("--maintenance-seconds", type=click.FloatRange(0.1), default=5.0)
@click.option("--retention-seconds", type=click.FloatRange(0), default=7 * 86400.0,
              help="Finished jobs are pruned after this long.")
@click.option("--retry-base-seconds", type=click.FloatRange(0), default=1.0)
def worker(queue, concurrency, processes, imports, lease_seconds, poll_seconds, listen,
           grace_seconds, claim_batch, maintenance_seconds, retention_seconds,
           retry_base_seconds) -> None:
    """Run worker process(es) for a queue until SIGTERM (warm stop; a second is hard)."""
    url = _url()
    if processes > 1:
        from jobqueue.supervisor import supervise

        args = ["worker", "--queue", queue, "--concurrency", str(concurrency),
                "--processes", "1", "--lease-seconds", str(lease_seconds),
                "--poll-seconds", str(poll_seconds), "--listen" if listen else "--poll-only",
                "--grace-seconds", str(grace_seconds), "--claim-batch", str(claim_batch),
                "--maintenance-seconds", str(maintenance_seconds),
                "--retention-seconds", str(retention_seconds),
                "--retry-base-seconds", str(retry_base_seconds)]
        for module in imports:
            args += ["--import", module]
        sys.exit(supervise(args, processes))

    from jobqueue import builtin_tasks  # noqa: F401  (registers noop, echo, sleep, fail)
    from jobqueue.worker import WorkerConfig, run_worker

    sys.path.insert(0, os.getcwd())
    for module in imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UserError(f"--import {module}: {exc}") from None
    config = WorkerConfig(
        queue=queue, concurrency=concurrency, lease_seconds=lease_seconds,
        poll_seconds=poll_seconds, listen=listen, grace_seconds=grace_seconds,
        claim_batch=claim_batch, maintenance_seconds=maintenance_seconds,
        retention_seconds=retention_seconds, retry_base_seconds=retry_base_seconds)
    run_worker(url, config)
    sys.stdout.flush()
    sys.stderr.flush()
    # Threads of sync handlers that ignored the stop would keep the interpreter alive; their
    # jobs were handed back, so leave now.
    os._exit(0)


@cli.command()
@click.option("--kind", "-k", required=True, help="Task name.")
@click.option("--payload", default="{}", help="JSON payload.")
@click.option("--queue", "-q", default=None, help="Default: the task's queue, else 'default'.")
@click.option("--priority", default=None, help="Integer (lower runs first) or high|normal|low.")
@click.option("--delay", type=click.FloatRange(0), default=None, help="Seconds before it runs.")
@click.option("--max-attempts", type=click.IntRange(1), default=None)
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None)
@click.option("--idempotency-key", default=None)
@click.option("--owner", default=None)
def enqueue(kind, payload, queue, priority, delay, max_attempts, timeout, idempotency_key,
            owner) -> None:
    """Enqueue one job and print its id."""
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise UserError(f"--payload: not valid JSON ({exc})") from None
    with _client() as jq:
        try:
            job_id = jq.enqueue(kind, data, queue=queue, priority=priority, delay=delay,
                                max_attempts=max_attempts, timeout=timeout,
                                idempotency_key=idempotency_key, owner=owner)
        except InvalidJob as exc:
            raise UserError(str(exc).removeprefix("job 0: ")) from None
    click.echo(job_id)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Per queue: waiting, scheduled, running, succeeded, dead, cancelled; oldest wait."""
    with _client() as jq:
        rows = jq.status()
        workers = jq.workers()
    if as_json:
        _print_json({"queues": rows, "workers": workers})
        return
    columns = ("queue", "waiting", "scheduled", "running", "succeeded", "dead", "cancelled",
               "oldest_waiting_seconds", "finished_last_minute")
    headers = ("QUEUE", "WAITING", "SCHEDULED", "RUNNING", "SUCCEEDED", "DEAD", "CANCELLED",
               "OLDEST WAIT", "DONE/MIN")
    table = [headers] + [tuple(_cell(r[c]) for c in columns) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    if not rows:
        click.echo("(no jobs yet)")
    click.echo(f"\n{len(workers)} worker process(es)" + "".join(
        f"\n  {w['queue']}: pid {w['pid']} on {w['host']}, {w['in_flight']} in flight"
        for w in workers))


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}s"
    return str(value)


@cli.group()
def jobs() -> None:
    """Look at and act on one job."""


def _job_or_fail(jq, job_id: int):
    job = jq.get(job_id)
    if job is None:
        raise UserError(f"job {job_id}: no such job")
    return job


@jobs.command("show")
@click.argument("job_id", type=int)
def jobs_show(job_id: int) -> None:
    """Print a job with its state, attempts, errors and result (JSON)."""
    with _client() as jq:
        _print_json(_job_or_fail(jq, job_id).to_dict())


@jobs.command("retry")
@click.argument("job_id", type=int)
def jobs_retry(job_id: int) -> None:
    """Run a dead or cancelled job again."""
    with _client() as jq:
        job = _job_or_fail(jq, job_id)
        if not jq.retry(job_id):
            raise UserError(f"job {job_id}: is {job.state}; only dead or cancelled jobs retry")
    click.echo(f"job {job_id}: queued again")


@jobs.command("cancel")
@click.argument("job_id", type=int)
def jobs_cancel(job_id: int) -> None:
    """Cancel a waiting job, or ask a running job's worker to stop it."""
    with _client() as jq:
        outcome = jq.cancel(job_id)
    messages = {"cancelled": "cancelled", "requested": "running: cancellation requested",
                "finished": "already finished; nothing to cancel"}
    if outcome == "not_found":
        raise UserError(f"job {job_id}: no such job")
    click.echo(f"job {job_id}: {messages[outcome]}")


@cli.group()
def dead() -> None:
    """The dead-letter queue: jobs that used every attempt."""


@dead.command("list")
@click.option("--queue", "-q", default=None)
@click.option("--limit", type=click.IntRange(1), default=50)
@click.option("--json", "as_json", is_flag=True)
def dead_list(queue, limit, as_json) -> None:
    with _client() as jq:
        rows = jq.dead(queue, limit)
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        err = r["last_error"] or {}
        when = r["finished_at"].strftime("%Y-%m-%d %H:%M:%S") if isinstance(
            r["finished_at"], datetime) else r["finished_at"]
        click.echo(f"{r['id']}  {r['queue']}  {r['kind']}  attempts={r['attempts']}  {when}  "
                   f"{err.get('type', '?')}: {err.get('message', '')}")
    if not rows:
        click.echo("no dead jobs")


@dead.command("retry")
@click.option("--queue", "-q", default=None)
@click.argument("job_ids", type=int, nargs=-1)
def dead_retry(queue, job_ids) -> None:
    """Retry dead jobs: the given ids, or every one (of --queue)."""
    with _client() as jq:
        ids = jq.retry_dead(queue, list(job_ids) or None)
    click.echo(f"{len(ids)} job(s) queued again")


@dead.command("purge")
@click.option("--queue", "-q", default=None)
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.argument("job_ids", type=int, nargs=-1)
def dead_purge(queue, yes, job_ids) -> None:
    """Delete dead jobs for good: the given ids, or every one (of --queue)."""
    if not job_ids and not yes:
        click.confirm(f"Delete every dead job{f' of {queue}' if queue else ''}?", abort=True)
    with _client() as jq:
        count = jq.purge_dead(queue, list(job_ids) or None)
    click.echo(f"{count} dead job(s) deleted")


def main() -> None:
    try:
        cli.main(prog_name="jobqueue", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
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
