"""The provider rate limiter, shared by every process through Postgres.

Each (platform, model, key) has a request bucket and a token bucket (sql/queries/limits.sql,
`rate_reserve`); with `limit_scope = "key"` every model of a key shares the bucket of model
"*". Before a call a job reserves 1 request and an estimate of its tokens from the key with
the most headroom; after it, the reservation is settled with the real usage, and the
provider's `x-ratelimit-remaining-*` headers (its own count for every process together) set
the level, up or down, minus what is still in flight. A 429 blocks the key for every process
until its retry-after has passed; the key then restarts from empty buckets at a slower pace
(AIMD: x0.7 per 429, +0.02 per accepted call), so a key that keeps being refused backs off
until the provider stops refusing.

The fallback model answers only while the provider itself limits the main model (a 429 or
headers saying nothing is left) and waiting for it would take longer than `latency_budget`;
a job that only waits behind our own backlog waits for the main model.

Within a process, waiters for one model queue on an asyncio.Lock (FIFO): only the head of the
queue polls the database, so two hundred waiting calls cost one query per refill interval
rather than a herd. Waiting is not a failed attempt; it holds the job's lease like any work.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from jobqueue.db.queries import q
from jobqueue.errors import NoUsableKey as NoUsableKey
from jobqueue.llm.platforms import ApiKey, Platform
from jobqueue.llm.redact import Redactor

log = structlog.get_logger("jobqueue.ratelimit")


@dataclass(frozen=True)
class Grant:
    key: ApiKey
    model: str  # the model to call
    cost: int
    waited: float
    bucket: str = ""  # the bucket it was taken from: the model, or "*" for a key-wide budget

    @property
    def bucket_model(self) -> str:
        return self.bucket or self.model


# A 429 message naming the model whose limit was hit ("Rate limit reached for MODEL in ...").
_NAMED_MODEL = re.compile(r"\bfor ([\w.:/-]+) in organization\b")


def names_another_limit(message: str, model: str) -> bool:
    """Whether a 429's message shows a limit wider than `model`'s own: it names no model, or
    another one (the provider counts every model against the key)."""
    if "rate limit" not in message.lower():
        return False  # not a message about a rate limit: it teaches nothing
    named = _NAMED_MODEL.search(message)
    return named is None or named.group(1) != model


def key_state(row: Mapping) -> str:
    """A key's bucket (a row of `rate_state`) in one word: "disabled: REASON" (a 401/403,
    out of quota, or an operator), "blocked" (a 429's retry-after has not passed) or "ok".
    What `status`, `keys list` and the /metrics headroom say of it."""
    if row["disabled_reason"]:
        return f"disabled: {row['disabled_reason']}"
    blocked = row["blocked_until"]
    if blocked and blocked > datetime.now(blocked.tzinfo):
        return "blocked"
    return "ok"


def set_key_disabled(conn: psycopg.Connection, name: str, platform: str | None,
                     reason: str | None) -> list[dict]:
    """Disable (a reason) or enable (None) the key `name`, a key id or its variable's name,
    on `platform` or every platform: `jobqueue keys enable|disable` and the dashboard's
    button. Workers see it at their next reservation. Returns the keys changed."""
    return conn.execute(q("rate_key_set_disabled"), {
        "name": name, "platform": platform, "reason": reason}).fetchall()


def estimate_tokens(messages: list[dict], max_tokens: int) -> int:
    """What providers count against TPM before answering: prompt characters / 4 plus the
    completion tokens the request allows."""
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(part["text"]) for part in content
                         if isinstance(part, dict) and isinstance(part.get("text"), str))
    return math.ceil(chars / 4) + max_tokens


def _number(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms`, else `retry-after` (seconds or an HTTP date)."""
    ms = _number(headers, "retry-after-ms")
    if ms is not None:
        return ms / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


class Limiter:
    def __init__(self, platform: Platform, keys: list[ApiKey], pool: AsyncConnectionPool):
        self.platform = platform
        self.keys = {k.key_id: k for k in keys}
        self.key_ids = list(self.keys)
        self.redact = Redactor(k.secret for k in keys)
        self.pool = pool
        self._queues: dict[str, asyncio.Lock] = {}
        self._ensured: set[str] = set()
        self.scope = platform.limit_scope

    def models(self) -> list[str]:
        p = self.platform
        return [p.model] + ([p.fallback_model] if p.fallback_model else [])

    def bucket(self, model: str) -> str:
        """The bucket a call to `model` draws from."""
        return "*" if self.scope == "key" else model

    async def ensure(self, models: list[str] | None = None) -> None:
        """Create or update the buckets of each model for this platform's keys (one key-wide
        bucket, with the main model's limits, when the provider limits per key)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(q("rate_scope_get"), {"platform": self.platform.name})
            learned = await cur.fetchone()
            if learned is not None:
                self.scope = learned[0]
            for model in models or self.models():
                self._ensured.add(model)
                bucket = self.bucket(model)
                rpm, tpm = self.platform.limits(model if bucket != "*" else self.platform.model)
                await conn.execute(q("rate_ensure"), {
                    "platform": self.platform.name, "model": bucket, "keys": self.key_ids,
                    "rpm": rpm, "tpm": tpm, "burst_seconds": self.platform.burst_seconds})

    async def acquire(self, cost: int, model: str, fallback: str | None = None,
                      budget: float | None = None) -> Grant:
        """Wait for budget on `model`. Take `fallback` instead only while the provider limits
        `model` (not our own pacing) and the main model's wait would pass `budget` seconds."""
        started = time.monotonic()
        if model not in self._ensured:
            # A job may name a model of its own: it gets buckets with the platform's limits.
            await self.ensure([model])
        bucket = self.bucket(model)
        if fallback is not None and self.bucket(fallback) == bucket:
            fallback = None  # one budget for both models: the fallback would not add any
        queue = self._queues.setdefault(bucket, asyncio.Lock())
        async with queue:
            while True:
                bucket = self.bucket(model)  # a 429 may have taught a key-wide budget meanwhile
                key_id, wait, limited = await self._reserve(bucket, cost)
                if key_id is not None:
                    return Grant(self.keys[key_id], model, cost, time.monotonic() - started,
                                 bucket)
                if wait is None:
                    raise NoUsableKey(f"platform {self.platform.name}: every key is disabled "
                                      f"for {model}")
                waited = time.monotonic() - started
                if (fallback is not None and budget is not None and limited
                        and waited + wait > budget):
                    break
                if fallback is not None and budget is not None:
                    # Look again soon: the provider may say meanwhile that it limits the model.
                    wait = min(wait, max(0.05, budget - waited), 1.0)
                # A hair of jitter keeps processes that computed the same wait from colliding.
                await asyncio.sleep(wait + random.uniform(0.0005, 0.003))
        log.info("llm_fallback", platform=self.platform.name, model=model, fallback=fallback,
                 waited=round(time.monotonic() - started, 3))
        grant = await self.acquire(cost, fallback)
        return Grant(grant.key, grant.model, cost, time.monotonic() - started, grant.bucket)

    async def _reserve(self, bucket: str, cost: int) -> tuple[str | None, float | None, bool]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(q("rate_reserve"), {
                "platform": self.platform.name, "model": bucket, "keys": self.key_ids,
                "cost": cost})
            key_id, wait, limited = await cur.fetchone()
        return key_id, wait, limited

    async def settle(self, grant: Grant, actual: int, headers: Mapping[str, str]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(q("rate_settle"), {
                "platform": self.platform.name, "model": grant.bucket_model,
                "key_id": grant.key.key_id, "estimated": grant.cost, "actual": actual,
                "remaining_requests": _number(headers, "x-ratelimit-remaining-requests"),
                "remaining_tokens": _number(headers, "x-ratelimit-remaining-tokens"),
                "limit_requests": _int(headers, "x-ratelimit-limit-requests"),
                "limit_tokens": _int(headers, "x-ratelimit-limit-tokens")})

    async def release(self, grant: Grant) -> None:
        """The call ended without the provider's word on the budget (5xx, timeout, ...)."""
        async with self.pool.connection() as conn:
            await conn.execute(q("rate_release"), {
                "platform": self.platform.name, "model": grant.bucket_model,
                "key_id": grant.key.key_id, "estimated": grant.cost})

    async def block(self, grant: Grant, seconds: float, message: str = "") -> None:
        """After a 429: block the key everywhere for `seconds` plus jitter. A message showing
        that the provider counts every model against the key switches the platform (every
        process, through Postgres) to key-wide buckets."""
        seconds = seconds * random.uniform(1.0, 1.2) + random.uniform(0, 0.05)
        async with self.pool.connection() as conn:
            await conn.execute(q("rate_block"), {
                "platform": self.platform.name, "model": grant.bucket_model,
                "key_id": grant.key.key_id, "seconds": seconds, "estimated": grant.cost})
        log.warning("llm_rate_limited", platform=self.platform.name, model=grant.model,
                    key=grant.key.key_id, blocked_seconds=round(seconds, 3))
        if self.scope == "model" and names_another_limit(message, grant.model):
            await self.learn_key_scope(self.redact.text(message)[:300])

    async def learn_key_scope(self, evidence: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(q("rate_scope_learn"), {"platform": self.platform.name,
                                                       "evidence": evidence})
        self.scope = "key"
        self._ensured.clear()
        self._queues.clear()
        await self.ensure()
        log.warning("llm_limit_scope_learned", platform=self.platform.name, scope="key",
                    evidence=evidence)

    async def disable(self, key: ApiKey, reason: str, action: str) -> None:
        """Take this one key out of use for every process; the others go on."""
        reason = self.redact.text(reason)  # provider text: stored and logged below
        async with self.pool.connection() as conn:
            await conn.execute(q("rate_disable"), {
                "platform": self.platform.name, "key_id": key.key_id, "reason": reason})
        log.error("llm_key_disabled", platform=self.platform.name, key=key.key_id,
                  reason=reason, action=action)


def _int(headers: Mapping[str, str], name: str) -> int | None:
    value = _number(headers, name)
    return int(value) if value is not None and value > 0 else None
