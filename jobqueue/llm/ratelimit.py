"""The provider rate limiter, shared by every process through Postgres.

Each (platform, model, key) has a request bucket and a token bucket (sql/queries.sql,
`rate_reserve`). Before a call a job reserves 1 request and an estimate of its tokens from the
key with the most headroom; after it, the reservation is settled with the real usage and the
provider's `x-ratelimit-*` headers. A 429 blocks the key for every process until its
retry-after has passed.

Within a process, waiters for one model queue on an asyncio.Lock (FIFO): only the head of the
queue polls the database, so two hundred waiting calls cost one query per refill interval
rather than a herd. Waiting is not a failed attempt; it holds the job's lease like any work.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from psycopg_pool import AsyncConnectionPool

from jobqueue.db.queries import q
from jobqueue.errors import NoUsableKey as NoUsableKey
from jobqueue.llm.platforms import ApiKey, Platform

log = structlog.get_logger("jobqueue.ratelimit")


@dataclass(frozen=True)
class Grant:
    key: ApiKey
    model: str
    cost: int
    waited: float


def estimate_tokens(messages: list[dict], max_tokens: int) -> int:
    """What providers count against TPM before answering: prompt characters / 4 plus the
    completion tokens the request allows."""
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(part.get("text", "")) for part in content if isinstance(part, dict))
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
        self.pool = pool
        self._queues: dict[str, asyncio.Lock] = {}
        self._ensured: set[str] = set()

    def models(self) -> list[str]:
        p = self.platform
        return [p.model] + ([p.fallback_model] if p.fallback_model else [])

    async def ensure(self, models: list[str] | None = None) -> None:
        """Create or update the buckets of each model for this platform's keys."""
        async with self.pool.connection() as conn:
            for model in models or self.models():
                self._ensured.add(model)
                rpm, tpm = self.platform.limits(model)
                await conn.execute(q("rate_ensure"), {
                    "platform": self.platform.name, "model": model, "keys": self.key_ids,
                    "rpm": rpm, "tpm": tpm, "burst_seconds": self.platform.burst_seconds})

    async def acquire(self, cost: int, model: str, fallback: str | None = None,
                      budget: float | None = None) -> Grant:
        """Wait for budget on `model`; past `budget` seconds, take `fallback` instead."""
        started = time.monotonic()
        deadline = started + budget if fallback and budget is not None else None
        if model not in self._ensured:
            # A job may name a model of its own: it gets buckets with the platform's limits.
            await self.ensure([model])
        queue = self._queues.setdefault(model, asyncio.Lock())
        async with queue:
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                key_id, wait = await self._reserve(model, cost)
                if key_id is not None:
                    return Grant(self.keys[key_id], model, cost, time.monotonic() - started)
                if wait is None:
                    raise NoUsableKey(f"platform {self.platform.name}: every key is disabled "
                                      f"for {model}")
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                # A hair of jitter keeps processes that computed the same wait from colliding.
                await asyncio.sleep(wait + random.uniform(0.0005, 0.003))
        log.info("llm_fallback", platform=self.platform.name, model=model, fallback=fallback,
                 waited=round(time.monotonic() - started, 3))
        grant = await self.acquire(cost, fallback)
        return Grant(grant.key, grant.model, cost, time.monotonic() - started)

    async def _reserve(self, model: str, cost: int) -> tuple[str | None, float | None]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(q("rate_reserve"), {
                "platform": self.platform.name, "model": model, "keys": self.key_ids,
                "cost": cost})
            key_id, wait = await cur.fetchone()
        return key_id, wait

    async def settle(self, grant: Grant, actual: int, headers: Mapping[str, str]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(q("rate_settle"), {
                "platform": self.platform.name, "model": grant.model,
                "key_id": grant.key.key_id, "estimated": grant.cost, "actual": actual,
                "remaining_requests": _number(headers, "x-ratelimit-remaining-requests"),
                "remaining_tokens": _number(headers, "x-ratelimit-remaining-tokens"),
                "limit_requests": _int(headers, "x-ratelimit-limit-requests"),
                "limit_tokens": _int(headers, "x-ratelimit-limit-tokens")})

    async def block(self, grant: Grant, seconds: float) -> None:
        """After a 429: block the key everywhere for `seconds` plus jitter."""
        seconds = seconds * random.uniform(1.0, 1.2) + random.uniform(0, 0.05)
        async with self.pool.connection() as conn:
            await conn.execute(q("rate_block"), {
                "platform": self.platform.name, "model": grant.model,
                "key_id": grant.key.key_id, "seconds": seconds})
        log.warning("llm_rate_limited", platform=self.platform.name, model=grant.model,
                    key=grant.key.key_id, blocked_seconds=round(seconds, 3))

    async def disable(self, key: ApiKey, reason: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(q("rate_disable"), {
                "platform": self.platform.name, "key_id": key.key_id, "reason": reason})
        log.error("llm_key_disabled", platform=self.platform.name, key=key.key_id,
                  reason=reason, action="top up or replace the key, then restart the workers")


def _int(headers: Mapping[str, str], name: str) -> int | None:
    value = _number(headers, name)
    return int(value) if value is not None and value > 0 else None
