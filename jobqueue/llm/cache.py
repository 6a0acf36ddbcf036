"""The LLM response cache, in Postgres.

The key is a hash of the canonical request (base_url, model, messages, parameters). It is
checked before the rate limiter, so a hit spends no budget. Identical requests in flight at
the same time make one call: within a process they share a future; across processes the first
claims a pending row and the others wait for its answer (or take over if it gives up).

The pending row lives as long as its call: the caller refreshes it every third of
`pending_seconds` while the call waits for rate-limit budget or runs, so a long wait behind a
tight limit never lets it lapse (and another process call again). Only a caller that died
stops refreshing; its row lapses after `pending_seconds` and the next identical request calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from jobqueue.db.queries import q
from jobqueue.worker.maintenance import register_prune_hook

CACHED_PARAMS = ("max_tokens", "temperature", "top_p", "seed", "response_format", "stop",
                 "presence_penalty", "frequency_penalty")


def cache_key(base_url: str, request: dict) -> str:
    canonical = {
        "base_url": base_url.rstrip("/"),
        "model": request["model"],
        "messages": request["messages"],
        "params": {k: request[k] for k in CACHED_PARAMS if request.get(k) is not None},
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def is_deterministic(request: dict) -> bool:
    return request.get("temperature") == 0 or request.get("seed") is not None


class ResponseCache:
    def __init__(self, pool: AsyncConnectionPool, ttl_seconds: float,
                 pending_seconds: float = 60.0):
        self.pool = pool
        self.ttl = ttl_seconds
        self.pending = pending_seconds
        self._in_flight: dict[str, asyncio.Future] = {}

    async def get_or_call(
            self, key: str, call: Callable[[], Awaitable[tuple[Any, bool]]]) -> tuple[Any, bool]:
        """Return (response, hit). `call` returns (response, cacheable)."""
        shared = self._in_flight.get(key)
        if shared is not None:
            response, _ = await asyncio.shield(shared)
            async with self.pool.connection() as conn:  # count the hit like any other
                await conn.execute(q("cache_get"), {"key": key})
            return response, True
        future = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            result = await self._get_or_call(key, call)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        finally:
            del self._in_flight[key]

    async def _get_or_call(self, key, call) -> tuple[Any, bool]:
        poll = 0.02
        while True:
            async with self.pool.connection() as conn:
                row = await (await conn.execute(q("cache_get"), {"key": key})).fetchone()
                if row is not None:
                    return row[0], True
                claimed = await (await conn.execute(q("cache_claim"), {
                    "key": key, "pending_seconds": self.pending})).fetchone()
            if claimed is not None:
                break
            # Another process is making this very call: wait for its answer.
            await asyncio.sleep(poll)
            poll = min(poll * 2, 0.5)
        refresher = asyncio.create_task(self._keep_pending(key))
        try:
            response, cacheable = await call()
        except BaseException:
            refresher.cancel()
            async with self.pool.connection() as conn:
                await conn.execute(q("cache_release"), {"key": key})
            raise
        refresher.cancel()
        async with self.pool.connection() as conn:
            if cacheable:
                await conn.execute(q("cache_put"), {
                    "key": key, "response": Jsonb(response), "ttl_seconds": self.ttl})
            else:
                await conn.execute(q("cache_release"), {"key": key})
        return response, False

    async def _keep_pending(self, key: str) -> None:
        """Keep this caller's pending row alive while its call waits or runs."""
        while True:
            await asyncio.sleep(self.pending / 3)
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(q("cache_keep_pending"), {
                        "key": key, "pending_seconds": self.pending})
            except Exception:  # a missed refresh is retried on the next tick
                continue


async def prune_expired(conn) -> int:
    """The cache's maintenance hook: drop a slice of expired entries (leader-gated in SQL)."""
    cur = await conn.execute(q("prune_cache"), {"limit": 10000})
    return cur.rowcount


register_prune_hook("llm_cache", prune_expired)
