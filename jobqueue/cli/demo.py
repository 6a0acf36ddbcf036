"""`jobqueue demo`: the whole path on this machine with nothing configured.

An embedded Postgres (or DATABASE_URL), the OpenAI-compatible simulator on loopback as a
platform, a worker, the web app with an admin token for its dashboard, and a sample batch
submitted and watched to the end. The answers are
simulated: no provider is called and no key is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time

import click

from jobqueue.batches.files import BatchRow
from jobqueue.batches.specs import chat_spec
from jobqueue.cli.common import WorkFailed, database_url
from jobqueue.client import Client
from jobqueue.llm.platforms import Platform
from jobqueue.llm.runtime import PlatformRuntime
from jobqueue.sim.server import FakeOpenAI, Limits
from jobqueue.worker import Worker, WorkerConfig

SEGMENTS = ["law firms", "dentists", "bakeries", "startups", "schools", "hotels", "garages",
            "architects", "florists", "gyms", "pharmacies", "libraries", "breweries",
            "plumbers", "museums", "cinemas", "clinics", "farms", "salons", "caterers"]


def run(url: str, jobs: int = 40, rpm: int = 600, port: int | None = None,
        linger: bool = False, campaign: bool = True) -> int:
    """Run the demo; returns the number of jobs that did not succeed."""
    with Client(url) as jq:  # a fresh DATABASE_URL too, not only the embedded server
        jq.migrate()
    sim = FakeOpenAI(keys={"sk-demo-1": Limits(rpm=rpm, tpm=100_000),
                           "sk-demo-2": Limits(rpm=rpm, tpm=100_000)}, latency=0.2, jitter=0.1)
    base_url = sim.start()
    click.echo(f"simulated OpenAI-compatible provider at {base_url} "
               "(answers are SIMULATED: no real model is called)")
    platform = Platform(name="demo", base_url=base_url, model="sim-gpt", rpm=rpm, tpm=100_000,
                        api_key_env=("DEMO_KEY_1", "DEMO_KEY_2"), concurrency=50,
                        max_tokens=48, timeout=10.0)
    runtime = PlatformRuntime(platform, url, environ={"DEMO_KEY_1": "sk-demo-1",
                                                      "DEMO_KEY_2": "sk-demo-2"})
    worker = Worker(url, WorkerConfig(queue="demo", concurrency=50),
                    tasks=runtime.registry(), on_start=runtime.start, on_stop=runtime.stop)
    thread = threading.Thread(target=lambda: asyncio.run(worker.run()), daemon=True)
    thread.start()
    web = _start_web(url, port)
    try:
        with Client(url) as jq:
            rows = (BatchRow(line=i + 1, messages=[{"role": "user", "content":
                    f"Which CRM tools would you recommend for {SEGMENTS[i % len(SEGMENTS)]}?"}],
                             temperature=1, metadata={"segment": SEGMENTS[i % len(SEGMENTS)]})
                    for i in range(jobs))
            batch_id, total = jq.submit_batch((chat_spec(r, 3) for r in rows), queue="demo",
                                              name="demo")
            click.echo(f"batch {batch_id}: {total} chat jobs on platform 'demo' "
                       f"(2 keys x {rpm} rpm, shared limiter in Postgres)")
            _watch(jq, batch_id, total)
            b = jq.batch(batch_id)
            sample = jq.batch_jobs(batch_id, limit=3)
            click.echo(f"done: {b['succeeded']} succeeded, {b['dead']} dead")
            for job in sample:
                result = job["result"] or {}
                click.echo(f"  [{job['metadata']['segment']}] {result.get('model')}: "
                           f"{(result.get('text') or '')[:70]}")
            for r in jq.rate_limits("demo"):
                click.echo(f"  key {r['key_id']}: {r['requests_total']} requests, "
                           f"{r['throttled_total']} throttled")
            click.echo(f"export it: jobqueue batch export {batch_id} -o results.csv")
            if campaign:  # an AI-visibility campaign over two simulated platforms
                from jobqueue.cli import demo_campaign

                demo_campaign.run(url, sim, {"DEMO_KEY_1": "sk-demo-1",
                                             "DEMO_KEY_2": "sk-demo-2"})
            if web is not None and linger:
                click.echo("the dashboard stays up until Ctrl-C (--no-stay: exit now)")
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait()
                click.echo("stopped")
            return b["total"] - b["succeeded"]
    finally:
        if web is not None:
            web.shutdown()
        worker.stop()
        thread.join(30)
        sim.stop()


def _watch(jq, batch_id: int, total: int) -> None:
    """The batch's progress bar on stdout, with the smoothed ETA (jobqueue/batches/eta.py).
    Log lines (the worker's, in this process) wait until the bar has finished its line, so
    none lands in the middle of it on a terminal or in a pipe shared with stderr."""
    from jobqueue import logs
    from jobqueue.batches.eta import BatchEta, finished, platform_budgets
    from jobqueue.cli.common import duration

    estimate = BatchEta()

    def eta_text(_) -> str:
        eta = estimate.eta()
        return f"eta {duration(eta)}" if eta is not None else ""

    with logs.held_back(), click.progressbar(length=total, label="running", show_eta=False,
                                             item_show_func=eta_text) as bar:
        shown = 0
        while shown < total:
            b = jq.batch(batch_id)
            with jq.pool.connection() as conn:
                budgets = platform_budgets(conn, list(b["platforms"]))
            estimate.observe(time.monotonic(), b["platforms"], budgets)
            done = finished(b)
            bar.update(done - shown)
            shown = done
            if shown < total:
                time.sleep(0.2)


def _start_web(url: str, port: int | None):
    """The web app on loopback, with an admin token for its dashboard; None if port is 0."""
    if port == 0:
        return None
    from werkzeug.serving import make_server

    from jobqueue import db, tokens
    from web import create_app

    with db.connect(url) as conn:
        token, _ = tokens.create(conn, "demo", ["admin"], note="jobqueue demo")
    # werkzeug's request lines would go to stderr past the log hold of the progress bar.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # A development run: the cookie-signing secret may live in the database.
    server = make_server("127.0.0.1", port or 0, create_app({"DATABASE_URL": url, "DEV": True}),
                         threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    click.echo(f"dashboard: http://127.0.0.1:{server.server_port}/  "
               f"(sign in with the admin token {token})")
    return server


@click.command("demo")
@click.option("--jobs", type=click.IntRange(1, 100000), default=40)
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Dashboard port (default: a free one; 0: no web app).")
@click.option("--stay/--no-stay", default=None,
              show_default="stay when standard output is a terminal",
              help="Keep the dashboard up after the batch, until Ctrl-C.")
@click.option("--campaign/--no-campaign", default=True, show_default=True,
              help="Then run a small AI-visibility campaign on two simulated platforms.")
def demo_command(jobs: int, port, stay: bool | None, campaign: bool) -> None:
    """Everything on this machine: embedded Postgres, a simulated provider, a worker, the web
    app, a batch and an AI-visibility campaign with its report. On a terminal the dashboard
    then stays up until Ctrl-C."""
    if stay is None:
        stay = sys.stdout.isatty()
    try:
        failed = run(database_url(), jobs=jobs, port=port, linger=stay, campaign=campaign)
    except KeyboardInterrupt:
        click.echo("\ndemo interrupted", err=True)
        sys.exit(130)
    if failed:
        raise WorkFailed(f"{failed} job(s) did not succeed")

