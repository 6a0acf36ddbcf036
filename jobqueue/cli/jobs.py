"""`jobqueue enqueue`, `jobqueue jobs show|retry|cancel` and `jobqueue dead list|retry|purge`."""

from __future__ import annotations

import json
from datetime import datetime

import click

from jobqueue.cli.common import (
    UserError,
    load_platform,
    open_client,
    print_json,
)
from jobqueue.jobs import InvalidJob


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
                                idempotency_key=idempotency_key, owner=owner)
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
@click.argument("job_id", type=int)
def jobs_show(job_id: int) -> None:
    """Print a job with its state, attempts, errors and result (JSON)."""
    with open_client() as jq:
        print_json(_job_or_fail(jq, job_id).to_dict())


@jobs.command("retry")
@click.argument("job_id", type=int)
def jobs_retry(job_id: int) -> None:
    """Run a dead or cancelled job again."""
    with open_client() as jq:
        job = _job_or_fail(jq, job_id)
        if not jq.retry(job_id):
            raise UserError(f"job {job_id}: is {job.state}; only dead or cancelled jobs retry")
    click.echo(f"job {job_id}: queued again")


@jobs.command("cancel")
@click.argument("job_id", type=int)
def jobs_cancel(job_id: int) -> None:
    """Cancel a waiting job, or ask a running job's worker to stop it."""
    with open_client() as jq:
        outcome = jq.cancel(job_id)
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
@click.option("--limit", type=click.IntRange(1), default=50)
@click.option("--json", "as_json", is_flag=True)
def dead_list(queue, limit, as_json) -> None:
    with open_client() as jq:
        rows = jq.dead(queue, limit)
    if as_json:
        print_json(rows)
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
    with open_client() as jq:
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
    with open_client() as jq:
        count = jq.purge_dead(queue, list(job_ids) or None)
    click.echo(f"{count} dead job(s) deleted")

