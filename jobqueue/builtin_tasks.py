"""Tasks every worker knows: for smoke tests, benchmarks and the demo; `webhook.deliver`,
which sends webhook deliveries (jobqueue/webhooks/delivery.py) on the `webhooks` queue; and
`campaign.extract`, which analyses a campaign's answers (jobqueue/campaigns/extract.py)."""

from __future__ import annotations

import asyncio

from jobqueue.tasks import task
from jobqueue.webhooks import TASK as WEBHOOK_TASK


@task(WEBHOOK_TASK)
async def deliver_webhook(payload, ctx):
    """Send one webhook delivery. Its module (HTTP, signing, address checks) is imported on
    first use: most workers never deliver one, and every worker's start-up would pay it."""
    from jobqueue.webhooks.delivery import deliver

    return await deliver(payload, ctx)


@task("campaign.extract")
async def extract_campaign_answer(payload, ctx):
    """Analyse one campaign answer (jobqueue/campaigns/extract.py), imported on first use like
    the webhook task: a worker's start-up pays for neither."""
    from jobqueue.campaigns.extract import extract_task

    return await extract_task(payload, ctx)


@task("noop")
async def noop(payload):
    """Does nothing: measures the queue itself."""
    return None


@task("echo")
async def echo(payload):
    return payload


@task("sleep")
async def sleep(payload, ctx):
    """Sleeps payload["seconds"], reporting progress each tenth."""
    seconds = float(payload.get("seconds", 1.0))
    for step in range(10):
        await asyncio.sleep(seconds / 10)
        ctx.set_progress({"done": step + 1, "total": 10})
    return {"slept": seconds}


@task("fail")
async def fail(payload):
    """Fails with payload["message"]: exercises retries and dead letters."""
    raise RuntimeError(payload.get("message", "failing on purpose"))


@task("latency_probe")
async def latency_probe(payload):
    """For `jobqueue bench`: how long after its enqueue call this job started (ms)."""
    import time

    return {"latency_ms": (time.time() - payload["t"]) * 1000}
