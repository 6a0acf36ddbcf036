"""LLM jobs on a platform: `chat`, `analyze`, `document` and `embed`, called through the openai
SDK, and the one limited-call loop (`limited_call`) that users' own code shares through
`ctx.llm(...)` (jobqueue/llm/clients.py).

jobqueue is the only retry loop (the SDK's max_retries=0), so every attempt passes the shared
limiter. A 429 blocks the key everywhere and the call tries again within the same attempt (the
limiter, not the job, was wrong); 5xx, timeouts and connection errors fail the attempt, and the
worker retries it with backoff. No database connection is held during a call: the limiter and
the cache borrow one from a small pool for a statement at a time.

Every exception that leaves a task, and every provider message kept or logged on the way, is
scrubbed of the platform's keys first (jobqueue/llm/redact.py): a provider that quotes the
Authorization header must not put the key into the job's errors.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from typing import Any

import openai
import structlog
from psycopg_pool import AsyncConnectionPool

from jobqueue import db, quotas, settings
from jobqueue.db.queries import q
from jobqueue.errors import InvalidAnswer as InvalidAnswer
from jobqueue.errors import NoUsableKey
from jobqueue.llm import (
    batchapi,  # noqa: F401 - registers its maintenance hook
    documents,
)
from jobqueue.llm.cache import ResponseCache, cache_key, is_deterministic
from jobqueue.llm.payloads import (
    ANALYZE_INSTRUCTIONS,
    SENTIMENTS,
    chat_request,
    check_analyze,
    check_embed,
    embed_groups,
    embed_tokens,
)
from jobqueue.llm.platforms import ApiKey, Platform
from jobqueue.llm.prices import PriceTable
from jobqueue.llm.ratelimit import Grant, Limiter, estimate_tokens, retry_after_seconds
from jobqueue.llm.redact import Redactor
from jobqueue.llm.spend import Spend, Usage
from jobqueue.tasks import JobContext, Permanent, Registry

log = structlog.get_logger("jobqueue.llm")

GATE_SECONDS = 2.0  # how often a platform's workers look whether it has a usable key

def validate_analysis(text: str) -> dict:
    try:
        data = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise InvalidAnswer(f"analysis is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidAnswer("analysis is not a JSON object")
    problems = []
    if not isinstance(data.get("summary"), str):
        problems.append("summary must be a string")
    if data.get("sentiment") not in SENTIMENTS:
        problems.append(f"sentiment must be one of {', '.join(SENTIMENTS)}")
    for name in ("topics", "entities"):
        value = data.get(name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"{name} must be a list of strings")
    if problems:
        raise InvalidAnswer("analysis: " + "; ".join(problems))
    return {k: data[k] for k in ("summary", "sentiment", "topics", "entities")}


class PlatformRuntime:
    """Everything a worker process needs to run one platform's jobs."""

    def __init__(self, platform: Platform, url: str, environ: dict[str, str] | None = None,
                 prices: PriceTable | None = None):
        self.platform = platform
        self.prices = prices  # default: jobqueue.toml's [prices] over the defaults (start())
        self.url = url
        self.keys: list[ApiKey] = platform.keys(environ)  # fails early, naming the variable
        self.redact = Redactor(k.secret for k in self.keys)
        self.clients: dict[str, openai.AsyncOpenAI] = {}
        self.pool: Any = None  # an AsyncConnectionPool, or the worker's LinkPool
        self._own_pool = False
        self.limiter: Limiter | None = None
        self.cache: ResponseCache | None = None
        self.spend: Spend | None = None
        self._usable = True  # some key of the platform is enabled (claim_gate)
        self._incident = ""  # which loss of every key the current alert is about
        self._usable_checked = -GATE_SECONDS

    def registry(self) -> Registry:
        reg = Registry()
        reg.register("chat", self._scrubbed(self.chat))
        reg.register("analyze", self._scrubbed(self.analyze))
        reg.register("document", self._scrubbed(self.document))
        reg.register("embed", self._scrubbed(self.embed))
        return reg

    def _scrubbed(self, task):
        """The task, raising only exceptions scrubbed of the keys (see redact.py)."""

        @functools.wraps(task)
        async def run(payload: Any, ctx: JobContext) -> dict:
            try:
                return await task(payload, ctx)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                clean = self.redact.exception(exc)
                if clean is exc:
                    raise
                raise clean from None

        return run

    async def start(self) -> None:
        """Open what the platform needs on the running loop. In a worker, the limiter, cache
        and accounting borrow the worker's finish connection (jobqueue.worker.link.current),
        so the process opens no connection for its platforms; elsewhere a small pool."""
        from jobqueue.worker import link

        lent = link.current.get()
        if lent is not None:
            self.pool, self._own_pool = lent, False
        else:
            self.pool = AsyncConnectionPool(
                self.url, min_size=1, max_size=4, open=False,
                kwargs=db.connect_kwargs(self.url)
                | {"application_name": db.WORKER_APPLICATION_NAME},
                name="jobqueue-llm")
            self._own_pool = True
            await self.pool.open()
        self.limiter = Limiter(self.platform, self.keys, self.pool)
        await self.limiter.ensure()
        from jobqueue.llm import clients  # ctx.llm(name) on this loop shares this runtime

        clients.use(self, self.url)
        self.cache = ResponseCache(self.pool, self.platform.cache_ttl,
                                   pending_seconds=self.platform.timeout * 2)
        if self.prices is None:
            from jobqueue.llm import prices

            self.prices = prices.load()
        self.spend = Spend(self.pool, self.platform.name, self.prices, self.platform.timeout)
        for key in self.keys:
            self.clients[key.key_id] = openai.AsyncOpenAI(
                api_key=key.secret, base_url=self.platform.base_url, max_retries=0,
                timeout=self.platform.timeout)

    async def claim_gate(self) -> float:
        """Asked by the worker before each claim: seconds to hold off. While every key of the
        platform is disabled (rejected, out of quota) nothing is claimed, so jobs stay waiting
        with their attempts untouched; the answer is looked up at most every few seconds,
        and a key enabled again (`jobqueue keys enable`) reopens it without a restart."""
        now = time.monotonic()
        if now - self._usable_checked >= GATE_SECONDS:
            self._usable_checked = now
            async with self.pool.connection() as conn:
                cur = await conn.execute(q("rate_any_usable"), {
                    "platform": self.platform.name, "keys": [k.key_id for k in self.keys]})
                usable, incident = await cur.fetchone()
                if usable != self._usable:
                    await self._alert(conn, usable, incident)
            self._usable = usable
        return 0.0 if self._usable else GATE_SECONDS

    async def _alert(self, conn, usable: bool, incident: str) -> None:
        """A platform lost (or got back) its last usable key: say so in the log and to the
        alert webhooks (one event per incident, whichever process noticed it)."""
        from jobqueue import webhooks

        name = self.platform.name
        if usable:
            log.warning("llm_platform_key_enabled", platform=name)
            event, text = "alert.resolved", f"platform {name} has a usable API key again"
        else:
            log.error("llm_platform_has_no_usable_key", platform=name,
                      action="fix or replace the keys, then `jobqueue keys enable NAME`; "
                             "jobs wait meanwhile")
            self._incident = incident
            event, text = "alert.firing", (f"platform {name} has no usable API key: its jobs "
                                           "wait; fix the keys, then `jobqueue keys enable`")
        try:
            await webhooks.emit_async(conn, event, None, {
                "rule": "platform_no_usable_key", "platform": name, "text": text},
                event_id=f"{event}:no-usable-key:{name}:{self._incident}")
        except Exception as exc:  # the log line above is the alert of last resort
            log.warning("llm_alert_not_sent", platform=name, error=str(exc))

    async def stop(self) -> None:
        from jobqueue.llm import clients

        clients.forget(self)
        for client in self.clients.values():
            await client.close()
        if self.pool is not None and self._own_pool:
            await self.pool.close()

    # -- tasks ------------------------------------------------------------------------------

    async def chat(self, payload: Any, ctx: JobContext) -> dict:
        request = chat_request(payload, self.platform)
        return await self._run(request, payload, ctx, validate=None)

    async def analyze(self, payload: Any, ctx: JobContext) -> dict:
        check_analyze(payload)
        request = self._analyze_request(payload)
        result = await self._run(request, payload, ctx, validate=validate_analysis)
        result["analysis"] = validate_analysis(result["text"])
        return result

    def _analyze_request(self, payload: dict) -> dict:
        return {
            "model": payload.get("model") or self.platform.model,
            "messages": [{"role": "system", "content": ANALYZE_INSTRUCTIONS},
                         {"role": "user", "content": payload["text"]}],
            "max_tokens": payload.get("max_tokens") or self.platform.max_tokens,
            "temperature": 0,
            "response_format": {"type": "json_object"},
        }

    async def document(self, payload: Any, ctx: JobContext) -> dict:
        """An uploaded document: extract its text, analyze it in chunks, assemble one result."""
        doc_id = payload.get("document_id") if isinstance(payload, dict) else None
        if not isinstance(doc_id, int):
            raise Permanent("payload.document_id: required, an integer")
        async with self.pool.connection() as conn:
            cur = await conn.execute(q("document_data"), {"id": doc_id})
            row = await cur.fetchone()
        if row is None:
            raise Permanent(f"document {doc_id}: not found")
        filename, content_type, data, text, owner = row
        extracted_now = text is None
        max_chars = settings.JOBQUEUE_DOCUMENT_MAX_CHARS.get()
        max_chunks = settings.JOBQUEUE_DOCUMENT_MAX_CHUNKS.get()
        if text is None:  # else an earlier attempt extracted it (and may have dropped data)
            ctx.set_progress({"step": "extracting"})
            try:
                text = await asyncio.to_thread(documents.extract_text, content_type,
                                               bytes(data), max_chars)
            except documents.UnreadableDocument as exc:
                raise Permanent(f"{filename}: {exc}") from None
            keep = settings.JOBQUEUE_DOCUMENT_KEEP_ORIGINAL.get()
            async with self.pool.connection() as conn:
                await conn.execute(q("document_set_text"), {"id": doc_id, "text": text,
                                                            "keep_original": keep})
        pieces = documents.chunks(text)
        if len(pieces) > max_chunks:
            raise Permanent(f"{filename}: {len(pieces)} chunks, over the limit of {max_chunks} "
                            "(JOBQUEUE_DOCUMENT_MAX_CHUNKS); no call was made")
        # The budget the calls may spend, known before the first: what the limiter will
        # reserve for each chunk (prompt characters / 4 plus max_tokens).
        estimate = sum(estimate_tokens(self._analyze_request({"text": p})["messages"],
                                       self.platform.max_tokens) for p in pieces)
        # The owner's token quotas learn the estimate now, once per document (the attempt
        # that extracted it): never refused, possibly into debt (jobqueue/quotas.py).
        charge = quotas.debit(owner=owner, queue=ctx.queue, kind=ctx.kind, tokens=estimate)
        if extracted_now and charge is not None:
            async with self.pool.connection() as conn:
                await conn.execute(*charge)
        done = 0

        async def analyze_piece(piece: str) -> dict:
            nonlocal done
            result = await self.analyze({"text": piece}, ctx)
            done += 1
            ctx.set_progress({"step": "analyzing", "done": done, "total": len(pieces),
                              "estimated_tokens": estimate})
            return result

        ctx.set_progress({"step": "analyzing", "done": 0, "total": len(pieces),
                          "estimated_tokens": estimate})
        results = await asyncio.gather(*(analyze_piece(p) for p in pieces))
        return {
            "document_id": doc_id, "filename": filename, "chars": len(text),
            "chunks": len(pieces), "estimated_tokens": estimate,
            "analysis": documents.merge([r["analysis"] for r in results]),
            "models": sorted({r["model"] for r in results}),
            "usage": {"total_tokens": sum(r["usage"]["total_tokens"] or 0 for r in results)},
            "cost_usd": _total_cost(results),
        }

    async def _run(self, request: dict, payload: dict, ctx: JobContext, validate) -> dict:
        use_cache = payload.get("cache")
        if use_cache is None:
            use_cache = is_deterministic(request)

        allow_fallback = payload.get("fallback") is not False
        job_id = ctx.job_id if ctx is not None else None

        async def call() -> tuple[dict, bool]:
            result = await self._call(request, allow_fallback, job_id)
            if validate is not None:
                validate(result["text"])
            return result, not result["fallback"]  # a fallback's answer is not the model's

        if not use_cache:
            result, _ = await call()
            return result | {"cached": False}
        key = cache_key(self.platform.base_url, request)
        result, hit = await self.cache.get_or_call(key, call)
        if not hit:
            return result | {"cached": False}
        await self.spend.cache_hit(await self.spend.scope(job_id), request["model"],
                                   result["usage"].get("total_tokens") or 0,
                                   result.get("cost_usd"))
        return cached_result(result)

    async def _call(self, request: dict, allow_fallback: bool = True,
                    job_id: int | None = None) -> dict:
        p = self.platform
        cost = estimate_tokens(request["messages"], request["max_tokens"])
        fallback = p.fallback_model if request["model"] == p.model and allow_fallback else None
        started = time.monotonic()

        async def send(client: openai.AsyncOpenAI, grant: Grant):
            return await client.chat.completions.with_raw_response.create(
                **(request | {"model": grant.model}))

        completion, grant, throttled = await self.limited_call(
            cost, request["model"], fallback, send, job_id=job_id,
            max_output=request["max_tokens"])
        # the call's own latency: the time spent waiting for budget is reported apart
        seconds = max(0.0, time.monotonic() - started - grant.waited)
        result = _result(request, grant, completion, seconds, throttled)
        result["cost_usd"] = self.spend.cost(grant.model, Usage.of(completion))
        return result

    async def limited_call(self, cost: int, model: str, fallback: str | None, send, *,
                           job_id: int | None = None, max_output: int = 0):
        """One provider call through the shared limiter: reserve `cost` tokens on `model`
        (or `fallback` while the provider limits it), `send(client, grant)` the request, and
        settle with the usage and headers. 429s block the key and try again (up to
        max_429_retries); a rejected or exhausted key is disabled and another one tried.
        The call is charged to job `job_id`'s scope (spend.py): before it is sent, its most
        possible cost (`cost` tokens, of which `max_output` are output) is reserved on the
        scope's budgets, and OverBudget pauses the job when one has no room.
        Returns (parsed response, grant, 429s absorbed)."""
        p = self.platform
        throttled = 0
        scope = await self.spend.scope(job_id)
        estimate = self.spend.estimate([model] + ([fallback] if fallback else []),
                                       max(0, cost - max_output), max_output)
        await self.spend.check(scope, estimate, model)
        while True:
            try:
                grant = await self.limiter.acquire(cost, model, fallback, p.latency_budget)
            except NoUsableKey:
                self._usable_checked = -GATE_SECONDS  # the next claim asks the database
                raise
            try:
                reservation = await self.spend.reserve(scope, estimate, model)
            except BaseException:
                await asyncio.shield(self.limiter.release(grant))
                raise
            client = self.clients[grant.key.key_id]
            try:
                raw = await self._send(send, client, grant, reservation)
            except openai.RateLimitError as exc:
                if _error_code(exc) == "insufficient_quota":
                    await self.limiter.release(grant)
                    await self.limiter.disable(grant.key, "insufficient_quota: "
                                               + self._said(exc), "top up the account, then "
                                               "`jobqueue keys enable` or restart the workers")
                    continue  # another key may still have quota
                throttled += 1
                await self.limiter.block(grant, retry_after_seconds(exc.response.headers) or 1.0,
                                         _error_message(exc))
                if throttled > p.max_429_retries:
                    raise
                continue
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                await self.limiter.release(grant)
                await self.limiter.disable(
                    grant.key, f"the provider rejected the key ({exc.status_code}): "
                               + self._said(exc), "replace the key in its variable, restart "
                               "the workers or run `jobqueue keys enable`")
                continue
            except (openai.BadRequestError, openai.NotFoundError,
                    openai.UnprocessableEntityError) as exc:
                await self.limiter.release(grant)
                raise Permanent(f"{p.name} rejected the request: {self._said(exc)}") from None
            except BaseException:
                # 5xx, timeout, connection error, cancellation: no word on the budget.
                await asyncio.shield(self.limiter.release(grant))
                raise
            parsed = raw.parse()
            usage = getattr(parsed, "usage", None)
            actual = getattr(usage, "total_tokens", None) or cost
            await self.limiter.settle(grant, actual, raw.headers)
            await asyncio.shield(self.spend.settle(scope, reservation, grant.model,
                                                   grant.model != model, Usage.of(parsed),
                                                   max(0, cost - max_output)))
            return parsed, grant, throttled

    async def _send(self, send, client: openai.AsyncOpenAI, grant: Grant,
                    reservation: str | None):
        """`send(client, grant)`; a call that is not answered frees its budget reservation
        (providers do not charge for refused or failed requests)."""
        try:
            return await send(client, grant)
        except BaseException:
            await asyncio.shield(self.spend.release(reservation))
            raise

    async def embed(self, payload: Any, ctx: JobContext) -> dict:
        """Vectors for `input` (a string or a list), in as few calls as the limits allow: at
        most `embed_batch` inputs per call, and no call above what the token bucket holds."""
        inputs, model, dimensions = check_embed(payload, self.platform)
        p = self.platform
        per_call_tokens = max(1, int(p.tpm * p.burst_seconds / 60))
        vectors: list[list[float]] = []
        tokens = calls = 0
        usd: float | None = 0.0
        for group in embed_groups(inputs, p.embed_batch, per_call_tokens):
            cost = sum(embed_tokens(text) for text in group)
            extra = {"dimensions": dimensions} if dimensions else {}

            async def send(client, grant, group=group, extra=extra):
                return await client.embeddings.with_raw_response.create(
                    model=grant.model, input=group, **extra)

            response, _, _ = await self.limited_call(cost, model, None, send,
                                                     job_id=ctx.job_id)
            vectors += [d.embedding for d in sorted(response.data, key=lambda d: d.index)]
            tokens += response.usage.total_tokens if response.usage else cost
            call_cost = self.spend.cost(model, Usage.of(response))
            usd = None if usd is None or call_cost is None else usd + call_cost
            calls += 1
            ctx.set_progress({"done": len(vectors), "total": len(inputs)})
        return {"model": model, "embeddings": vectors, "calls": calls,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "cost_usd": None if usd is None else round(usd, 10)}

    def _said(self, exc: openai.APIStatusError) -> str:
        """The provider's error message, scrubbed before it is cut to length (a cut key would
        no longer match)."""
        return self.redact.text(_error_message(exc))[:300]


def cached_result(result: dict) -> dict:
    """A result answered from the cache: the provider was not called, so no tokens and no
    cost; what the original call used and cost is kept apart as what the hit saved."""
    usage = result.get("usage") or {}
    return result | {
        "cached": True,
        "usage": dict.fromkeys(usage or ("prompt_tokens", "completion_tokens",
                                         "total_tokens"), 0),
        "cost_usd": 0.0,
        "saved": {"usage": usage, "cost_usd": result.get("cost_usd")},
    }


def _total_cost(results: list[dict]) -> float | None:
    """The sum of the parts' costs; None (unknown) if any part's is."""
    costs = [r.get("cost_usd") for r in results]
    return None if any(c is None for c in costs) else round(sum(costs), 10)


def _result(request: dict, grant: Grant, completion, seconds: float, throttled: int) -> dict:
    choice = completion.choices[0]
    usage = completion.usage
    return {
        "text": choice.message.content,
        "finish_reason": choice.finish_reason,
        "model": completion.model or grant.model,
        "requested_model": request["model"],
        "fallback": grant.model != request["model"],
        "usage": {"prompt_tokens": usage.prompt_tokens if usage else None,
                  "completion_tokens": usage.completion_tokens if usage else None,
                  "total_tokens": usage.total_tokens if usage else None},
        "latency_ms": round(seconds * 1000, 1),
        "waited_ms": round(grant.waited * 1000, 1),
        "key": grant.key.key_id,
        "throttled": throttled,
    }


def _error_body(exc: openai.APIStatusError) -> dict:
    body = exc.body
    if isinstance(body, dict):
        return body.get("error", body) if isinstance(body.get("error"), dict) else body
    return {}


def _error_code(exc: openai.APIStatusError) -> str | None:
    return getattr(exc, "code", None) or _error_body(exc).get("code")


def _error_message(exc: openai.APIStatusError) -> str:
    return str(_error_body(exc).get("message") or exc.message)
