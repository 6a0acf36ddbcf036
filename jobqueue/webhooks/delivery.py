"""The `webhook.deliver` task: send one delivery (jobqueue.webhook_deliveries) as a signed
HTTP POST and record how it went. Registered by jobqueue/builtin_tasks.py, so any worker
serving the `webhooks` queue runs it (`jobqueue worker --queue webhooks`).

One attempt: read the delivery and its subscription (on the worker's connection, borrowed
for the statement, not held during the request), check the URL and every address of its host
(addresses.py), connect to a checked address, POST the body with its signature, read the
status line. 2xx is success; anything else, a redirect included (never followed), a timeout
or a refused connection is a failed attempt, which the worker retries with its usual backoff
until the subscription's max_attempts, then dead-letters. A 429 or 503 with Retry-After waits
that long instead (at most an hour). An address the operator does not allow fails the delivery
at once, unsent. The whole request (connect, send, read the answer's head) is bounded by
JOBQUEUE_WEBHOOK_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
from dataclasses import dataclass

import psycopg
import structlog
from psycopg.rows import dict_row

from jobqueue import settings
from jobqueue.db.queries import q
from jobqueue.errors import InvalidWebhook, Permanent, Retry, WebhookFailed, WebhookRefused
from jobqueue.webhooks import addresses, signing

log = structlog.get_logger("jobqueue.webhooks")

MAX_HEAD_BYTES = 64 * 1024   # an answer's status line and headers, at most
SNIPPET_BYTES = 300          # of an error answer's body, kept for people
MAX_RETRY_AFTER = 3600.0
USER_AGENT = f"jobqueue-webhooks/{settings.VERSION}"
_SAFE_HEADER = re.compile(r"[^\x21-\x7e]")


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: dict[str, str]
    snippet: str


async def deliver(payload, ctx):
    """The task: payload {"delivery_id": N}."""
    delivery_id = payload.get("delivery_id") if isinstance(payload, dict) else None
    if not isinstance(delivery_id, int) or isinstance(delivery_id, bool):
        raise Permanent("payload: delivery_id must be an integer")
    row = await _one(ctx, "webhook_delivery_load", {"id": delivery_id, "job_id": ctx.job_id})
    if row is None:
        return {"skipped": "the delivery or its subscription was removed"}
    if not row["current"]:
        return {"skipped": "redelivered since: a newer job sends it"}
    last = ctx.attempt >= ctx.max_attempts
    try:
        answer = await send(row, ctx.attempt)
    except (InvalidWebhook, WebhookRefused) as exc:
        await _record(row, ctx, "dead", None, str(exc))
        raise Permanent(str(exc)) from None
    except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError,
            asyncio.LimitOverrunError, ValueError) as exc:
        problem = _describe(exc)
        await _record(row, ctx, "dead" if last else "retrying", None, problem)
        raise WebhookFailed(problem) from None
    if 200 <= answer.status < 300:
        await _record(row, ctx, "succeeded", answer.status, None)
        return {"status": answer.status}
    problem = f"HTTP {answer.status} {answer.reason}".strip()
    if 300 <= answer.status < 400:
        problem += (f": redirect to {answer.headers.get('location', '?')[:200]} not followed "
                    "(webhooks never follow redirects; subscribe the final URL)")
    elif answer.snippet:
        problem += f": {answer.snippet}"
    await _record(row, ctx, "dead" if last else "retrying", answer.status, problem)
    wait = _retry_after(answer)
    if wait is not None and not last:
        raise Retry(problem, delay=wait)
    raise WebhookFailed(problem)


def request_body(row: dict) -> bytes:
    """What is sent: the stored event as JSON, or for a `slack` subscription {"text": ...}."""
    event = json.loads(row["body"])
    if row["format"] == "slack":
        event = {"text": render_text(event)}
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


async def send(row: dict, attempt: int) -> Answer:
    """One signed POST of the delivery `row` (webhook_delivery_load's), to a checked address."""
    target = addresses.check_url(row["url"])
    body = request_body(row)
    headers = {
        "Host": target.host_header,
        "User-Agent": USER_AGENT,
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Jobqueue-Event-Id": _header_value(row["event_id"]),
        "Idempotency-Key": _header_value(row["event_id"]),
        "Jobqueue-Event-Type": _header_value(row["event_type"]),
        "Jobqueue-Delivery-Id": str(row["id"]),
        "Jobqueue-Delivery-Attempt": str(attempt),
        signing.HEADER: signing.header(row["secret"], body),
        "Connection": "close",
    }
    timeout = settings.JOBQUEUE_WEBHOOK_TIMEOUT_SECONDS.get()
    async with asyncio.timeout(timeout):
        found = await addresses.resolve(target)
        reader, writer = await _connect(target, found)
        try:
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(f"POST {target.path} HTTP/1.1\r\n{head}\r\n".encode("ascii") + body)
            await writer.drain()
            return await _read_answer(reader)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _connect(target: addresses.Target, found: list[str]):
    """Connect to the first checked address that answers (never to the name itself)."""
    context = ssl.create_default_context() if target.scheme == "https" else None
    problem: OSError | None = None
    for address in found:
        try:
            return await asyncio.open_connection(
                address, target.port, ssl=context, limit=MAX_HEAD_BYTES,
                server_hostname=target.host if context else None)
        except OSError as exc:
            problem = exc
    raise problem or OSError(f"{target.host}: no address to connect to")


async def _read_answer(reader: asyncio.StreamReader) -> Answer:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:100]!r}")
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    snippet = b""
    status = int(parts[1])
    if not 200 <= status < 300 and headers.get("content-length") != "0":
        with contextlib.suppress(TimeoutError, OSError, asyncio.IncompleteReadError):
            async with asyncio.timeout(1.0):  # a little of the body, if it comes at once
                snippet = await reader.read(SNIPPET_BYTES)
    return Answer(status, parts[2] if len(parts) > 2 else "", headers,
                  snippet.decode("utf-8", "replace").strip())


def _retry_after(answer: Answer) -> float | None:
    if answer.status not in (429, 503):
        return None
    try:
        seconds = float(answer.headers.get("retry-after", ""))
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _header_value(value: str) -> str:
    return _SAFE_HEADER.sub("_", value)[:200]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return (f"no answer within {settings.JOBQUEUE_WEBHOOK_TIMEOUT_SECONDS.get()}s "
                "(JOBQUEUE_WEBHOOK_TIMEOUT_SECONDS)")
    if isinstance(exc, asyncio.LimitOverrunError):
        return f"the answer's head is longer than {MAX_HEAD_BYTES} bytes"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "the connection closed before a complete answer"
    return f"{type(exc).__name__}: {exc}"


async def _one(ctx, name: str, params: dict) -> dict | None:
    async with ctx.connection() as conn:  # the worker's, borrowed (not held for the request)
        cur = await conn.cursor(row_factory=dict_row).execute(q(name), params)
        return await cur.fetchone()


async def _record(row: dict, ctx, state: str, code: int | None,
                  error: str | None) -> None:
    """Best effort: the job's own outcome (result or error) says the same if this fails."""
    try:
        async with ctx.connection() as conn:
            await conn.execute(q("webhook_delivery_record"), {
                "id": row["id"], "job_id": ctx.job_id, "state": state,
                "response_code": code, "error": error[:1000] if error else None})
    except psycopg.Error as exc:
        log.warning("webhook_delivery_not_recorded", delivery_id=row["id"], error=str(exc))
    log.info("webhook_delivery", delivery_id=row["id"], subscription_id=row["subscription_id"],
             event_id=row["event_id"], state=state, response_code=code, error=error)


# -- text for people (the `slack` format) ------------------------------------------------------

def _number(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


_METRICS = {"depth": ("waiting jobs", ""), "latency": ("oldest waiting job", "s"),
            "dead": ("dead jobs", "")}


def render_text(event: dict) -> str:
    """One line for a chat channel (Slack's {"text": ...})."""
    kind, data = event.get("type"), event.get("data") or {}
    if kind in ("alert.firing", "alert.resolved"):
        a = data.get("alert", {})
        label, unit = _METRICS.get(a.get("metric"), (a.get("metric"), ""))
        value = ("at least " if a.get("at_least") else "") + _number(a.get("value", 0)) + unit
        threshold = _number(a.get("threshold", 0)) + unit
        if kind == "alert.firing":
            return (f":rotating_light: FIRING: queue {a.get('queue')}: {label} {value}, over "
                    f"{threshold}")
        return (f":white_check_mark: RESOLVED: queue {a.get('queue')}: {label} {value}, back "
                f"to {threshold} or under (firing since {a.get('firing_since')})")
    if kind in ("job.succeeded", "job.dead"):
        job = data.get("job", {})
        text = f"job {job.get('id')} ({job.get('kind')} on {job.get('queue')}) "
        if kind == "job.succeeded":
            return text + "succeeded"
        error = job.get("error") or {}
        return (text + f"is dead after {job.get('attempts')} attempt(s): "
                f"{error.get('type', '')}: {str(error.get('message', ''))[:300]}")
    if kind == "batch.completed":
        batch = data.get("batch", {})
        counts = ", ".join(f"{n} {state}" for state, n in sorted(
            (batch.get("counts") or {}).items()))
        return f"batch {batch.get('id')} ({batch.get('name') or 'unnamed'}) completed: {counts}"
    return f"{kind}: {json.dumps(data, default=str)[:500]}"
