"""The runtime's cost accounting: what each provider call costs, charged to its job's scope
(owner, batch, campaign) in the `llm_spend` rollup, and the budgets held before each call.

Budgets are held by reservation: before a call is sent, its estimated cost (an upper bound:
the prompt's estimated tokens plus max_tokens, at the dearer of the main and fallback model's
prices) is reserved under a row lock on every budget over the call's scopes, and only if each
has room for it; after the call, the reservation is swapped for the real cost in one
transaction. So concurrent calls, on any number of processes, cannot together pass a budget:
spend stops within one call's estimate of it. A call with no room raises OverBudget, which
gives the job back unspent (attempts untouched) to wait, visibly paused, until the budget is
raised or its period rolls over.

Only LLM calls pay for this: one statement per call when no budget applies, a short
transaction of three more when one does, and one upsert into the rollup after the call; jobs
of other queues never touch these tables.
"""

from __future__ import annotations

import math
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import structlog
from psycopg_pool import AsyncConnectionPool

from jobqueue.db.queries import q
from jobqueue.errors import OverBudget
from jobqueue.llm.prices import PriceTable

log = structlog.get_logger("jobqueue.llm")

PAUSE_SECONDS = 30.0  # a job over budget is looked at again after this (or when raised)
_SCOPES_KEPT = 10_000  # job id -> scope lookups remembered per process


@dataclass(frozen=True)
class Scope:
    """Whom a call is charged to. '' and 0 mean none. A campaign's jobs name it in their
    metadata (jobqueue/campaigns/runs.py)."""

    owner: str = ""
    batch_id: int = 0
    campaign: str = ""

    def params(self) -> dict:
        return {"owner": self.owner or None, "batch": str(self.batch_id) if self.batch_id
                else None, "campaign": self.campaign or None}


NO_SCOPE = Scope()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @classmethod
    def of(cls, response) -> Usage | None:
        """The usage an SDK response (chat or embeddings) reports; None if it reports none."""
        usage = getattr(response, "usage", None)
        if usage is None:
            return None
        details = getattr(usage, "prompt_tokens_details", None)
        return cls(prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                   completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                   cached_tokens=getattr(details, "cached_tokens", 0) or 0)


class Spend:
    """Reserve, settle and record the cost of one platform's calls."""

    def __init__(self, pool: AsyncConnectionPool, platform: str, prices: PriceTable,
                 call_timeout: float):
        self.pool = pool
        self.platform = platform
        self.prices = prices
        # a reservation outlives the call it covers; a dead worker's lapses after this
        self.reservation_seconds = call_timeout * 2 + 60
        self._scopes: OrderedDict[int, Scope] = OrderedDict()
        # Prompt tokens the provider counted per token estimated (characters / 4), learned
        # from answered calls: text that tokenizes worse than English (code, other scripts)
        # raises it, so a budget's reservations stay an upper bound. Never below 1.
        self.prompt_ratio = 1.0

    def cost(self, model: str, usage: Usage | None) -> float | None:
        if usage is None:
            return None
        return self.prices.cost(model, usage.prompt_tokens, usage.completion_tokens,
                                usage.cached_tokens)

    def estimate(self, models: list[str], prompt_tokens: int, max_output: int) -> float | None:
        """The most a call can cost on any of `models`; None if one has no price."""
        prompt = math.ceil(prompt_tokens * self.prompt_ratio)
        costs = [self.prices.cost(m, prompt, max_output) for m in models]
        return None if any(c is None for c in costs) else max(costs)

    async def scope(self, job_id: int | None) -> Scope:
        """The job's scope (looked up once per job id and process)."""
        if job_id is None:
            return NO_SCOPE
        found = self._scopes.get(job_id)
        if found is None:
            async with self.pool.connection() as conn:
                cur = await conn.execute(q("spend_job_scope"), {"id": job_id})
                row = await cur.fetchone()
            found = Scope(owner=row[0], batch_id=row[1], campaign=row[2]) if row else NO_SCOPE
            self._scopes[job_id] = found
            if len(self._scopes) > _SCOPES_KEPT:
                self._scopes.popitem(last=False)
        return found

    async def check(self, scope: Scope, estimate_usd: float | None, model: str) -> None:
        """OverBudget now if a budget over `scope` has no room for the call, without
        reserving: asked before the call waits for rate-limit budget, so a paused job does
        not take a place in the limiter's queue only to give it back."""
        await self.reserve(scope, estimate_usd, model, hold=False)

    async def reserve(self, scope: Scope, estimate_usd: float | None, model: str,
                      hold: bool = True) -> str | None:
        """Reserve `estimate_usd` on every budget over `scope`; the reservation's id (None
        when no budget applies). OverBudget when one has no room (or the model no price).
        `hold=False`: only check."""
        if scope == NO_SCOPE:
            return None
        params = scope.params()
        async with self.pool.connection() as conn:
            # The common case, no budget over the scope, costs one statement and no
            # transaction. (A budget set while this call is on its way applies from the next.)
            cur = await conn.execute(q("budget_exists"), params)
            if not (await cur.fetchone())[0]:
                return None
        async with self.pool.connection() as conn, conn.transaction():
            locked = await (await conn.execute(q("budget_lock"), params)).fetchall()
            if not locked:
                return None
            budgets = await (await conn.execute(q("budget_headroom"), params)).fetchall()
            for b_scope, b_id, period, limit_usd, spent, reserved in budgets:
                what = f"{b_scope} {b_id}: {period} budget ${float(limit_usd):.4f}"
                if estimate_usd is None:
                    raise _paused(f"{what}: model {model} has no price, so the budget cannot "
                                  f"be held (add [prices.\"{model}\"] to jobqueue.toml)",
                                  b_scope, b_id, period, limit_usd, spent)
                if float(spent) + float(reserved) + estimate_usd > float(limit_usd):
                    raise _paused(f"{what} reached (${float(spent):.4f} spent, "
                                  f"${float(reserved):.4f} in flight, this call needs up to "
                                  f"${estimate_usd:.4f})", b_scope, b_id, period, limit_usd,
                                  spent)
            if not hold:
                return None
            scopes = sorted({(b[0], b[1]) for b in budgets})
            reservation = str(uuid.uuid4())
            await conn.execute(q("budget_reserve"), {
                "id": reservation, "amount": estimate_usd,
                "scopes": [s for s, _ in scopes], "scope_ids": [i for _, i in scopes],
                "seconds": self.reservation_seconds})
        return reservation

    async def release(self, reservation: str | None) -> None:
        """The call failed before it was answered: no cost, free the reservation."""
        if reservation is None:
            return
        async with self.pool.connection() as conn:
            await conn.execute(q("budget_release"), {"id": reservation})

    async def settle(self, scope: Scope, reservation: str | None, model: str,
                     fallback: bool, usage: Usage | None, estimated_prompt: int = 0
                     ) -> float | None:
        """Record an answered call and drop its reservation, in one transaction; its cost."""
        cost = self.cost(model, usage)
        if usage is not None and estimated_prompt > 0 and usage.prompt_tokens:
            seen = usage.prompt_tokens / estimated_prompt
            # up at once (the next reservations must cover it), down slowly
            self.prompt_ratio = max(1.0, seen * 1.05 if seen > self.prompt_ratio
                                    else self.prompt_ratio * 0.99 + seen * 0.01)
        u = usage or Usage()
        async with self.pool.connection() as conn, conn.transaction():
            if reservation is not None:
                await conn.execute(q("budget_release"), {"id": reservation})
            await conn.execute(q("spend_add"), self._row(
                scope, model, calls=1, fallback_calls=int(fallback),
                prompt_tokens=u.prompt_tokens, cached_tokens=u.cached_tokens,
                completion_tokens=u.completion_tokens, cost_usd=cost or 0,
                unpriced_calls=int(cost is None)))
        return cost

    async def cache_hit(self, scope: Scope, model: str, saved_tokens: int,
                        saved_usd: float | None) -> None:
        """An answer from the response cache: no provider tokens, no cost; what it saved."""
        async with self.pool.connection() as conn:
            await conn.execute(q("spend_add"), self._row(
                scope, model, cache_hits=1, saved_tokens=saved_tokens,
                saved_usd=saved_usd or 0))

    def _row(self, scope: Scope, model: str, **values) -> dict:
        zero = dict.fromkeys(("calls", "fallback_calls", "prompt_tokens", "cached_tokens",
                              "completion_tokens", "cost_usd", "unpriced_calls", "cache_hits",
                              "saved_tokens", "saved_usd"), 0)
        return zero | values | {"platform": self.platform, "model": model,
                                "owner": scope.owner, "batch_id": scope.batch_id,
                                "campaign": scope.campaign}


def _paused(message: str, scope: str, scope_id: str, period: str, limit_usd, spent) -> OverBudget:
    log.warning("llm_over_budget", scope=scope, scope_id=scope_id, period=period,
                reason=message)
    return OverBudget(message, delay=PAUSE_SECONDS, progress={
        "paused": "over budget", "reason": message,
        "budget": {"scope": scope, "id": scope_id, "period": period,
                   "limit_usd": float(limit_usd), "spent_usd": float(spent)}})
