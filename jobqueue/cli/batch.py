"""`jobqueue batch submit|show|wait|export`: batch files of LLM jobs."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from jobqueue.cli.common import (
    UserError,
    WorkFailed,
    load_platform,
    open_client,
    print_json,
)


@click.group()
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
    from jobqueue.batches import files as batchfiles
    from jobqueue.batches.specs import chat_spec

    settings = load_platform(platform)
    size = max(1, os.path.getsize(file)) if os.path.exists(file) else 1
    with _bytes_bar(size, "checking ") as progress:
        report = batchfiles.validate(file, template=template, fmt=fmt, on_progress=progress)
    if not report.ok:
        for line in report.lines():
            click.echo(line, err=True)
        raise UserError(f"{file}: {report.error_count} problem(s); nothing was enqueued")
    with open_client() as jq, click.progressbar(length=report.rows, label="enqueuing",
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
    with open_client() as jq:
        print_json(_batch_or_fail(jq, batch_id))


@batch.command("wait")
@click.argument("batch_id", type=int)
@click.option("--timeout", type=click.FloatRange(0), default=None, help="Give up after this.")
@click.option("--interval", type=click.FloatRange(0.05), default=1.0)
def batch_wait(batch_id: int, timeout, interval) -> None:
    """Show progress until every job of the batch has finished; exit 1 if any is dead."""
    import time

    def counts(b: dict) -> str:
        return (f"{b['succeeded']} ok, {b['dead']} dead, {b['running']} running, "
                f"{b['waiting'] + b['scheduled'] + b['retrying']} waiting")

    deadline = time.monotonic() + timeout if timeout is not None else None
    with open_client() as jq:
        b = _batch_or_fail(jq, batch_id)
        finished = lambda x: x["succeeded"] + x["dead"] + x["cancelled"]  # noqa: E731
        try:
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
        except KeyboardInterrupt:
            # Not "some jobs dead" (1): the wait was interrupted and the batch goes on.
            click.echo(f"\nbatch {batch_id}: stopped waiting ({counts(b)}); the batch goes "
                       "on", err=True)
            sys.exit(130)
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

