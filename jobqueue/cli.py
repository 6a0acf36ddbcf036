"""The `jobqueue` command.

Every option can also come from the environment: JOBQUEUE_<COMMAND>_<OPTION>, e.g.
JOBQUEUE_WORKER_CONCURRENCY=50 (click's auto_envvar_prefix). Exit codes: 0 ok, 1 the work
failed (or the database is unreachable), 2 bad usage or input.
"""

from __future__ import annotations

import contextlib
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


def _platform(name: str):
    from jobqueue import platforms

    try:
        found = platforms.load()
    except platforms.ConfigError as exc:
        raise UserError(str(exc)) from None
    if name not in found:
        raise UserError(f"{platforms.config_path()}: no platform {name!r} "
                        f"(known: {', '.join(sorted(found))})")
    return found[name]


def _platform_runtime(name: str):
    from jobqueue.llm import PlatformRuntime
    from jobqueue.platforms import ConfigError

    try:
        return PlatformRuntime(_platform(name), "")
    except ConfigError as exc:
        raise UserError(str(exc)) from None


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
@click.option("--queue", "-q", default=None, help="The queue to work (default: 'default').")
@click.option("--platform", default=None,
              help="Work a platform of jobqueue.toml (its queue has the platform's name).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 10000), default=None,
              help="Jobs in flight per process (default 10, or the platform's).")
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
def worker(queue, platform, concurrency, processes, imports, lease_seconds, poll_seconds,
           listen, grace_seconds, claim_batch, maintenance_seconds, retention_seconds,
           retry_base_seconds) -> None:
    """Run worker process(es) for a queue or a platform until SIGTERM (warm stop; a second
    is hard)."""
    if queue and platform:
        raise UserError("give --queue or --platform, not both")
    runtime = None
    if platform:
        runtime = _platform_runtime(platform)
        queue = platform
        concurrency = concurrency or runtime.platform.concurrency
        if runtime.platform.timeout >= grace_seconds:
            raise UserError(f"platform {platform}: timeout ({runtime.platform.timeout}s) must "
                            f"be shorter than --grace-seconds ({grace_seconds}s)")
    queue = queue or "default"
    concurrency = concurrency or 10
    url = _url()
    if runtime is not None:
        runtime.url = url
    if processes > 1:
        from jobqueue.supervisor import supervise

        target = ["--platform", platform] if platform else ["--queue", queue]
        args = ["worker", *target, "--concurrency", str(concurrency),
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
    if runtime is not None:
        run_worker(url, config, runtime.registry(), on_start=runtime.start,
                   on_stop=runtime.stop)
    else:
        run_worker(url, config)
    sys.stdout.flush()
    sys.stderr.flush()
    # Threads of sync handlers that ignored the stop would keep the interpreter alive; their
    # jobs were handed back, so leave now.
    os._exit(0)


@cli.command()
@click.option("--kind", "-k", default=None, help="Task name (with --platform: chat).")
@click.option("--payload", default=None, help="JSON payload.")
@click.option("--platform", default=None, help="An LLM platform of jobqueue.toml.")
@click.option("--prompt", default=None, help="With --platform: the prompt of a chat job.")
@click.option("--model", default=None, help="With --platform: a model other than the default.")
@click.option("--max-tokens", type=click.IntRange(1), default=None)
@click.option("--queue", "-q", default=None, help="Default: the task's queue, else 'default'.")
@click.option("--priority", default=None, help="Integer (lower runs first) or high|normal|low.")
@click.option("--delay", type=click.FloatRange(0), default=None, help="Seconds before it runs.")
@click.option("--max-attempts", type=click.IntRange(1), default=None)
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None)
@click.option("--idempotency-key", default=None)
@click.option("--owner", default=None)
def enqueue(kind, payload, platform, prompt, model, max_tokens, queue, priority, delay,
            max_attempts, timeout, idempotency_key, owner) -> None:
    """Enqueue one job and print its id."""
    try:
        data = json.loads(payload) if payload is not None else {}
    except json.JSONDecodeError as exc:
        raise UserError(f"--payload: not valid JSON ({exc})") from None
    if platform:
        if queue:
            raise UserError("give --platform or --queue, not both")
        settings = _platform(platform)
        queue, kind = platform, kind or "chat"
        max_attempts = max_attempts or settings.max_attempts
        if prompt is not None:
            data["prompt"] = prompt
        data |= {k: v for k, v in (("model", model), ("max_tokens", max_tokens)) if v}
    elif prompt is not None or model is not None or max_tokens is not None:
        raise UserError("--prompt, --model and --max-tokens go with --platform")
    if not kind:
        raise UserError("Missing option '--kind' (or --platform with --prompt)")
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
        limits = jq.rate_limits()
        cache = jq.cache_stats()
    if as_json:
        _print_json({"queues": rows, "workers": workers, "rate_limits": limits,
                     "cache": cache})
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
    for r in limits:
        state = (f"disabled ({r['disabled_reason']})" if r["disabled_reason"]
                 else "blocked" if r["blocked_until"] and r["blocked_until"] > datetime.now(
                     r["blocked_until"].tzinfo) else "ok")
        click.echo(f"  {r['platform']}/{r['model']} {r['key_id']}: {r['rpm']} rpm, "
                   f"{r['tpm']} tpm; {r['requests_total']} requests, "
                   f"{r['throttled_total']} throttled; {state}")
    if cache["entries"] or cache["hits"]:
        click.echo(f"cache: {cache['entries']} entries, {cache['hits']} hits")


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


@cli.group()
def batch() -> None:
    """Batches of LLM jobs from CSV or JSONL files."""


@batch.command("submit")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--platform", required=True, help="The platform of jobqueue.toml to run on.")
@click.option("--template", default=None,
              help="CSV: a prompt with {column} placeholders; other columns become metadata.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None,
              help="Default: from the file's extension.")
@click.option("--name", default=None, help="A name for people (default: the file's name).")
@click.option("--owner", default=None)
def batch_submit(file, platform, template, fmt, name, owner) -> None:
    """Check the whole file, then enqueue it as one batch; print the batch id.

    A bad line is reported as FILE:LINE: what is wrong, and nothing is enqueued."""
    from jobqueue import batchfiles
    from jobqueue.batches import chat_spec

    settings = _platform(platform)
    size = max(1, os.path.getsize(file)) if os.path.exists(file) else 1
    with _bytes_bar(size, "checking ") as progress:
        report = batchfiles.validate(file, template=template, fmt=fmt, on_progress=progress)
    if not report.ok:
        for line in report.lines():
            click.echo(line, err=True)
        raise UserError(f"{file}: {report.error_count} problem(s); nothing was enqueued")
    with _client() as jq, click.progressbar(length=report.rows, label="enqueuing",
                                            file=sys.stderr) as bar:
        done = 0

        def advance(total: int) -> None:
            nonlocal done
            bar.update(total - done)
            done = total

        rows = batchfiles.iter_rows(file, template=template, fmt=fmt)
        batch_id, total = jq.submit_batch(
            (chat_spec(row, settings.max_attempts) for row in rows), queue=platform,
            name=name or os.path.basename(file), owner=owner, source=os.path.abspath(file),
            on_progress=advance)
    click.echo(f"batch {batch_id}: {total} job(s) on {platform}", err=True)
    click.echo(batch_id)


def _bytes_bar(size: int, label: str):
    """A progress bar over a file's bytes, as a context manager giving an on_progress hook."""
    @contextlib.contextmanager
    def bar():
        with click.progressbar(length=size, label=label, file=sys.stderr) as b:
            seen = 0

            def progress(done: int) -> None:
                nonlocal seen
                b.update(done - seen)
                seen = done

            yield progress

    return bar()


def _batch_or_fail(jq, batch_id: int) -> dict:
    found = jq.batch(batch_id)
    if found is None:
        raise UserError(f"batch {batch_id}: no such batch")
    return found


@batch.command("show")
@click.argument("batch_id", type=int)
def batch_show(batch_id: int) -> None:
    """A batch with its jobs counted by state (JSON)."""
    with _client() as jq:
        _print_json(_batch_or_fail(jq, batch_id))


@batch.command("wait")
@click.argument("batch_id", type=int)
@click.option("--timeout", type=click.FloatRange(0), default=None, help="Give up after this.")
@click.option("--interval", type=click.FloatRange(0.05), default=1.0)
def batch_wait(batch_id: int, timeout, interval) -> None:
    """Show progress until every job of the batch has finished; exit 1 if any is dead."""
    import time

    def counts(b: dict) -> str:
        return (f"{b['succeeded']} ok, {b['dead']} dead, {b['running']} running, "
                f"{b['waiting'] + b['scheduled']} waiting")

    deadline = time.monotonic() + timeout if timeout is not None else None
    with _client() as jq:
        b = _batch_or_fail(jq, batch_id)
        finished = lambda x: x["succeeded"] + x["dead"] + x["cancelled"]  # noqa: E731
        with click.progressbar(length=max(1, b["total"]), label=f"batch {batch_id}",
                               show_eta=True, show_percent=True, file=sys.stderr,
                               item_show_func=lambda _: counts(b)) as bar:
            shown = 0
            while True:
                b = jq.batch(batch_id)
                bar.update(finished(b) - shown, b)
                shown = finished(b)
                if shown >= b["total"]:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise WorkFailed(f"batch {batch_id}: not finished after {timeout}s "
                                     f"({counts(b)})")
                time.sleep(interval)
    click.echo(f"batch {batch_id}: {counts(b)}, {b['cancelled']} cancelled")
    if b["dead"]:
        raise WorkFailed(f"batch {batch_id}: {b['dead']} job(s) dead; see "
                         f"`jobqueue batch export {batch_id}` or `jobqueue dead list`")


@batch.command("export")
@click.argument("batch_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="File to write (.jsonl or .csv); default: JSONL on standard output.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None)
def batch_export(batch_id: int, output, fmt) -> None:
    """Write every job of the batch with its input metadata beside its result."""
    from jobqueue import batches

    fmt = fmt or ("csv" if output and output.endswith(".csv") else "jsonl")
    with _client() as jq:
        total = _batch_or_fail(jq, batch_id)["total"]
        with (open(output, "w", newline="", encoding="utf-8") if output
              else contextlib.nullcontext(sys.stdout)) as out:
            for chunk in batches.export_lines(jq, batch_id, fmt):
                out.write(chunk)
    count = total
    if output:
        click.echo(f"{count} job(s) written to {output}", err=True)


@cli.command()
@click.option("--port", type=int, default=None, envvar="PORT", help="Default: $PORT or 8000.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Gunicorn worker processes (default: $WEB_CONCURRENCY or 2).")
def web(port, workers) -> None:
    """Serve the API and dashboard with Gunicorn (gthread, settings in web/gunicorn_conf.py)."""
    import shutil

    url = _url()
    args = ["gunicorn", "-c", "python:web.gunicorn_conf", "web:create_app()"]
    if port:
        args += ["--bind", f"0.0.0.0:{port}"]
    if workers:
        args += ["--workers", str(workers)]
    exe = shutil.which("gunicorn") or os.path.join(os.path.dirname(sys.executable), "gunicorn")
    os.environ["DATABASE_URL"] = url
    os.execv(exe, args)


@cli.group()
def tokens() -> None:
    """API tokens: shown once at creation, stored hashed."""


@tokens.command("create")
@click.option("--owner", required=True, help="Whose jobs the token creates and sees.")
@click.option("--scopes", default="read,write", help="Comma-separated: read, write, admin.")
@click.option("--rate-limit", type=click.IntRange(1), default=300, help="Requests per minute.")
@click.option("--note", default=None)
def tokens_create(owner, scopes, rate_limit, note) -> None:
    """Create a token and print it (it cannot be shown again)."""
    from jobqueue import tokens as token_store

    with _client() as jq, jq.pool.connection() as conn:
        try:
            token, row = token_store.create(conn, owner, [s.strip() for s in scopes.split(",")
                                                         if s.strip()], rate_limit, note)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    click.echo(f"token {row['id']} for {owner} ({', '.join(row['scopes'])}, "
               f"{rate_limit}/min); keep it now, it is not shown again:", err=True)
    click.echo(token)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True)
def tokens_list(as_json) -> None:
    from jobqueue import tokens as token_store

    with _client() as jq, jq.pool.connection() as conn:
        rows = token_store.list_tokens(conn)
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        state = "revoked" if r["revoked_at"] else "active"
        click.echo(f"{r['id']}  {r['prefix']}...  {r['owner']}  {','.join(r['scopes'])}  "
                   f"{r['rate_limit']}/min  {state}  last used {r['last_used_at'] or 'never'}")


@tokens.command("revoke")
@click.argument("token_id", type=int)
def tokens_revoke(token_id: int) -> None:
    from jobqueue import tokens as token_store

    with _client() as jq, jq.pool.connection() as conn:
        if not token_store.revoke(conn, token_id):
            raise UserError(f"token {token_id}: no such active token")
    click.echo(f"token {token_id}: revoked")


@cli.command()
@click.option("--jobs", type=click.IntRange(1, 100000), default=40)
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Dashboard port (default: a free one; 0: no web app).")
@click.option("--stay", is_flag=True, help="Keep the dashboard up after the batch (Ctrl-C).")
def demo(jobs: int, port, stay: bool) -> None:
    """Everything on this machine: embedded Postgres, a simulated provider, a worker, the web
    app and a batch."""
    from jobqueue import demo as demo_module

    failed = demo_module.run(_url(), jobs=jobs, port=port, linger=stay)
    if failed:
        raise WorkFailed(f"{failed} job(s) did not succeed")


@cli.command()
@click.option("--jobs", type=click.IntRange(100), default=20000)
@click.option("--processes", type=click.IntRange(1, 32), default=2)
@click.option("--probes", type=click.IntRange(10), default=200)
@click.option("--rate", type=click.FloatRange(1, 1000), default=50.0)
@click.option("--json", "as_json", is_flag=True)
def bench(jobs, processes, probes, rate, as_json) -> None:
    """Measure enqueue, drain and pickup latency here (scripts/bench_queue.py compares peers)."""
    from jobqueue import bench as bench_module

    result = bench_module.run(_url(), jobs, processes, probes, rate)
    if as_json:
        _print_json(result)


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
