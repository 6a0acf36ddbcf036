"""`jobqueue enqueue`, `jobqueue jobs list|show|retry|cancel`, `jobqueue dead list|retry|purge`:
one job, and the jobs that used every attempt."""

from __future__ import annotations

import getpass
import json
import os
from datetime import datetime

import click

from jobqueue.audit import Audit
from jobqueue.cli.common import (
    ID,
    Column,
    FiniteFloat,
    UserError,
    connection,
    duration,
    json_option,
    load_platform,
    open_client,
    print_json,
    print_rows,
    state_colour,
    table,
)
from jobqueue.jobs import STATES, InvalidJob


@click.command()
@click.option("--kind", "-k", default=None, help="Task name (with --platform: chat).")
@click.option("--payload", default=None, help="JSON payload.")
@click.option("--platform", default=None, help="An LLM platform of jobqueue.toml.")
@click.option("--prompt", default=None, help="With --platform: the prompt of a chat job.")
@click.option("--model", default=None, help="With --platform: a model other than the default.")
@click.option("--max-tokens", type=click.IntRange(1), default=None)
@click.option("--queue", "-q", default=None,
              help="Default: [tasks.KIND] queue in jobqueue.toml, else 'default'.")
@click.option("--priority", default=None, help="Integer (lower runs first) or high|normal|low.")
@click.option("--delay", type=FiniteFloat(0), default=None, help="Seconds before it runs.")
@click.option("--max-attempts", type=click.IntRange(1), default=None)
@click.option("--timeout", type=FiniteFloat(0, min_open=True), default=None)
@click.option("--idempotency-key", default=None)
@click.option("--owner", default=None)
@click.option("--depends-on", "depends_on", type=click.IntRange(1), multiple=True,
              metavar="ID", help="Wait for this job to end (repeatable): blocked until then.")
@click.option("--on-parent-failure", type=click.Choice(["cancel", "run"]), default=None,
              help="If a job it waits for ends dead or cancelled (default: cancel).")
def enqueue(kind, payload, platform, prompt, model, max_tokens, queue, priority, delay,
            max_attempts, timeout, idempotency_key, owner, depends_on,
            on_parent_failure) -> None:
    """Enqueue one job and print its id."""
    data = json_option(payload, "--payload", {})
    if platform:
        if not isinstance(data, dict):
            raise UserError("--payload: must be a JSON object with --platform")
        if queue:
            raise UserError("give --platform or --queue, not both")
        settings = load_platform(platform)
        queue, kind = platform, kind or "chat"
        max_attempts = max_attempts or settings.max_attempts
        if prompt is not None:
            data["prompt"] = prompt
        data |= {k: v for k, v in (("model", model), ("max_tokens", max_tokens)) if v}
    elif prompt is not None or model is not None or max_tokens is not None:
        raise UserError("--prompt, --model and --max-tokens go with --platform")
    if not kind:
        raise UserError("Missing option '--kind' (or --platform with --prompt)")
    if platform:
        from jobqueue.llm import payloads
        from jobqueue.tasks import Permanent

        try:  # refused now, not dead later on the worker
            payloads.check(kind, data, settings)
        except Permanent as exc:
            hint = " (--prompt gives one)" if kind == "chat" else ""
            raise UserError(f"{exc}{hint}") from None
    with open_client() as jq:
        try:
            job_id = jq.enqueue(kind, data, queue=queue, priority=priority, delay=delay,
                                max_attempts=max_attempts, timeout=timeout,
                                idempotency_key=idempotency_key, owner=owner,
                                depends_on=list(depends_on) or None,
                                on_parent_failure=on_parent_failure)
        except InvalidJob as exc:
            raise UserError(str(exc).removeprefix("job 0: ")) from None
    click.echo(job_id)


@click.group()
def jobs() -> None:
    """Look at and act on one job."""


def _job_or_fail(jq, job_id: int):
    job = jq.get(job_id)
    if job is None:
        raise UserError(f"job {job_id}: no such job")
    return job


@jobs.command("show")
@click.argument("job_id", type=ID)
@click.option("--json", "as_json", is_flag=True, help="The whole job as JSON.")
def jobs_show(job_id: int, as_json: bool) -> None:
    """Print a job: state, attempts, times, payload, result, and every error with its
    traceback."""
    with open_client() as jq:
        job = _job_or_fail(jq, job_id)
    if as_json:
        print_json(job.to_dict())
        return
    click.echo(describe_job(job))


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else "-"


def _compact(value, limit: int = 400) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


def describe_job(job) -> str:
    """A job for people: one fact per line, errors in order with their tracebacks."""
    lines = [f"job {job.id}: {job.kind} on {job.queue}, {job.state}, "
             f"attempt {job.attempts} of {job.max_attempts}"]
    facts = [("owner", job.owner), ("batch", job.batch_id), ("priority", job.priority),
             ("idempotency key", job.idempotency_key)]
    lines += [f"  {name}: {value}" for name, value in facts if value not in (None, "")]
    lines.append(f"  created {_when(job.created_at)}, runs at {_when(job.run_at)}, "
                 f"started {_when(job.started_at)}, finished {_when(job.finished_at)}")
    if job.created_at and job.started_at:
        lines.append(f"  waited {duration((job.started_at - job.created_at).total_seconds())}"
                     + (f", ran {duration((job.finished_at - job.started_at).total_seconds())}"
                        if job.finished_at else ""))
    lines.append(f"  payload: {_compact(job.payload)}")
    if job.progress is not None:
        lines.append(f"  progress: {_compact(job.progress)}")
    if job.result is not None:
        lines.append(f"  result: {_compact(job.result, 2000)}")
    for n, error in enumerate(job.errors or [], 1):
        lines.append(f"  error {n}: {error.get('type', '?')}: {error.get('message', '')} "
                     f"(attempt {error.get('attempt', '?')}, {error.get('at', '-')})")
        for tb_line in (error.get("traceback") or "").rstrip().splitlines():
            lines.append(f"      {tb_line}")
    return "\n".join(lines)


@jobs.command("list")
@click.option("--queue", "-q", default=None, help="Only this queue.")
@click.option("--state", type=click.Choice(STATES), default=None, help="Only this state.")
@click.option("--kind", "-k", default=None, help="Only this kind (task name).")
@click.option("--owner", default=None, help="Only this owner's jobs.")
@click.option("--batch", "batch_id", type=ID, default=None, help="Only this batch's jobs.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50)
@click.option("--json", "as_json", is_flag=True)
def jobs_list(queue, state, kind, owner, batch_id, limit, as_json) -> None:
    """The newest jobs, with the dashboard's filters (it examines at most the newest 50,000
    ids, like a dashboard page)."""
    from jobqueue.db import store

    where = store.JobFilter(queue=queue, kind=kind, owner=owner, batch_id=batch_id,
                            state=state)
    with connection() as conn:
        window = store.jobs_window(conn, 2**63 - 1, 50_000)
        rows = store.jobs_page(conn, where, 2**63 - 1, window["floor"] or 0, limit)
    print_rows(rows, as_json, "no jobs match", _jobs_table)


def _jobs_table(rows: list[dict]) -> str:
    for r in rows:
        r["created"] = _when(r["created_at"])
        r["attempt"] = f"{r['attempts']}/{r['max_attempts']}"
    return table(rows, [("id", "ID"), ("queue", "QUEUE"), ("kind", "KIND"),
                        Column("state", "STATE", "text", state_colour),
                        ("attempt", "ATTEMPT"), ("owner", "OWNER"),
                        ("batch_id", "BATCH"), ("created", "CREATED"),
                        ("error_type", "LAST ERROR")])


def _audit() -> Audit:
    """A manual action from the CLI, recorded with the job's timeline as the operating
    system's user name (the CLI has no token: whoever holds DATABASE_URL may act)."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        who = f"uid {os.getuid()}"
    return Audit(who, "cli")


@jobs.command("retry")
@click.argument("job_id", type=ID)
def jobs_retry(job_id: int) -> None:
    """Run a dead or cancelled job again."""
    with open_client() as jq:
        job = _job_or_fail(jq, job_id)
        if not jq.retry(job_id, _audit()):
            raise UserError(f"job {job_id}: is {job.state}; only dead or cancelled jobs retry")
    click.echo(f"job {job_id}: queued again")


@jobs.command("cancel")
@click.argument("job_id", type=ID)
def jobs_cancel(job_id: int) -> None:
    """Cancel a waiting job, or ask a running job's worker to stop it."""
    with open_client() as jq:
        outcome = jq.cancel(job_id, _audit())
    messages = {"cancelled": "cancelled", "requested": "running: cancellation requested",
                "finished": "already finished; nothing to cancel"}
    if outcome == "not_found":
        raise UserError(f"job {job_id}: no such job")
    click.echo(f"job {job_id}: {messages[outcome]}")


@click.group()
def dead() -> None:
    """The dead-letter queue: jobs that used every attempt."""


@dead.command("list")
@click.option("--queue", "-q", default=None)
@click.option("--limit", type=click.IntRange(1, 100_000), default=50)
@click.option("--json", "as_json", is_flag=True)
def dead_list(queue, limit, as_json) -> None:
    """The newest dead jobs with their last error."""
    with open_client() as jq:
        rows = jq.dead(queue, limit)
    print_rows(rows, as_json, "no dead jobs", _dead_table)


def _dead_table(rows: list[dict]) -> str:
    for r in rows:
        err = r["last_error"] or {}
        r["died"] = _when(r["finished_at"])
        r["error"] = f"{err.get('type', '?')}: {err.get('message', '')}"[:100]
    return table(rows, [("id", "ID"), ("queue", "QUEUE"), ("kind", "KIND"),
                        ("attempts", "ATTEMPTS"), ("died", "DIED"), ("error", "LAST ERROR")])


@dead.command("retry")
@click.option("--queue", "-q", default=None)
@click.argument("job_ids", type=ID, nargs=-1)
def dead_retry(queue, job_ids) -> None:
    """Retry dead jobs: the given ids, or every one (of --queue)."""
    with open_client() as jq:
        ids = jq.retry_dead(queue, list(job_ids) or None, _audit())
    click.echo(f"{len(ids)} job(s) queued again")


@dead.command("purge")
@click.option("--queue", "-q", default=None)
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.argument("job_ids", type=ID, nargs=-1)
def dead_purge(queue, yes, job_ids) -> None:
    """Delete dead jobs for good: the given ids, or every one (of --queue)."""
    if not job_ids and not yes:
        click.confirm(f"Delete every dead job{f' of {queue}' if queue else ''}?", abort=True)
    with open_client() as jq:
        count = jq.purge_dead(queue, list(job_ids) or None, _audit())
    click.echo(f"{count} dead job(s) deleted")

