"""`jobqueue batch submit|show|wait|export`: batch files of LLM jobs."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from jobqueue.cli.common import (
    ID,
    FiniteFloat,
    UserError,
    WorkFailed,
    duration,
    json_option,
    load_platform,
    open_client,
    print_json,
)


@click.group()
def batch() -> None:
    """Batches of LLM jobs from CSV or JSONL files."""


@batch.command("submit")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--platform", required=True,
              help="The platform of jobqueue.toml to run on, or several (a,b,c): one job per "
                   "row and platform.")
@click.option("--samples", type=int, default=1, show_default=True,
              help="Jobs per row and platform (independent answers, not cached).")
@click.option("--template", default=None,
              help="CSV: a prompt with {column} placeholders; other columns become metadata "
                   "(reserved columns such as priority keep their meaning).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None,
              help="Default: from the file's extension.")
@click.option("--name", default=None, help="A name for people (default: the file's name).")
@click.option("--owner", default=None)
@click.option("--via", type=click.Choice(["workers", "batch-api"]), default="workers",
              show_default=True,
              help="batch-api: send the jobs through the provider's Batch API (cheaper, "
                   "answers within 24 h; the maintenance leader polls and imports).")
@click.option("--on-expiry", type=click.Choice(["requeue", "dead"]), default="requeue",
              show_default=True,
              help="batch-api: what becomes of requests an expired or cancelled provider "
                   "batch never ran: back to the workers, or dead-lettered.")
@click.option("--dry-run", is_flag=True,
              help="Check the file and print what would be enqueued (jobs per platform, "
                   "Batch API files) and the estimated tokens, cost and time at each "
                   "platform's limits; enqueue nothing.")
@click.option("--on-complete", "on_complete", default=None, metavar="KIND",
              help="A job (task KIND) to enqueue once every job of the batch has ended; its "
                   "payload gets the batch id and counts.")
@click.option("--on-complete-queue", default=None, help="Its queue (default: the task's).")
@click.option("--on-complete-payload", default=None, metavar="JSON",
              help="Its payload, a JSON object (batch_id and counts are added).")
@click.option("--partial", is_flag=True,
              help="Over the owner's quota, enqueue the first rows that fit (default: none).")
@click.option("--fallback/--no-fallback", default=True, show_default=True,
              help="--no-fallback: never answer with the platform's fallback model; jobs wait "
                   "for the main one.")
def batch_submit(file, platform, samples, template, fmt, name, owner, via, on_expiry,
                 dry_run, on_complete, on_complete_queue, on_complete_payload,
                 partial, fallback) -> None:
    """Check the whole file, then enqueue it as one batch; print the batch id.

    With several platforms or --samples N, the batch has one job per (row, platform, sample).
    A bad line is reported as FILE:LINE: what is wrong, and nothing is enqueued. Rows may
    wait for earlier rows (`ref`, `depends_on`); a row whose idempotency key already names a
    job on this platform is a duplicate: done, pointing at that job. Past the owner's quota
    nothing is enqueued either, unless --partial."""
    from jobqueue.batches import files as batchfiles
    from jobqueue.batches import specs

    callback = _callback(on_complete, on_complete_queue, on_complete_payload)
    targets = _targets(platform, samples)
    via_api = _batch_api_platforms(targets) if via == "batch-api" else None
    size = max(1, os.path.getsize(file)) if os.path.exists(file) else 1
    with _bytes_bar(size, "checking ") as progress:
        report = batchfiles.validate(file, template=template, fmt=fmt, on_progress=progress)
    if not report.ok:
        for line in report.lines():
            click.echo(line, err=True)
        raise UserError(f"{file}: {report.error_count} problem(s); nothing was enqueued")
    per_row = len(targets) * samples
    if dry_run:
        _dry_run(file, report.rows, targets, samples, via_api, template, fmt)
        for target in targets:
            _print_estimate(file, template, fmt, load_platform(target.platform))
        return
    with open_client() as jq, click.progressbar(length=report.rows * per_row,
                                                label="enqueuing", file=sys.stderr) as bar:
        done = 0

        def advance(total: int) -> None:
            nonlocal done
            bar.update(total - done)
            done = total

        rows = batchfiles.iter_rows(file, template=template, fmt=fmt)
        queue = ",".join(t.platform for t in targets)
        metadata = _fanout_metadata(targets, samples)
        held: list[tuple[int, str]] = []
        hold = None
        if via_api is not None:
            from jobqueue.llm import batchapi

            metadata = (metadata or {}) | {"via": "batch-api"}

            def hold(conn, batch_id: int) -> None:
                held.extend(batchapi.hold(conn, batch_id, via_api.values(), on_expiry))

        try:
            submitted = jq.submit_batch(
                (specs.fanout_specs(rows, targets, samples) if fallback else
                 specs.without_fallback(specs.fanout_specs(rows, targets, samples))),
                queue=queue,
                name=name or os.path.basename(file), owner=owner, source=os.path.abspath(file),
                metadata=metadata, on_progress=advance, on_complete=callback,
                partial=partial, before_commit=hold)
            batch_id, total = submitted
        except ValueError as exc:  # InvalidJob, or BatchApiError (a request over a file)
            raise UserError(f"{file}: {exc}; nothing was enqueued") from None
        sent = _send_held(jq, held, via_api) if via_api is not None else 0
        duplicates = jq.batch(batch_id)["duplicates"]
    click.echo(f"batch {batch_id}: {total - duplicates} job(s) on {queue}"
               + (f" ({total // per_row} row(s) x {len(targets)} platform(s) x {samples} "
                  "sample(s))" if per_row > 1 else "")
               + (f", {duplicates} duplicate(s) of existing jobs (done already)"
                  if duplicates else ""), err=True)
    if via_api is not None:
        click.echo(f"batch {batch_id}: {len(held)} provider batch(es), {sent} submitted"
                   + ("" if sent == len(held) else "; the workers' maintenance retries the "
                      "rest") + "; a platform worker polls them and imports the answers",
                   err=True)
    if submitted.refused:
        retry = submitted.exceeded.retry_after if submitted.exceeded else 0
        click.echo(f"{submitted.refused} row(s) over {owner}'s quota were not enqueued "
                   f"(retry in {duration(retry)})", err=True)
    click.echo(batch_id)


def _print_estimate(file, template, fmt, platform) -> None:
    """`--dry-run`: what the file would cost and take, nothing enqueued."""
    from jobqueue.batches import files as batchfiles
    from jobqueue.batches.specs import chat_spec
    from jobqueue.llm import prices
    from jobqueue.llm.payloads import chat_request

    try:
        table = prices.load()
    except prices.ConfigError as exc:
        raise UserError(str(exc)) from None
    requests = (chat_request(chat_spec(row, 1).payload, platform)
                for row in batchfiles.iter_rows(file, template=template, fmt=fmt))
    keys = len(platform.api_key_env)
    e = prices.estimate(requests, platform.rpm, platform.tpm, keys, table)
    if e.cost_usd is None:
        cost = (f"unknown: no price for {', '.join(e.unpriced)} (add [prices.\"MODEL\"] to "
                "jobqueue.toml)")
    else:
        cost = (f"at most ${e.cost_usd:,.4f} (${e.batch_api_cost_usd:,.4f} through the Batch "
                f"API); list prices of {prices.PRICES_AS_OF} unless jobqueue.toml sets them")
    minutes, seconds = divmod(round(e.seconds), 60)
    click.echo(f"dry run of {file} on {platform.name}: nothing was enqueued\n"
               f"  jobs:   {e.calls:,}\n"
               f"  tokens: {e.prompt_tokens:,} prompt (characters / 4) + at most "
               f"{e.max_output_tokens:,} output (max_tokens)\n"
               f"  cost:   {cost}\n"
               f"  time:   at least {minutes}m {seconds:02d}s at {keys} key(s) x "
               f"{platform.rpm:,} RPM / {platform.tpm:,} TPM ({e.bound_by} bind)")


def _dry_run(file, rows: int, targets, samples: int, via_api, template, fmt) -> None:
    """What a submit would enqueue: per platform its jobs and, for the Batch API, its files."""
    from jobqueue.batches import files as batchfiles
    from jobqueue.batches import specs

    click.echo(f"{file}: {rows} row(s) x {len(targets)} platform(s) x {samples} sample(s) = "
               f"{rows * len(targets) * samples} job(s); nothing was enqueued (--dry-run)")
    for target in targets:
        line = f"  {target.platform}: {rows * samples} job(s), max_attempts {target.max_attempts}"
        if via_api is not None:
            from jobqueue.llm import batchapi

            p = via_api[target.platform]
            # Ids as long as real ones will be, so the sizes are what the upload will carry.
            lines = ((i, batchapi.request_line(10**12 + i, spec.payload, p))
                     for i, spec in enumerate(specs.fanout_specs(
                         batchfiles.iter_rows(file, template=template, fmt=fmt),
                         [target], samples)))
            try:
                count = sum(1 for _ in batchapi.split(lines, p.batch_max_requests,
                                                      p.batch_max_file_bytes))
            except ValueError as exc:
                raise UserError(f"{file}: {exc}") from None
            line += f", {count} Batch API file(s)"
        click.echo(line)


def _batch_api_platforms(targets) -> dict:
    """The platforms of a --via batch-api submit, each with its keys in the environment
    (checked before anything is enqueued)."""
    from jobqueue.llm.platforms import ConfigError

    found = {}
    for t in targets:
        p = load_platform(t.platform)
        try:
            p.keys()
        except ConfigError as exc:
            raise UserError(f"--via batch-api: {exc}") from None
        found[p.name] = p
    return found


def _send_held(jq, held: list[tuple[int, str]], platforms: dict) -> int:
    """Upload and create each provider batch now; one the provider did not take stays
    pending for the maintenance leader. Returns how many were submitted."""
    from jobqueue.llm import batchapi

    # The pool lends a connection for each short block of a submit, none across the upload.
    return sum(batchapi.submit(jq.pool.connection, pb_id, platforms[name])
               for pb_id, name in held)


def _targets(platform: str, samples: int):
    """The platforms of --platform a,b,c, each checked against jobqueue.toml (exit 2 naming
    the bad one), with --samples checked."""
    from jobqueue.batches import specs

    try:
        names = specs.parse_platforms(platform)
    except ValueError as exc:
        raise UserError(f"--platform: {exc}") from None
    if not 1 <= samples <= specs.MAX_SAMPLES:
        raise UserError(f"--samples: must be from 1 to {specs.MAX_SAMPLES}, got {samples}")
    return [specs.Target(n, load_platform(n).max_attempts) for n in names]


def _fanout_metadata(targets, samples: int) -> dict | None:
    if len(targets) == 1 and samples == 1:
        return None
    return {"platforms": [t.platform for t in targets], "samples": samples}


def _callback(kind, queue, payload):
    """The --on-complete job, checked before anything is read or enqueued."""
    from jobqueue.jobs import JobSpec

    if kind is None:
        if queue is not None or payload is not None:
            raise UserError("--on-complete-queue/--on-complete-payload: give --on-complete "
                            "KIND too")
        return None
    data = json_option(payload, "--on-complete-payload", {})
    if not isinstance(data, dict):
        raise UserError("--on-complete-payload: must be a JSON object")
    return JobSpec(kind, data, queue=queue)


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
@click.argument("batch_id", type=ID)
def batch_show(batch_id: int) -> None:
    """A batch with its jobs counted by state and platform, its provider batches, and what
    its LLM calls cost (JSON): tokens, cost_usd, cache hits and what they saved, the fallback
    share, and jobs over budget."""
    from jobqueue.db import store

    with open_client() as jq:
        found = _batch_or_fail(jq, batch_id)
        with jq.pool.connection() as conn:
            provider = store.provider_batches(conn, batch_id)
        if provider:
            found["provider_batches"] = provider
        print_json(found)


@batch.command("wait")
@click.argument("batch_id", type=ID)
@click.option("--timeout", type=FiniteFloat(0, 10**9), default=None, help="Give up after this.")
@click.option("--interval", type=FiniteFloat(0.05, 3600), default=1.0)
def batch_wait(batch_id: int, timeout, interval) -> None:
    """Show progress until every job of the batch has finished; exit 1 if any is dead."""
    import time

    def counts(b: dict) -> str:
        return (f"{b['succeeded']} ok, {b['dead']} dead, {b['running']} running, "
                f"{b['waiting'] + b['scheduled']} waiting"
                + (f", {b['retrying']} retrying" if b["retrying"] else "")
                + (f", {b['blocked']} blocked" if b["blocked"] else "")
                + (f", {b['duplicates']} duplicates" if b["duplicates"] else ""))

    from jobqueue.batches.eta import finished, platform_budgets, recent

    deadline = time.monotonic() + timeout if timeout is not None else None

    def shown(b: dict) -> str:
        eta = estimate.eta()
        left = b["total"] - finished(b)
        return counts(b) + ("" if not left else f", eta {duration(eta)}" if eta is not None
                            else ", eta -")

    with open_client() as jq:
        b = _batch_or_fail(jq, batch_id)
        with jq.pool.connection() as conn:
            # From the batch's last minutes, as its dashboard page shows it; then each poll.
            estimate = recent(conn, batch_id, b["platforms"], time.monotonic())
        try:
            # click's own ETA divides by the last few updates' pace and swings with each
            # poll (1:09 -> 3:54 -> 0:45): the smoothed one (jobqueue/batches/eta.py) instead.
            with click.progressbar(length=max(1, b["total"]), label=f"batch {batch_id}",
                                   show_eta=False, show_percent=True, file=sys.stderr,
                                   item_show_func=lambda _: shown(b)) as bar:
                shown_done = 0
                while True:
                    b = jq.batch(batch_id)
                    with jq.pool.connection() as conn:
                        budgets = platform_budgets(conn, list(b["platforms"]))
                    estimate.observe(time.monotonic(), b["platforms"], budgets)
                    bar.update(finished(b) - shown_done, b)
                    shown_done = finished(b)
                    if shown_done >= b["total"]:
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        raise WorkFailed(f"batch {batch_id}: not finished after "
                                         f"{duration(timeout)} ({counts(b)})")
                    time.sleep(interval)
        except KeyboardInterrupt:
            # Not "some jobs dead" (1): the wait was interrupted and the batch goes on.
            click.echo(f"\nbatch {batch_id}: stopped waiting ({counts(b)}); the batch goes "
                       "on", err=True)
            sys.exit(130)
    click.echo(f"batch {batch_id}: {counts(b)}, {b['cancelled']} cancelled")
    if len(b.get("platforms") or {}) > 1:
        for name, c in b["platforms"].items():
            click.echo(f"  {name}: {counts(c)}, {c['cancelled']} cancelled")
    if b["dead"]:
        raise WorkFailed(f"batch {batch_id}: {b['dead']} job(s) dead; see "
                         f"`jobqueue batch export {batch_id}` or `jobqueue dead list`")


@batch.command("export")
@click.argument("batch_id", type=ID)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="File to write (.jsonl or .csv); default: JSONL on standard output.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None)
def batch_export(batch_id: int, output, fmt) -> None:
    """Write every job of the batch with its input metadata beside its result."""
    from jobqueue.batches import export as batches

    if output:
        suffix = os.path.splitext(output)[1].lower()
        by_suffix = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix)
        if by_suffix is None:
            raise UserError(f"--output {output}: jobqueue writes .csv or .jsonl (.ndjson), "
                            f"not {suffix or 'a file without an extension'}")
        if fmt and fmt != by_suffix:
            raise UserError(f"--output {output} is a {by_suffix} name but --format is {fmt}")
        fmt = by_suffix
    fmt = fmt or "jsonl"
    with open_client() as jq:
        total = _batch_or_fail(jq, batch_id)["total"]
        with (open(output, "w", newline="", encoding="utf-8") if output
              else contextlib.nullcontext(sys.stdout)) as out:
            for chunk in batches.export_lines(jq, batch_id, fmt):
                out.write(chunk)
    count = total
    if output:
        click.echo(f"{count} job(s) written to {output}", err=True)

