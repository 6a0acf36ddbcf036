"""A campaign run: one fan-out batch (a chat job per prompt x platform x sample, named after
the campaign and the fire time, each carrying the campaign in its metadata so its spend is
charged to it) and, for each answer, a `campaign.extract` job that depends on it. All in the
caller's transaction: a schedule's fire (jobqueue/schedules/tick.py, target type
'campaign') records its run row in the same one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

import psycopg
import structlog

from jobqueue.batches.files import BatchRow
from jobqueue.batches.specs import Target, fanout
from jobqueue.campaigns import store
from jobqueue.campaigns.model import InvalidCampaign, settings_of
from jobqueue.jobs import JobSpec

log = structlog.get_logger("jobqueue.campaigns")

EXTRACT_TASK = "campaign.extract"


def batch_name(campaign: str, fire_at: datetime) -> str:
    return f"campaign {campaign} @ {fire_at:%Y-%m-%d %H:%M}Z"


def chat_specs(campaign: dict, targets: Sequence[Target]) -> Iterator[JobSpec]:
    """The run's chat jobs, in prompt, platform, sample order: the batch fan-out of the
    prompts, each job's metadata naming the campaign, the prompt's index and the sample."""
    rows = [BatchRow(line=index + 1, messages=prompt["messages"], model=prompt.get("model"),
                     max_tokens=prompt.get("max_tokens"),
                     temperature=prompt.get("temperature"),
                     metadata=dict(prompt.get("metadata") or {}) | {
                         "campaign": campaign["name"], "prompt": index})
            for index, prompt in enumerate(campaign["prompts"])]
    for sample, spec in fanout(rows, targets, campaign["samples"]):
        spec.metadata = spec.metadata | {"sample": sample}
        yield spec


def run(conn: psycopg.Connection, campaign: dict, fire_at: datetime,
        decision: str = "manual", platforms: dict | None = None) -> dict:
    """Submit one run of `campaign` (a row of store.get, read once by the caller) in the
    caller's transaction: {"batch_id", "jobs", "extracts", "extract_ids"}. InvalidCampaign
    when a platform is gone."""
    from jobqueue.client import insert_batch, insert_specs

    name = campaign["name"]
    names = campaign["platforms"]
    targets = [Target(p.name, p.max_attempts) for p in settings_of(names, platforms)]
    with conn.transaction():
        submitted = insert_batch(
            conn, chat_specs(campaign, targets), queue=campaign["platforms"][0],
            owner=campaign["owner"], name=batch_name(name, fire_at),
            metadata={"campaign": name, "campaign_id": campaign["id"],
                      "fire_at": fire_at.isoformat(), "decision": decision})
        answers = submitted.ids  # the chat jobs, as inserted (not read back)
        extracts = [JobSpec(EXTRACT_TASK, {"campaign_id": campaign["id"], "answer": job_id},
                            depends_on=[job_id], owner=campaign["owner"],
                            metadata={"campaign": name})
                    for job_id in answers]
        extract_ids = [job_id for job_id, _ in insert_specs(conn, extracts)] if extracts else []
    log.info("campaign_run", campaign=name, batch_id=submitted.batch_id, jobs=len(answers),
             fire_at=fire_at.isoformat(), decision=decision)
    return {"batch_id": submitted.batch_id, "jobs": len(answers), "extracts": len(extracts),
            "extract_ids": extract_ids}


def run_now(conn: psycopg.Connection, campaign: dict, now: datetime,
            platforms: dict | None = None) -> dict:
    """`campaigns run` of `campaign` (a row of store.get): a scheduled campaign fires its
    schedule (a manual run row records it; the fire reads the campaign again, in its own
    transaction); one without a schedule runs directly. {"batch_id", ...} or
    InvalidCampaign."""
    from jobqueue.schedules import tick

    if campaign["cron"] is None:
        with conn.transaction():
            return run(conn, campaign, now, "manual", platforms)
    fired = tick.run_now(conn, store.schedule_name(campaign["name"]), now, platforms)
    if fired is None or fired["decision"] == "failed":
        raise InvalidCampaign(f"campaign: the run failed ({(fired or {}).get('reason')})")
    return {"batch_id": fired["batch_id"], "run_id": fired["id"]}
