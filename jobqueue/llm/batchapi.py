"""The provider's Batch API for large non-urgent batches (`batch submit --via batch-api`).

The life of a provider batch (one row of jobqueue.provider_batches, sql/queries/
provider_batches.sql):
1. hold(): in the submit's own transaction, the batch's new jobs of a platform are cut into
   input files of at most `batch_max_requests` requests and `batch_max_file_bytes` bytes, a
   row per file, and the jobs are leased to the row (not to a worker) for the completion
   window and a margin. No worker slot is held; no worker can claim them.
2. submit(): the file is written from the jobs' payloads (custom_id = job id), uploaded
   (`/v1/files`, purpose batch) and the batch created (`/v1/batches`, 24 h window). The CLI
   does this at once; if it fails, the maintenance leader tries again with backoff.
3. advance(): the maintenance leader (jobqueue/worker/maintenance.py calls the hook this
   module registers) polls each due row with backoff (batch_poll_seconds, doubling, up to
   batch_poll_max_seconds).
4. import_results(): when the provider batch has ended, its output and error files are read
   into the same jobs through the worker's own fenced statements (finish_jobs, retry_jobs):
   answers succeed with their usage and `"via": "batch-api"` (so costs can be priced at batch
   rates); a request's 5xx/429 is retried by the realtime workers while attempts remain, any
   other error dead-letters it; requests an expired, cancelled or failed provider batch never
   ran go back to the realtime queue (`on_expiry = requeue`) or to the dead letters (`dead`).
   A job cancelled meanwhile ends cancelled. `batch wait` and `batch export` see ordinary jobs.

All of it is synchronous (the CLI's world); the maintenance hook runs it in a thread, after a
cheap check on the leader's connection that work is due, and does not wait for it
(maintenance shares the worker's claim and heartbeat connection). A pass uses the database in
short blocks (`Borrow`: in a worker, each block's connection takes the finish link's place),
never across a provider call: a row is held between blocks by its claim (next_poll_at moved
forward by CLAIM_SECONDS, checked by every write), not by a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import openai
import psycopg
import structlog

from jobqueue import db
from jobqueue.db.queries import q
from jobqueue.errors import JobqueueError
from jobqueue.llm import platforms as platform_config
from jobqueue.llm.payloads import chat_request
from jobqueue.llm.platforms import Platform
from jobqueue.llm.redact import Redactor
from jobqueue.worker import link
from jobqueue.worker.maintenance import register_prune_hook

log = structlog.get_logger("jobqueue.batchapi")

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
# The jobs' lease: the completion window and a margin. If nothing ever polls (no platform
# worker runs), the rescuer gives them back to the realtime queue after this.
HOLD_SECONDS = 48 * 3600.0
# A leader's hold on a row it is calling the provider about (pb_claim_due).
CLAIM_SECONDS = 300.0
TERMINAL = frozenset({"completed", "expired", "cancelled", "failed"})
POLICIES = ("requeue", "dead")
ROWS_PER_PASS = 20  # provider batches one maintenance pass looks at, at most


# A source of short database blocks: `with borrow() as conn:` (the CLI's pool, a pass's own
# connection, or the worker's finish link lent to the pass's thread block by block).
Borrow = Callable[[], contextlib.AbstractContextManager[psycopg.Connection]]


class BatchApiError(JobqueueError, ValueError):
    """A batch that cannot go through the Batch API as asked (a request larger than a file)."""


@dataclass(slots=True)
class Outcome:
    """What the import does with one job."""

    job_id: int
    execution: str
    action: str  # "finish" or "retry"
    state: str | None = None  # succeeded, dead, cancelled (finish)
    result: dict | None = None
    error: dict | None = None


# -- 1. hold --------------------------------------------------------------------------------

def request_line(job_id: int, payload: dict, platform: Platform) -> bytes:
    """One line of the provider's input file: the chat request a worker would send."""
    body = chat_request(payload, platform)
    return (json.dumps({"custom_id": str(job_id), "method": "POST", "url": ENDPOINT,
                        "body": body}, ensure_ascii=False, separators=(",", ":"))
            + "\n").encode()


def split(lines: Iterable[tuple[int, bytes]], max_requests: int,
          max_bytes: int) -> Iterator[list[int]]:
    """Job ids cut into files of at most max_requests lines and max_bytes bytes, in order."""
    ids: list[int] = []
    size = 0
    for job_id, line in lines:
        if len(line) > max_bytes:
            raise BatchApiError(f"job {job_id}: its request is {len(line)} bytes, more than "
                                f"a whole input file may be ({max_bytes}, "
                                "batch_max_file_bytes)")
        if ids and (len(ids) == max_requests or size + len(line) > max_bytes):
            yield ids
            ids, size = [], 0
        ids.append(job_id)
        size += len(line)
    if ids:
        yield ids


def hold(conn: psycopg.Connection, batch_id: int, platforms: Iterable[Platform],
         on_expiry: str = "requeue") -> list[tuple[int, str]]:
    """In the submit's transaction: cut the batch's new jobs into provider batches (rows) and
    lease the jobs to them. Returns (row id, platform) per row (submit() each after the
    commit). `conn`
    gives dict rows (the Client's pool does)."""
    if on_expiry not in POLICIES:
        raise ValueError(f"on_expiry: must be one of {', '.join(POLICIES)}")
    made: list[tuple[int, str]] = []
    for platform in platforms:
        key_env = platform.keys()[0].env
        jobs = conn.execute(q("pb_jobs_to_hold"), {"batch_id": batch_id,
                                                   "platform": platform.name}).fetchall()
        lines = ((j["id"], request_line(j["id"], j["payload"], platform)) for j in jobs)
        for ids in split(lines, platform.batch_max_requests, platform.batch_max_file_bytes):
            row = conn.execute(q("pb_create"), {
                "batch_id": batch_id, "platform": platform.name, "key_env": key_env,
                "requests": len(ids), "on_expiry": on_expiry}).fetchone()
            conn.execute(q("pb_lease_jobs"), {"lease": row["lease"], "ids": db.int_array(ids),
                                              "hold_seconds": HOLD_SECONDS})
            made.append((row["id"], platform.name))
    return made


# -- 2. submit ------------------------------------------------------------------------------

def sdk(platform: Platform, key_env: str) -> tuple[openai.OpenAI, Redactor]:
    """A client for the key a provider batch was sent with, and a redactor of that key."""
    keys = {k.env: k for k in platform.keys()}  # noqa: SIM118 - Platform.keys() reads the environment
    key = keys.get(key_env) or next(iter(keys.values()))
    client = openai.OpenAI(api_key=key.secret, base_url=platform.base_url,
                           timeout=max(platform.timeout, 60.0), max_retries=2)
    return client, Redactor([key.secret])


def on(conn: psycopg.Connection) -> Borrow:
    """The blocks of a pass all on one connection of the pass's own (run_due outside a
    worker)."""
    return lambda: contextlib.nullcontext(conn)


def _locked(conn: psycopg.Connection, pb_id: int, status: str, claim: datetime):
    """The row, locked for this transaction, if the caller's claim on it still holds."""
    return conn.execute(q("pb_lock"), {"id": pb_id, "status": status, "claim": claim}).fetchone()


def submit(borrow: Borrow, pb_id: int, platform: Platform,
           claim: datetime | None = None) -> bool:
    """Upload a pending provider batch's file and create the batch. False if someone else is
    at it, it is no longer pending, or the provider failed (then a later pass tries again;
    a provider that refuses the file sends its jobs the on_expiry way). `claim`: the pass's
    hold on the row (pb_claim_due); None takes it here (the CLI's first submit, pb_take).
    The database is used in short blocks around the calls, never during one."""
    with borrow() as conn, conn.transaction():
        if claim is None:  # taking the row locks and reads it
            row = conn.execute(q("pb_take"), {"id": pb_id, "status": "pending",
                                              "hold_seconds": CLAIM_SECONDS}).fetchone()
            claim = row and row["claim"]
        else:
            row = _locked(conn, pb_id, "pending", claim)
        if row is None:
            return False
        jobs = conn.execute(q("pb_leased_jobs"), {"lease": row["lease"]}).fetchall()
        if not jobs:  # every job was taken back meanwhile: nothing to send
            _imported(conn, row, "empty", None, None, (0, 0, 0), None)
            return False
    client, redact = sdk(platform, row["key_env"])
    data = b"".join(request_line(j["id"], j["payload"], platform) for j in jobs)
    try:
        file = client.files.create(
            file=(f"jobqueue-batch-{row['batch_id']}-{pb_id}.jsonl", data,
                  "application/jsonl"), purpose="batch")
        created = client.batches.create(
            input_file_id=file.id, endpoint=ENDPOINT, completion_window=COMPLETION_WINDOW,
            metadata={"jobqueue_batch": str(row["batch_id"]),
                      "jobqueue_provider_batch": str(pb_id)})
    except (openai.BadRequestError, openai.NotFoundError,
            openai.UnprocessableEntityError) as exc:
        message = f"the provider refused the batch: {redact.text(str(exc))}"
        log.warning("provider_batch_refused", provider_batch=pb_id, error=message)
        _import_if_held(borrow, row, claim, "pending", {}, "refused", None, None, message)
        return False
    except openai.APIError as exc:
        with borrow() as conn, conn.transaction():
            if _locked(conn, pb_id, "pending", claim) is not None:
                _retry_later(conn, row, platform, redact.text(str(exc)))
        return False
    with borrow() as conn, conn.transaction():
        held = _locked(conn, pb_id, "pending", claim) is not None
        if held:
            conn.execute(q("pb_submitted"), {
                "id": pb_id, "provider_batch_id": created.id, "input_file_id": file.id,
                "provider_status": created.status, "delay": platform.batch_poll_seconds})
    if not held:  # the hold ran out during the upload and another pass took the row over
        log.warning("provider_batch_claim_lost", provider_batch=pb_id,
                    provider_batch_id=created.id)
        with contextlib.suppress(openai.APIError):
            client.batches.cancel(created.id)
        return False
    log.info("provider_batch_submitted", provider_batch=pb_id, batch_id=row["batch_id"],
             platform=platform.name, requests=len(jobs), provider_batch_id=created.id)
    return True


def _backoff(platform: Platform, polls: int) -> float:
    return min(platform.batch_poll_max_seconds,
               platform.batch_poll_seconds * 2 ** min(polls, 30))


def _retry_later(conn, row, platform: Platform, error: str) -> None:
    log.warning("provider_batch_call_failed", provider_batch=row["id"], error=error)
    conn.execute(q("pb_retry_later"), {"id": row["id"], "error": error[:2000],
                                       "delay": _backoff(platform, row["polls"])})


# -- 3. poll --------------------------------------------------------------------------------

def advance(borrow: Borrow, claimed: dict, platform: Platform) -> str | None:
    """Submit a pending row, or poll a submitted one and import it once it has ended.
    `claimed`: the row as pb_claim_due returned it (whole, and its claim). Returns the
    provider's status (None when there was nothing to do)."""
    pb_id, claim, row = claimed["id"], claimed["claim"], claimed
    if row["status"] == "pending":
        return "submitted" if submit(borrow, pb_id, platform, claim) else None
    if row["status"] != "submitted":
        return None
    client, redact = sdk(platform, row["key_env"])
    try:
        found = client.batches.retrieve(row["provider_batch_id"])
        if found.status not in TERMINAL:
            with borrow() as conn, conn.transaction():
                if _locked(conn, pb_id, "submitted", claim) is not None:
                    conn.execute(q("pb_polled"), {
                        "id": pb_id, "provider_status": found.status,
                        "delay": _backoff(platform, row["polls"])})
            return found.status
        records = {}
        for file_id in (found.output_file_id, found.error_file_id):
            if file_id:
                records.update(_records(client.files.content(file_id).content))
    except openai.APIError as exc:
        with borrow() as conn, conn.transaction():
            if _locked(conn, pb_id, "submitted", claim) is not None:
                _retry_later(conn, row, platform, redact.text(str(exc)))
        return None
    problem = None
    if found.status == "failed" and found.errors and found.errors.data:
        problem = "; ".join(redact.text(str(e.message)) for e in found.errors.data[:3])
    if not _import_if_held(borrow, row, claim, "submitted", records, found.status,
                           found.output_file_id, found.error_file_id, problem):
        return None
    return found.status


def _import_if_held(borrow: Borrow, row: dict, claim: datetime, status: str, records: dict,
                    provider_status: str, output_file_id, error_file_id, problem) -> bool:
    """Import the answers into the row's jobs (read again now: a job cancelled or taken back
    during the calls is seen as it is), in one transaction, if the claim still holds."""
    with borrow() as conn, conn.transaction():
        held = _locked(conn, row["id"], status, claim)
        if held is None:
            return False
        jobs = conn.execute(q("pb_leased_jobs"), {"lease": held["lease"]}).fetchall()
        _import(conn, held, jobs, records, provider_status, output_file_id, error_file_id,
                problem)
    return True


def _records(data: bytes) -> dict[str, dict]:
    """The lines of an output or error file by custom_id (a line that is not JSON is left
    out: its job then counts as never run)."""
    out: dict[str, dict] = {}
    for raw in data.splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
            out[record["custom_id"]] = record
    return out


# -- 4. import ------------------------------------------------------------------------------

def outcome(job: dict, record: dict | None, provider_status: str, on_expiry: str,
            provider_batch: str | None, problem: str | None = None) -> Outcome:
    """What one job becomes, from its line in the output or error file (or none)."""
    attempt, execution = job["attempts"], str(job["execution_id"])
    now = datetime.now(UTC).isoformat()

    def error(kind: str, message: str, **more) -> dict:
        return {"attempt": attempt, "at": now, "type": kind, "message": message,
                "worker": f"batch-api:{provider_batch}",
                "execution_id": f"{job['id']}:{execution}", **more}

    def again_or_dead(err: dict) -> Outcome:
        if attempt < job["max_attempts"]:
            return Outcome(job["id"], execution, "retry", error=err)
        return Outcome(job["id"], execution, "finish", "dead", error=err)

    if job["cancel_requested"]:
        return Outcome(job["id"], execution, "finish", "cancelled",
                       error=error("JobCancelled", "cancelled while the provider held it"))
    response = (record or {}).get("response")
    if isinstance(response, dict):
        status, body = response.get("status_code"), response.get("body") or {}
        if status == 200:
            return Outcome(job["id"], execution, "finish", "succeeded",
                           result=result_of(body, job["payload"], provider_batch))
        said = body.get("error") if isinstance(body.get("error"), dict) else {}
        err = error("ProviderError", f"{status}: {said.get('message') or 'no message'}",
                    status=status, code=said.get("code"))
        if isinstance(status, int) and (status >= 500 or status == 429):
            return again_or_dead(err)
        err["type"] = "Permanent"
        return Outcome(job["id"], execution, "finish", "dead", error=err)
    code = ((record or {}).get("error") or {}).get("code")
    kind = {"batch_expired": "BatchExpired", "batch_cancelled": "BatchCancelled"}.get(
        code, "BatchNotRun")
    message = (f"the provider batch ended {provider_status} before this request ran"
               + (f" ({problem})" if problem else ""))
    err = error(kind, message)
    if on_expiry == "requeue":
        return again_or_dead(err)
    return Outcome(job["id"], execution, "finish", "dead", error=err)


def result_of(body: dict, payload: dict, provider_batch: str | None) -> dict:
    """A job's result from a batched answer, shaped as a worker's (runtime._result), with the
    token usage kept so the cost can be priced at the provider's batch rates."""
    choice = (body.get("choices") or [{}])[0]
    usage = body.get("usage") or {}
    requested = payload.get("model") if isinstance(payload, dict) else None
    return {
        "text": (choice.get("message") or {}).get("content"),
        "finish_reason": choice.get("finish_reason"),
        "model": body.get("model"),
        "requested_model": requested or body.get("model"),
        "fallback": False,
        "cached": False,
        "usage": {"prompt_tokens": usage.get("prompt_tokens"),
                  "completion_tokens": usage.get("completion_tokens"),
                  "total_tokens": usage.get("total_tokens")},
        "via": "batch-api",
        "provider_batch": provider_batch,
    }


def _import(conn, row, jobs, records, provider_status, output_file_id, error_file_id,
            problem) -> None:
    outcomes = [outcome(j, records.get(str(j["id"])), provider_status, row["on_expiry"],
                        row["provider_batch_id"], problem) for j in jobs]
    finish = [o for o in outcomes if o.action == "finish"]
    retry = [o for o in outcomes if o.action == "retry"]
    if finish:
        conn.execute(q("finish_jobs"), {
            "worker": row["lease"],
            "id": db.int_array(o.job_id for o in finish),
            "execution": db.text_array([o.execution for o in finish]),
            "state": db.text_array([o.state for o in finish]),
            "result": db.text_array([None if o.result is None else json.dumps(o.result)
                                     for o in finish]),
            "error": db.text_array([None if o.error is None else json.dumps(o.error)
                                    for o in finish])})
    if retry:
        conn.execute(q("retry_jobs"), {
            "worker": row["lease"],
            "id": db.int_array(o.job_id for o in retry),
            "execution": db.text_array([o.execution for o in retry]),
            "delay": "{" + ",".join("0" for _ in retry) + "}",
            "error": db.text_array([json.dumps(o.error) for o in retry])})
        # the realtime workers of the platform take them from here
        conn.execute("SELECT pg_notify('jobqueue_insert', %(queue)s)", {"queue": row["platform"]})
    counts = (sum(o.state == "succeeded" for o in finish),
              sum(o.state in ("dead", "cancelled") for o in finish), len(retry))
    _imported(conn, row, provider_status, output_file_id, error_file_id, counts, problem)
    log.info("provider_batch_imported", provider_batch=row["id"], batch_id=row["batch_id"],
             provider_status=provider_status, succeeded=counts[0], failed=counts[1],
             requeued=counts[2])


def _imported(conn, row, provider_status, output_file_id, error_file_id, counts,
              problem) -> None:
    conn.execute(q("pb_imported"), {
        "id": row["id"], "provider_status": provider_status,
        "output_file_id": output_file_id, "error_file_id": error_file_id,
        "succeeded": counts[0], "failed": counts[1], "requeued": counts[2],
        "error": problem})


# -- the maintenance leader -----------------------------------------------------------------

def usable_platforms() -> dict[str, Platform]:
    """The platforms this process can call: configured, with their keys in its environment."""
    try:
        found = platform_config.load()
    except (platform_config.ConfigError, OSError):
        return {}
    usable = {}
    for name, platform in found.items():
        try:
            platform.keys()
        except platform_config.ConfigError:
            continue
        usable[name] = platform
    return usable


def run_due(url: str | None = None, limit: int = ROWS_PER_PASS, borrow: Borrow | None = None,
            usable: dict[str, Platform] | None = None) -> int:
    """One pass: claim the due rows (under the maintenance leader's lock) and advance each.
    Returns how many rows were advanced. Synchronous: the hook runs it in a thread, with
    `borrow` lending it the worker's finish link block by block (LinkPool.for_thread); without
    one, the pass opens a connection of its own to `url`. `usable`: the platforms this process
    can call, if the caller has them (usable_platforms)."""
    usable = usable_platforms() if usable is None else usable
    if not usable:
        return 0
    if borrow is None:
        with db.connect(url) as conn:
            return _advance_due(on(conn), limit, usable)
    return _advance_due(borrow, limit, usable)


def _advance_due(borrow: Borrow, limit: int, usable: dict[str, Platform]) -> int:
    with borrow() as conn:
        rows = conn.execute(q("pb_claim_due"), {"platforms": list(usable),
                                                "hold_seconds": CLAIM_SECONDS,
                                                "limit": limit}).fetchall()
    for row in rows:
        try:
            advance(borrow, row, usable[row["platform"]])
        except (psycopg.Error, BatchApiError, OSError) as exc:
            log.warning("provider_batch_failed", provider_batch=row["id"], error=str(exc))
    return len(rows)


_pass: asyncio.Task | None = None  # this process's pass in progress, if any


async def maintenance_hook(conn: psycopg.AsyncConnection) -> int:
    """The hook the maintenance loop runs each pass: a cheap look on its connection, then a
    pass in a thread, started and not awaited. The maintenance connection is the worker's
    claim and heartbeat link: holding it for an upload or a 100 MB download would stop
    claims and let leases lapse. One pass at a time per process; returns 1 if one started."""
    global _pass
    if _pass is not None and not _pass.done():
        return 0
    usable = usable_platforms()
    if not usable:
        return 0
    cur = await conn.execute(q("pb_any_due"), {"platforms": list(usable)})
    due = await cur.fetchone()
    if not due or not due[0]:
        return 0
    _pass = asyncio.get_running_loop().create_task(_run_in_place(link.current.get(), usable))
    _pass.add_done_callback(_log_failure)
    return 1


async def _run_in_place(lent, usable: dict[str, Platform]) -> None:
    """The pass in a thread. Its database blocks each take the place of the worker's finish
    link (closed for the block, so the process stays within three connections); between
    them, while the provider uploads, answers or sends files, outcomes and the limiter's
    statements use the link as usual."""
    borrow = None if lent is None else lent.for_thread()
    await asyncio.to_thread(run_due, None, ROWS_PER_PASS, borrow, usable)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("provider_batches_pass_failed", error=str(task.exception()))


register_prune_hook("provider_batches", maintenance_hook)
