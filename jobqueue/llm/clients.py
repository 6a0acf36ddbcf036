"""`ctx.llm("openai")`: a provider client for users' own tasks that shares the platform's
limiter, fallback, cache and accounting with the built-in kinds.

    @task("lesson")
    async def lesson(payload, ctx):
        llm = ctx.llm("openai")
        answer = await llm.chat.completions.create(
            messages=[{"role": "user", "content": payload["topic"]}], max_tokens=400)
        vectors = await llm.embeddings.create(input=["a", "b"])
        return {"text": answer.choices[0].message.content}

The methods take the openai SDK's arguments and return its types (ChatCompletion,
CreateEmbeddingResponse); `model` defaults to the platform's. Every call reserves its budget
from the shared RPM/TPM buckets first, as a `chat` job's does; deterministic chat requests
(temperature 0 or a seed) are answered from the shared response cache. A process that works
the platform already (`worker --platform openai`) lends its runtime; otherwise the first call
starts one on the task's event loop from `jobqueue.toml` and the environment's keys, and keeps
it for the life of the process.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jobqueue.llm.cache import cache_key, is_deterministic
from jobqueue.llm.ratelimit import estimate_tokens

# (event loop, platform name) -> its started runtime: a runtime's pool and HTTP clients
# belong to the loop they were made on.
_runtimes: dict[tuple[int, str], Any] = {}
_lock: asyncio.Lock | None = None
_url: str | None = None


def use(runtime, url: str) -> None:
    """A worker lends a started runtime (on the running loop) to its tasks' ctx.llm()."""
    global _url
    _url = url
    _runtimes[(id(asyncio.get_running_loop()), runtime.platform.name)] = runtime


def forget(runtime) -> None:
    for key, value in list(_runtimes.items()):
        if value is runtime:
            del _runtimes[key]


async def runtime_for(name: str):
    global _lock
    key = (id(asyncio.get_running_loop()), name)
    found = _runtimes.get(key)
    if found is not None:
        return found
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if key not in _runtimes:
            from jobqueue import db
            from jobqueue.llm import platforms
            from jobqueue.llm.runtime import PlatformRuntime

            known = platforms.load()
            if name not in known:
                raise KeyError(f"ctx.llm({name!r}): no platform of that name in "
                               f"jobqueue.toml (known: {', '.join(sorted(known))})")
            runtime = PlatformRuntime(known[name], _url or db.database_url())
            await runtime.start()  # in a worker, it borrows the worker's connection
            _runtimes[key] = runtime
        return _runtimes[key]


class LLMClient:
    """An openai-SDK-shaped client whose calls pass through jobqueue's shared limiter."""

    def __init__(self, platform: str, job_id: int | None = None):
        self.platform = platform
        self.job_id = job_id  # whose scope (owner, batch) the calls are charged to
        self.chat = _Chat(self)
        self.embeddings = _Embeddings(self)


class _Chat:
    def __init__(self, client: LLMClient):
        self.completions = _Completions(client)


class _Completions:
    def __init__(self, client: LLMClient):
        self._client = client

    async def create(self, *, messages: list[dict], model: str | None = None,
                     max_tokens: int | None = None, fallback: bool = True, **params: Any):
        """`chat.completions.create` through the limiter (and the cache when deterministic).
        `fallback=False` forbids the platform's fallback model for this call."""
        from openai.types.chat import ChatCompletion

        runtime = await runtime_for(self._client.platform)
        p = runtime.platform
        request = {"model": model or p.model, "messages": messages,
                   "max_tokens": max_tokens or p.max_tokens, **params}
        cost = estimate_tokens(messages, request["max_tokens"])
        use_fallback = p.fallback_model if fallback and request["model"] == p.model else None

        async def call() -> tuple[dict, bool]:
            async def send(sdk, grant):
                return await sdk.chat.completions.with_raw_response.create(
                    **(request | {"model": grant.model}))

            completion, grant, _ = await runtime.limited_call(
                cost, request["model"], use_fallback, send, job_id=self._client.job_id,
                max_output=request["max_tokens"])
            return completion.model_dump(mode="json"), grant.model == request["model"]

        if is_deterministic(request):
            key = "sdk:" + cache_key(p.base_url, request)
            data, hit = await runtime.cache.get_or_call(key, call)
            if hit:  # the provider was not called: no tokens, no cost (the rollup has it)
                data = await _cache_hit(runtime, self._client.job_id, request["model"], data)
        else:
            data, _ = await call()
        return ChatCompletion.model_validate(data)


class _Embeddings:
    def __init__(self, client: LLMClient):
        self._client = client

    async def create(self, *, input: str | list[str], model: str | None = None,
                     **params: Any):
        """`embeddings.create` through the limiter (one call, the SDK's arguments)."""
        from jobqueue.llm.payloads import embed_tokens

        runtime = await runtime_for(self._client.platform)
        texts = [input] if isinstance(input, str) else list(input)
        model = model or runtime.platform.embedding_model
        cost = sum(embed_tokens(t) for t in texts)

        async def send(sdk, grant):
            return await sdk.embeddings.with_raw_response.create(
                model=grant.model, input=input, **params)

        response, _, _ = await runtime.limited_call(cost, model, None, send,
                                                    job_id=self._client.job_id)
        return response


async def _cache_hit(runtime, job_id: int | None, model: str, data: dict) -> dict:
    """Record a cached answer as saved spend, and return it with zero usage."""
    from jobqueue.llm.spend import Usage

    usage = data.get("usage") or {}
    saved = runtime.spend.cost(model, Usage(
        prompt_tokens=usage.get("prompt_tokens") or 0,
        completion_tokens=usage.get("completion_tokens") or 0))
    await runtime.spend.cache_hit(await runtime.spend.scope(job_id), model,
                                  usage.get("total_tokens") or 0, saved)
    if usage:
        data = data | {"usage": {"prompt_tokens": 0, "completion_tokens": 0,
                                 "total_tokens": 0}}
    return data


def client(platform: str, job_id: int | None = None) -> LLMClient:
    return LLMClient(platform, job_id)
