"""`jobqueue demo`'s second part: a small AI-visibility campaign across two simulated platforms
(the simulator answers recommendation prompts with seeded brand lists), its answers analysed
by campaign.extract jobs, then its report and what it cost. Nothing leaves the machine."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime

import click
import psycopg
from psycopg.rows import dict_row

from jobqueue.llm.platforms import Platform
from jobqueue.llm.prices import Price, PriceTable
from jobqueue.llm.runtime import PlatformRuntime
from jobqueue.sim.server import FakeOpenAI
from jobqueue.worker import Worker, WorkerConfig

BRANDS = ["Acme CRM", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay"]
PROMPTS = ["Which CRM would you recommend for a five-person sales team?",
           "What is the best CRM for a startup on a budget?",
           "Top CRM tools for real-estate agencies?",
           "Which CRM is best for customer support teams?"]
# Simulated models at made-up prices (USD per 1M tokens), so the demo shows a cost.
MODELS = {"demo-gpt": ("sim-gpt", Price(input=0.40, output=1.60)),
          "demo-gemini": ("sim-gemini", Price(input=0.30, output=2.50))}


def run(url: str, sim: FakeOpenAI, keys: dict[str, str]) -> None:
    """Save the campaign `demo-crm`, run it once, wait for every answer to be analysed and
    print the report and the cost."""
    from jobqueue.campaigns import model, report, runs, store
    from jobqueue.cli.campaigns import format_report
    from jobqueue.db import store as store_jobs

    sim.configure(brands=BRANDS)
    prices = PriceTable({m: p for m, p in MODELS.values()})
    platforms = {name: Platform(name=name, base_url=sim.base_url, model=m, rpm=600,
                                tpm=100_000, api_key_env=tuple(keys), concurrency=20,
                                max_tokens=300, timeout=10.0)
                 for name, (m, _) in MODELS.items()}
    workers = []
    for platform in platforms.values():
        runtime = PlatformRuntime(platform, url, environ=keys, prices=prices)
        workers.append(Worker(url, WorkerConfig(queue=platform.name, concurrency=20),
                              tasks=runtime.registry(), on_start=runtime.start,
                              on_stop=runtime.stop))
    from jobqueue import builtin_tasks  # noqa: F401 (registers campaign.extract)
    workers.append(Worker(url, WorkerConfig(queue="default", concurrency=10)))
    threads = [threading.Thread(target=lambda w=w: asyncio.run(w.run()), daemon=True)
               for w in workers]
    for t in threads:
        t.start()
    try:
        spec = model.build({"name": "demo-crm", "platforms": list(platforms), "samples": 2,
                            "prompts": PROMPTS, "brands": [{"name": "Acme CRM",
                                                            "aliases": ["Acme"]}],
                            "competitors": BRANDS[1:]}, platforms=platforms)
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            store.save(conn, spec, datetime.now(UTC), replace=True)
            campaign = store.get(conn, spec.name)
            started = runs.run(conn, campaign, datetime.now(UTC), platforms=platforms)
            click.echo(f"campaign {spec.name}: {len(PROMPTS)} prompts x "
                       f"{len(platforms)} simulated platforms x 2 samples = "
                       f"{started['jobs']} answers (batch {started['batch_id']}), "
                       f"each analysed by a dependent campaign.extract job")
            # Every extract job ends (an answer that died cancels its extract, which then
            # adds no row to count): wait for those, not for a number of analysed answers.
            deadline = time.monotonic() + 120
            while (store_jobs.unfinished(conn, started["extract_ids"])
                   and time.monotonic() < deadline):
                time.sleep(0.2)
            data = report.build(conn, campaign)
            click.echo(format_report(data, store.spend(conn, spec.name)))
        click.echo(f"again any time: jobqueue campaigns run {spec.name}; "
                   f"jobqueue campaigns report {spec.name} --csv report.csv")
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(30)
