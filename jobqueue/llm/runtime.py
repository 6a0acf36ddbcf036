"""LLM jobs on a platform: `chat` and `analyze`, called through the openai SDK.

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
from jobqueue.llm import documents
from jobqueue.llm.cache import ResponseCache, cache_key, is_deterministic
from jobqueue.llm.platforms import ApiKey, Platform
from jobqueue.llm.ratelimit import Grant, Limiter, estimate_tokens, retry_after_seconds
from jobqueue.llm.redact import Redactor
from jobqueue.tasks import JobContext, Permanent, Registry

log = structlog.get_logger("jobqueue.llm")

API_PARAMS = ("max_tokens", "temperature", "top_p", "seed", "response_format", "stop",
              "presence_penalty", "frequency_penalty")
# `fallback: false` forbids the platform's fallback model for this job (a batch sets it on
# every row): the job waits for the main model however long the provider limits it.
CHAT_FIELDS = {"prompt", "messages", "model", "cache", "metadata", "fallback", *API_PARAMS}
ANALYZE_FIELDS = {"text", "model", "max_tokens", "cache", "metadata", "fallback"}
SENTIMENTS = ("positive", "neutral", "negative")

ANALYZE_INSTRUCTIONS = (
    "Analyse the user's text. Answer with one JSON object and nothing else, with exactly these "
    "keys: summary (string, at most three sentences), sentiment (one of positive, neutral, "
    "negative), topics (list of short strings), entities (list of names of people, "
    "organisations, places or products).")


def chat_request(payload: Any, platform: Platform) -> dict:
    """The API request for a chat job's payload; Permanent if the payload is unusable."""
    if not isinstance(payload, dict):
        raise Permanent("payload: must be an object with prompt or messages")
    unknown = set(payload) - CHAT_FIELDS
    if unknown:
        raise Permanent(f"payload: unknown field(s) {', '.join(sorted(unknown))}")
    if ("prompt" in payload) == ("messages" in payload):
        raise Permanent("payload: give exactly one of prompt or messages")
    if "prompt" in payload:
        if not isinstance(payload["prompt"], str) or not payload["prompt"].strip():
            raise Permanent("payload.prompt: must be a non-empty string")
        messages = [{"role": "user", "content": payload["prompt"]}]
    else:
        messages = payload["messages"]
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and "role" in m for m in messages):
            raise Permanent("payload.messages: must be a non-empty list of {role, content}")
    if payload.get("fallback") not in (None, True, False):
        raise Permanent("payload.fallback: must be true or false")
    request = {"model": payload.get("model") or platform.model, "messages": messages,
               "max_tokens": payload.get("max_tokens") or platform.max_tokens}
    for name in API_PARAMS:
        if payload.get(name) is not None and name != "max_tokens":
            request[name] = payload[name]
    return request


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

    def __init__(self, platform: Platform, url: str, environ: dict[str, str] | None = None):
        self.platform = platform
        self.url = url
        self.keys: list[ApiKey] = platform.keys(environ)  # fails early, naming the variable
        self.redact = Redactor(k.secret for k in self.keys)
        self.clients: dict[str, openai.AsyncOpenAI] = {}
        self.pool: AsyncConnectionPool | None = None
        self.limiter: Limiter | None = None
        self.cache: ResponseCache | None = None

    def registry(self) -> Registry:
        reg = Registry()
        reg.register("chat", self._scrubbed(self.chat))
        reg.register("analyze", self._scrubbed(self.analyze))
        reg.register("document", self._scrubbed(self.document))
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
        self.pool = AsyncConnectionPool(self.url, min_size=1, max_size=4, open=False,
                                        kwargs=db.connect_kwargs() | {
                                            "application_name": db.WORKER_APPLICATION_NAME},
                                        name="jobqueue-llm")
        await self.pool.open()
        self.limiter = Limiter(self.platform, self.keys, self.pool)
        await self.limiter.ensure()
        self.cache = ResponseCache(self.pool, self.platform.cache_ttl,
                                   pending_seconds=self.platform.timeout * 2)
        for key in self.keys:
            self.clients[key.key_id] = openai.AsyncOpenAI(
                api_key=key.secret, base_url=self.platform.base_url, max_retries=0,
                timeout=self.platform.timeout)

    def connections(self) -> int:
        """Connections its pool holds open now (for the worker's heartbeat)."""
        return self.pool.get_stats().get("pool_size", 0) if self.pool is not None else 0

    async def stop(self) -> None:
        for client in self.clients.values():
            await client.close()
        if self.pool is not None:
            await self.pool.close()

    # -- tasks ------------------------------------------------------------------------------

    async def chat(self, payload: Any, ctx: JobContext) -> dict:
        request = chat_request(payload, self.platform)
        return await self._run(request, payload, ctx, validate=None)

    async def analyze(self, payload: Any, ctx: JobContext) -> dict:
        if not isinstance(payload, dict) or set(payload) - ANALYZE_FIELDS:
            raise Permanent(f"payload: expected fields {', '.join(sorted(ANALYZE_FIELDS))}")
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            raise Permanent("payload.text: must be a non-empty string")
        if payload.get("fallback") not in (None, True, False):
            raise Permanent("payload.fallback: must be true or false")
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
        }

    async def _run(self, request: dict, payload: dict, ctx: JobContext, validate) -> dict:
        use_cache = payload.get("cache")
        if use_cache is None:
            use_cache = is_deterministic(request)

        allow_fallback = payload.get("fallback") is not False

        async def call() -> tuple[dict, bool]:
            result = await self._call(request, allow_fallback)
            if validate is not None:
                validate(result["text"])
            return result, not result["fallback"]  # a fallback's answer is not the model's

        if not use_cache:
            result, _ = await call()
            return result | {"cached": False}
        key = cache_key(self.platform.base_url, request)
        result, hit = await self.cache.get_or_call(key, call)
        return result | {"cached": hit}

    async def _call(self, request: dict, allow_fallback: bool = True) -> dict:
        p = self.platform
        cost = estimate_tokens(request["messages"], request["max_tokens"])
        fallback = p.fallback_model if request["model"] == p.model and allow_fallback else None
        throttled = 0
        while True:
            grant = await self.limiter.acquire(cost, request["model"], fallback,
                                               p.latency_budget)
            client = self.clients[grant.key.key_id]
            started = time.monotonic()
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    **(request | {"model": grant.model}))
            except openai.RateLimitError as exc:
                if _error_code(exc) == "insufficient_quota":
                    await self.limiter.release(grant)
                    await self.limiter.disable(grant.key, "insufficient_quota: "
                                               + self._said(exc))
                    continue  # another key may still have quota
                throttled += 1
                await self.limiter.block(grant, retry_after_seconds(exc.response.headers) or 1.0,
                                         _error_message(exc))
                if throttled > p.max_429_retries:
                    raise
                continue
            except openai.AuthenticationError as exc:
                await self.limiter.release(grant)
                await self.limiter.disable(grant.key, f"authentication failed: {exc.status_code}")
                continue
            except (openai.BadRequestError, openai.NotFoundError,
                    openai.UnprocessableEntityError) as exc:
                await self.limiter.release(grant)
                raise Permanent(f"{p.name} rejected the request: {self._said(exc)}") from None
            except BaseException:
                # 5xx, timeout, connection error, cancellation: no word on the budget.
                await asyncio.shield(self.limiter.release(grant))
                raise
            completion = raw.parse()
            usage = completion.usage
            actual = usage.total_tokens if usage else cost
            await self.limiter.settle(grant, actual, raw.headers)
            return _result(request, grant, completion, time.monotonic() - started, throttled)

    def _said(self, exc: openai.APIStatusError) -> str:
        """The provider's error message, scrubbed before it is cut to length (a cut key would
        no longer match)."""
        return self.redact.text(_error_message(exc))[:300]


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
