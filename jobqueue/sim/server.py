"""An OpenAI-compatible provider simulator for tests, benchmarks and demos.

Why: the queue has to be exercised against rate limits, quota errors, 500s and slow answers
without real network access or real money. This server speaks the subset of the OpenAI HTTP
API the queue uses (``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``GET /v1/models``,
and the Files and Batch API, ``/v1/files`` and ``/v1/batches``: see jobqueue/sim/batches.py)
closely enough that the official ``openai`` SDK works against it unchanged, and enforces
OpenAI-style per-(key, model) token-bucket limits on requests per minute and tokens per minute.

Python use::

    with FakeOpenAI(keys={"k1": Limits(rpm=600, tpm=60_000)}, latency=0.05) as sim:
        client = OpenAI(api_key="k1", base_url=sim.base_url)
        ...
        sim.configure(keys={"k1": {"rpm": 60}})   # a limit cut mid-run
        print(sim.stats())

Command line (foreground)::

    python -m jobqueue.sim --port 8100 --key k1:600:60000 --key k2:600:60000 --latency 0.3

Control routes (JSON): ``GET /_control/stats``, ``GET|POST /_control/config``,
``POST /_control/reset``.

Only the standard library and aiohttp are used so that it can run anywhere the queue runs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import math
import random
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from jobqueue.sim import batches as batch_api
from jobqueue.sim import brands as brand_answers

__all__ = ["FakeOpenAI", "Limits", "format_duration", "main", "token_cost"]

ORG = "org-sim"
SYSTEM_FINGERPRINT = "fp_sim0000001"
DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")

_EPS = 1e-9


@dataclass(frozen=True)
class Limits:
    """Per-minute limits of one (key, model) pair; ``None`` means unlimited.

    As at OpenAI, each limit is a token bucket whose capacity is the per-minute limit, which
    starts full and refills continuously at ``limit / 60`` per second.
    """

    rpm: int | None = None
    tpm: int | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")

    def as_dict(self) -> dict[str, int | None]:
        return {"rpm": self.rpm, "tpm": self.tpm}


def _to_limits(value: Any, base: Limits | None = None) -> Limits:
    """Accept Limits, (rpm, tpm), a dict (merged onto ``base``) or None (unlimited)."""
    if isinstance(value, Limits):
        return value
    if value is None:
        return Limits()
    if isinstance(value, tuple | list):
        rpm, tpm = value
        return Limits(rpm=rpm, tpm=tpm)
    if isinstance(value, Mapping):
        unknown = set(value) - {"rpm", "tpm"}
        if unknown:
            raise ValueError(f"unknown limit field(s): {sorted(unknown)}")
        base = base or Limits()
        return Limits(rpm=value.get("rpm", base.rpm), tpm=value.get("tpm", base.tpm))
    raise ValueError(f"cannot read limits from {value!r}")


def format_duration(seconds: float) -> str:
    """Format a duration the way OpenAI's x-ratelimit-reset-* headers do (Go style).

    Examples: ``0s``, ``120ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h2m3.4s``.
    """
    ms = max(0, math.ceil(seconds * 1000 - _EPS))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _content_text(content: Any) -> str:
    """Text of a message content: a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return ""


def prompt_chars(messages: Iterable[Any]) -> int:
    """Total characters of the message contents (roles and names are not counted)."""
    return sum(len(_content_text(m.get("content"))) for m in messages if isinstance(m, Mapping))


def token_cost(messages: Iterable[Any], max_tokens: int | None, default_max_tokens: int) -> int:
    """Tokens a request charges to the tpm bucket, as OpenAI estimates it for rate limiting.

    ``ceil(characters of message contents / 4) + max_tokens`` (``default_max_tokens`` when
    the request sets neither max_tokens nor max_completion_tokens).
    """
    out = default_max_tokens if max_tokens is None else max_tokens
    return math.ceil(prompt_chars(messages) / 4) + out


# --------------------------------------------------------------------------------------------
# Deterministic answers


_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_CAPS = re.compile(r"\b[A-Z][A-Za-z0-9'\-]*(?:\s+[A-Z][A-Za-z0-9'\-]*)*")


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOP = _wordset(
    """a an and are as at be been but by can could did do does for from had has have he her
    his how i if in into is it its just may me might more most my no not of on or our out she
    so some such than that the their them then there these they this those to too under up us
    very was we were what when where which while who why will with would you your about after
    again also any because before being both each few here only other over own same should
    through until please analyze summarize text following classify"""
)
_POSITIVE = _wordset(
    """good great excellent amazing love loved lovely happy glad best wonderful fantastic
    awesome nice pleased delighted perfect fast helpful recommend enjoy enjoyed superb brilliant
    success successful win wins won improve improved positive satisfied"""
)
_NEGATIVE = _wordset(
    """bad terrible awful hate hated poor worst horrible sad angry slow broken bug bugs
    crash crashed fail failed failure problem problems issue issues disappointed disappointing
    refund wrong error errors negative unhappy useless late rude"""
)


def _analyze(text: str) -> dict[str, Any]:
    """Derive the summary/sentiment/topics/entities document from the text, deterministically."""
    words = _WORD.findall(text)
    lower = [w.lower() for w in words]
    score = sum(w in _POSITIVE for w in lower) - sum(w in _NEGATIVE for w in lower)
    sentiment = "positive" if score > 0 else "negative" if score < 0 else "neutral"

    counts = collections.Counter(w for w in lower if len(w) >= 4 and w not in _STOP)
    first_seen = {w: i for i, w in reversed(list(enumerate(lower)))}
    topics = sorted(counts, key=lambda w: (-counts[w], first_seen[w]))[:3]

    entities: list[str] = []
    for match in _CAPS.finditer(text):
        parts = match.group(0).split()
        i = match.start() - 1
        while i >= 0 and text[i].isspace():
            i -= 1
        if i < 0 or text[i] in ".!?:\"'":
            parts.pop(0)  # a capital that only starts a sentence names nothing
        while parts and parts[0].lower() in _STOP:
            parts.pop(0)
        name = " ".join(parts)
        if name and name not in entities:
            entities.append(name)
    entities = entities[:5]

    first = re.split(r"(?<=[.!?])\s+", " ".join(text.split()), maxsplit=1)[0]
    if len(first) > 120:
        first = first[:117].rsplit(" ", 1)[0] + "..."
    return {
        "summary": first or "(empty input)",
        "sentiment": sentiment,
        "topics": topics,
        "entities": entities,
    }


def _vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for `text` (the same text, the same vector)."""
    raw = []
    counter = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        raw += [b / 255.0 - 0.5 for b in digest]
        counter += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 6) for v in raw]


def _fit(text: str, max_tokens: int | None) -> tuple[str, str]:
    """Cut text so its token count (ceil(chars/4)) stays within max_tokens."""
    if max_tokens is None or math.ceil(len(text) / 4) <= max_tokens:
        return text, "stop"
    return text[: max_tokens * 4], "length"


def _last_user(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, Mapping) and m.get("role") == "user":
            return _content_text(m.get("content"))
    return ""


def _answer(messages: list[Any], json_mode: bool, max_tokens: int | None) -> tuple[str, str]:
    """Deterministic reply content and finish_reason for a request."""
    user = _last_user(messages)
    if not json_mode:
        snippet = " ".join(user.split()[:16])
        return _fit(f"Simulated reply to: {snippet}" if snippet else "Simulated reply.", max_tokens)
    doc = _analyze(user)
    candidates = [doc, {**doc, "entities": []}, {**doc, "entities": [], "topics": []}]
    for words in (8, 3, 1):
        short = " ".join(doc["summary"].split()[:words])
        candidates.append({**doc, "summary": short, "entities": [], "topics": []})
    for cand in candidates:
        text = json.dumps(cand)
        if max_tokens is None or math.ceil(len(text) / 4) <= max_tokens:
            return text, "stop"
    return _fit(json.dumps(candidates[-1]), max_tokens)


# --------------------------------------------------------------------------------------------
# Rate limiting


class _Bucket:
    """A continuously refilled token bucket (capacity = per-minute limit, starts full)."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, limit: int, now: float) -> None:
        self.capacity = float(limit)
        self.rate = limit / 60.0
        self.level = float(limit)
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def set_limit(self, limit: int, now: float) -> None:
        """Change the limit at runtime.

        Lowering it clamps the current level (a limit cut bites at once); raising it keeps
        what was used, so the extra capacity is available at once.
        """
        self.refill(now)
        if limit > self.capacity:
            self.level += limit - self.capacity
        self.capacity = float(limit)
        self.rate = limit / 60.0
        self.level = min(self.level, self.capacity)

    def has(self, amount: float) -> bool:
        return self.level + _EPS >= amount

    def wait(self, amount: float) -> float:
        """Seconds until ``amount`` is available."""
        return max(0.0, (amount - self.level) / self.rate)

    def remaining(self) -> int:
        return max(0, math.floor(self.level + _EPS))

    def reset(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level) / self.rate)

    def used(self) -> int:
        return max(0, round(self.capacity - self.level))


class _Pair:
    """Rate-limit state of one (key, model) pair."""

    __slots__ = ("limits", "requests", "tokens")

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self.requests = _Bucket(limits.rpm, now) if limits.rpm else None
        self.tokens = _Bucket(limits.tpm, now) if limits.tpm else None

    def apply(self, limits: Limits, now: float) -> None:
        if limits.rpm is None:
            self.requests = None
        elif self.requests is None:
            self.requests = _Bucket(limits.rpm, now)
        else:
            self.requests.set_limit(limits.rpm, now)
        if limits.tpm is None:
            self.tokens = None
        elif self.tokens is None:
            self.tokens = _Bucket(limits.tpm, now)
        else:
            self.tokens.set_limit(limits.tpm, now)
        self.limits = limits

    def headers(self) -> dict[str, str]:
        h: dict[str, str] = {}
        if self.requests is not None:
            h["x-ratelimit-limit-requests"] = str(int(self.requests.capacity))
            h["x-ratelimit-remaining-requests"] = str(self.requests.remaining())
            h["x-ratelimit-reset-requests"] = format_duration(self.requests.reset())
        if self.tokens is not None:
            h["x-ratelimit-limit-tokens"] = str(int(self.tokens.capacity))
            h["x-ratelimit-remaining-tokens"] = str(self.tokens.remaining())
            h["x-ratelimit-reset-tokens"] = format_duration(self.tokens.reset())
        return h


def _counters() -> dict[str, int]:
    return {
        "accepted": 0,
        "rejected_429": 0,
        "insufficient_quota": 0,
        "errors_500": 0,
        "ok": 0,
        "tokens_accepted": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
    }


_SCALARS = {
    "latency": float,
    "jitter": float,
    "error_rate": float,
    "invalid_json_rate": float,
    "default_max_tokens": int,
    "echo_authorization": bool,
}


class FakeOpenAI:
    """The simulator: configuration, rate-limit state, statistics and the aiohttp server.

    ``keys`` maps each accepted API key to its default Limits (or ``(rpm, tpm)``, a dict, or
    None for unlimited); a plain list of key names makes them all unlimited. ``model_limits``
    replaces a key's limits for one model (every key gets its own bucket of that size, as
    OpenAI's per-organisation, per-model limits); ``key_model_limits`` does it for one key and
    model only. ``clock`` (a monotonic seconds function) lets tests drive refills without
    sleeping; the stats timeline then uses it too instead of wall-clock time.
    """

    def __init__(
        self,
        keys: Mapping[str, Any] | Iterable[str] = ("sk-fake",),
        model_limits: Mapping[str, Any] | None = None,
        latency: float = 0.0,
        *,
        jitter: float = 0.0,
        error_rate: float = 0.0,
        invalid_json_rate: float = 0.0,
        quota_exhausted_keys: Iterable[str] = (),
        key_model_limits: Mapping[str, Mapping[str, Any]] | None = None,
        default_max_tokens: int = 16,
        models: Iterable[str] | None = None,
        seed: int | None = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] | None = None,
        limit_scope: str = "model",
        refused_spend: bool = True,
        brands: Iterable[str] = (),
    ) -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._clock = clock or time.monotonic
        self._wall = clock or time.time
        self._rng = random.Random(seed)
        self._keys: dict[str, Limits] = {}
        self._model_limits: dict[str, Limits] = {}
        self._key_model_limits: dict[str, dict[str, Limits]] = {}
        self.latency = 0.0
        self.jitter = 0.0
        self.error_rate = 0.0
        self.invalid_json_rate = 0.0
        self.default_max_tokens = 16
        self.echo_authorization = False
        self.limit_scope = "model"
        self.refused_spend = True
        self.brands: list[str] = []  # a pool for brand-list answers (sim/brands.py)
        self.quota_exhausted_keys: set[str] = set()
        self.models: list[str] | None = list(models) if models is not None else None
        if not isinstance(keys, Mapping):
            keys = {k: None for k in keys}
        self._pairs: dict[tuple[str, str], _Pair] = {}
        self.batch_api = batch_api.BatchApi(self._batch_answer)
        self._reset_stats()
        self.configure(
            keys=keys,
            model_limits=model_limits or {},
            key_model_limits=key_model_limits or {},
            latency=latency,
            jitter=jitter,
            error_rate=error_rate,
            invalid_json_rate=invalid_json_rate,
            quota_exhausted_keys=list(quota_exhausted_keys),
            default_max_tokens=default_max_tokens,
            limit_scope=limit_scope,
            refused_spend=refused_spend,
            brands=list(brands),
        )
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_error: BaseException | None = None

    # ---- configuration ------------------------------------------------------------------

    def limits_for(self, key: str, model: str) -> Limits:
        """Effective limits of a pair: key+model override, else model override, else key."""
        per_key = self._key_model_limits.get(key, {})
        if model in per_key:
            return per_key[model]
        if model in self._model_limits:
            return self._model_limits[model]
        return self._keys.get(key, Limits())

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change settings at runtime; returns the resulting configuration.

        Accepted names: latency, jitter, error_rate, invalid_json_rate, default_max_tokens,
        echo_authorization (errors quote the request's Authorization header: a leak to guard),
        quota_exhausted_keys (replaces the set), models (list or None = accept any),
        keys ({key: limits}, adds or updates keys), remove_keys ([key]),
        model_limits ({model: limits or None to drop the override}),
        key_model_limits ({key: {model: limits or None}}). A limits dict such as
        ``{"rpm": 60}`` only changes the fields it names. Existing buckets are resized at
        once: a lower limit clamps the bucket's current level, a higher one adds the difference.
        """
        known = {
            *_SCALARS,
            "limit_scope",
            "refused_spend",
            "quota_exhausted_keys",
            "models",
            "keys",
            "remove_keys",
            "model_limits",
            "key_model_limits",
            "brands",
            *batch_api.SETTINGS,
        }
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown setting(s): {sorted(unknown)}")
        if "echo_authorization" in changes and not isinstance(changes["echo_authorization"],
                                                              bool):
            raise ValueError("echo_authorization must be true or false")
        if "brands" in changes and not (isinstance(changes["brands"], list) and all(
                isinstance(b, str) and b.strip() for b in changes["brands"])):
            raise ValueError("brands must be a list of brand names")
        if "refused_spend" in changes and not isinstance(changes["refused_spend"], bool):
            raise ValueError("refused_spend must be true or false")
        if changes.get("limit_scope", "model") not in ("model", "key"):
            raise ValueError("limit_scope must be 'model' or 'key'")
        batch_settings = self.batch_api.check(changes)
        with self._lock:
            # Work on copies so that a bad value leaves the settings untouched.
            scalars: dict[str, Any] = {}
            for name, kind in _SCALARS.items():
                if name in changes:
                    value = kind(changes[name])
                    if value < 0 or (name.endswith("_rate") and value > 1):
                        raise ValueError(f"{name} out of range: {value!r}")
                    if name == "default_max_tokens" and value < 1:
                        raise ValueError("default_max_tokens must be >= 1")
                    scalars[name] = value
            keys = dict(self._keys)
            for key, value in (changes.get("keys") or {}).items():
                keys[key] = _to_limits(value, keys.get(key))
            for key in changes.get("remove_keys") or ():
                keys.pop(key, None)
            model_limits = dict(self._model_limits)
            for model, value in (changes.get("model_limits") or {}).items():
                if value is None:
                    model_limits.pop(model, None)
                else:
                    model_limits[model] = _to_limits(value, model_limits.get(model))
            key_model_limits = {k: dict(t) for k, t in self._key_model_limits.items()}
            for key, per_model in (changes.get("key_model_limits") or {}).items():
                table = key_model_limits.setdefault(key, {})
                for model, value in per_model.items():
                    if value is None:
                        table.pop(model, None)
                    else:
                        table[model] = _to_limits(value, table.get(model))

            for name, value in scalars.items():
                setattr(self, name, value)
            if "refused_spend" in changes:
                self.refused_spend = changes["refused_spend"]
            if "brands" in changes:
                self.brands = list(changes["brands"])
            if changes.get("limit_scope", self.limit_scope) != self.limit_scope:
                self.limit_scope = changes["limit_scope"]
                self._pairs.clear()  # the buckets are counted another way from now on
            if "quota_exhausted_keys" in changes:
                self.quota_exhausted_keys = set(changes["quota_exhausted_keys"] or ())
            if "models" in changes:
                models = changes["models"]
                self.models = list(models) if models is not None else None
            self._keys, self._model_limits = keys, model_limits
            self._key_model_limits = key_model_limits
            self.batch_api.apply(batch_settings)
            now = self._clock()
            for (key, model), pair in self._pairs.items():
                limits = self._keys.get(key, Limits()) if model == "*" else \
                    self.limits_for(key, model)
                if limits != pair.limits:
                    pair.apply(limits, now)
            return self._config_locked()

    def _config_locked(self) -> dict[str, Any]:
        return {
            "latency": self.latency,
            "jitter": self.jitter,
            "error_rate": self.error_rate,
            "invalid_json_rate": self.invalid_json_rate,
            "default_max_tokens": self.default_max_tokens,
            "echo_authorization": self.echo_authorization,
            "limit_scope": self.limit_scope,
            "refused_spend": self.refused_spend,
            "brands": list(self.brands),
            "quota_exhausted_keys": sorted(self.quota_exhausted_keys),
            "models": self.models,
            "keys": {k: v.as_dict() for k, v in self._keys.items()},
            "model_limits": {m: v.as_dict() for m, v in self._model_limits.items()},
            "key_model_limits": {
                k: {m: v.as_dict() for m, v in t.items()} for k, t in self._key_model_limits.items()
            },
            **self.batch_api.settings,
        }

    def config(self) -> dict[str, Any]:
        """The current configuration as JSON-able data."""
        with self._lock:
            return self._config_locked()

    # ---- statistics ---------------------------------------------------------------------

    def _reset_stats(self) -> None:
        self._started = self._wall()
        self._totals = {**_counters(), "requests": 0, "unauthorized": 0, "bad_request": 0}
        self._by_key: dict[str, dict[str, int]] = {}
        self._by_model: dict[str, dict[str, int]] = {}
        self._by_pair: dict[tuple[str, str], dict[str, int]] = {}
        self._timeline: dict[str, dict[int, list[int]]] = {}
        self._pair_timeline: dict[tuple[str, str], dict[int, list[int]]] = {}
        self._in_flight = 0
        self._max_in_flight = 0

    def reset(self) -> None:
        """Clear statistics and refill every bucket; settings are kept."""
        with self._lock:
            in_flight = self._in_flight
            self._reset_stats()
            self._in_flight = self._max_in_flight = in_flight
            self._pairs.clear()

    def _count(self, key: str, model: str, field: str, amount: int = 1) -> None:
        for table, name in ((self._by_key, key), (self._by_model, model)):
            table.setdefault(name, _counters())[field] += amount
        self._by_pair.setdefault((key, model), _counters())[field] += amount
        self._totals[field] += amount

    def stats(self) -> dict[str, Any]:
        """Counters per key, per model and per (key, model), and per-second timelines.

        ``accepted`` counts requests admitted by the rate limiter (they consumed budget, even
        when an injected 500 followed); ``ok`` the 200 answers; ``rejected_429`` rate-limit
        rejections; ``insufficient_quota`` quota 429s; ``tokens_accepted`` the rate-limit
        token cost of accepted requests. ``timeline[key]`` and
        ``timeline_by_model[key][model]`` are sorted ``[unix_second, requests, tokens]`` rows
        of accepted traffic.
        """
        with self._lock:
            pairs: dict[str, dict[str, dict[str, int]]] = {}
            for (key, model), c in self._by_pair.items():
                pairs.setdefault(key, {})[model] = dict(c)
            by_model_tl: dict[str, dict[str, list[list[int]]]] = {}
            for (key, model), tl in self._pair_timeline.items():
                by_model_tl.setdefault(key, {})[model] = [[s, *v] for s, v in sorted(tl.items())]
            return {
                "started_at": self._started,
                "now": self._wall(),
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "totals": dict(self._totals),
                "keys": {k: dict(v) for k, v in self._by_key.items()},
                "models": {m: dict(v) for m, v in self._by_model.items()},
                "pairs": pairs,
                "timeline": {
                    k: [[s, *v] for s, v in sorted(tl.items())] for k, tl in self._timeline.items()
                },
                "timeline_by_model": by_model_tl,
                "batches": self.batch_api.stats(),
            }

    def max_window(self, key: str, model: str | None = None, seconds: int = 60) -> tuple[int, int]:
        """Most requests and most tokens accepted in any ``seconds`` consecutive seconds.

        Note that OpenAI-style buckets (full at start, refilled continuously) admit up to about
        twice the per-minute limit in one 60 s window; a client limiter that promises at most
        the limit per window is stricter than the server.
        """
        with self._lock:
            source = (
                self._timeline.get(key) if model is None else self._pair_timeline.get((key, model))
            )
            rows = sorted((source or {}).items())
        best_req = best_tok = 0
        start = 0
        req = tok = 0
        for end in range(len(rows)):
            req += rows[end][1][0]
            tok += rows[end][1][1]
            while rows[end][0] - rows[start][0] >= seconds:
                req -= rows[start][1][0]
                tok -= rows[start][1][1]
                start += 1
            best_req = max(best_req, req)
            best_tok = max(best_tok, tok)
        return best_req, best_tok

    # ---- HTTP -----------------------------------------------------------------------------

    @staticmethod
    def _error(
        status: int,
        message: str,
        type_: str,
        code: str | None,
        headers: Mapping[str, str],
        param: str | None = None,
    ) -> web.Response:
        body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        return web.json_response(body, status=status, headers=dict(headers))

    def _bad_request(
        self,
        message: str,
        headers: Mapping[str, str],
        param: str | None = None,
        code: str | None = None,
    ) -> web.Response:
        with self._lock:
            self._totals["bad_request"] += 1
        return self._error(400, message, "invalid_request_error", code, headers, param)

    def _auth(self, request: web.Request, headers: Mapping[str, str]) -> str | web.Response:
        auth = request.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        key = key.strip()
        with self._lock:
            known = scheme.lower() == "bearer" and key in self._keys
            if not known:
                self._totals["unauthorized"] += 1
        if known:
            return key
        if not key:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        else:
            shown = key[:3] + "*" * 4 + key[-4:] if len(key) > 8 else "*" * len(key)
            message = f"Incorrect API key provided: {shown}. You can find your API key at " + (
                "https://platform.openai.com/account/api-keys."
            )
        return self._error(401, message, "invalid_request_error", "invalid_api_key", headers)

    async def _chat(self, request: web.Request) -> web.Response:
        return await self._counted(request, self._chat_inner)

    async def _embeddings(self, request: web.Request) -> web.Response:
        return await self._counted(request, self._embeddings_inner)

    async def _counted(self, request: web.Request, inner) -> web.Response:
        started = time.monotonic()
        with self._lock:
            self._totals["requests"] += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            response = await inner(request, started)
            if self.echo_authorization and response.status >= 400:
                response = self._echo_authorization(request, response)
            return response
        finally:
            with self._lock:
                self._in_flight -= 1

    @staticmethod
    def _echo_authorization(request: web.Request, response: web.Response) -> web.Response:
        """An injected fault: a careless provider (or proxy) that quotes the request's
        Authorization header, API key and all, in its error message."""
        body = json.loads(response.body)
        echoed = request.headers.get("Authorization", "")
        body["error"]["message"] += f" (request had Authorization: {echoed})"
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in ("content-type", "content-length")}
        return web.json_response(body, status=response.status, headers=headers)

    async def _opened(self, request: web.Request, headers: dict[str, str]
                      ) -> tuple[str, dict, str] | web.Response:
        """(key, body, model) of an authenticated JSON request naming a model, or the error
        answer a provider gives (401, or 400 for a body that is not a JSON object)."""
        key = self._auth(request, headers)
        if isinstance(key, web.Response):
            return key
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return self._bad_request("We could not parse the JSON body of your request.", headers)
        if not isinstance(body, dict):
            return self._bad_request("The request body must be a JSON object.", headers)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._bad_request("you must provide a model parameter", headers)
        return key, body, model

    async def _embeddings_inner(self, request: web.Request, started: float) -> web.Response:
        """``POST /v1/embeddings``: deterministic unit vectors (a hash of each input), counted
        against the same limits as chat: 1 request and ceil(chars / 4) tokens per input."""
        headers = {"x-request-id": f"req_{uuid.uuid4().hex}", "openai-organization": ORG}
        opened = await self._opened(request, headers)
        if isinstance(opened, web.Response):
            return opened
        key, body, model = opened
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if (not isinstance(inputs, list) or not inputs or len(inputs) > 2048
                or not all(isinstance(i, str) and i for i in inputs)):
            return self._bad_request("'input' must be a non-empty string or a list of 1 to "
                                     "2048 non-empty strings.", headers, "input")
        dimensions = body.get("dimensions", 8)
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or \
                not 1 <= dimensions <= 3072:
            return self._bad_request("'dimensions' must be an integer from 1 to 3072.",
                                     headers, "dimensions")
        cost = sum(math.ceil(len(i) / 4) for i in inputs)
        with self._lock:
            if self.models is not None and model not in self.models:
                self._totals["bad_request"] += 1
                return self._error(404, f"The model `{model}` does not exist or you do not "
                                   "have access to it.", "invalid_request_error",
                                   "model_not_found", headers)
            rejected = self._admit(key, model, cost, headers)
            if rejected is not None:
                return rejected
            delay = self.latency
        if delay > 0:
            await asyncio.sleep(delay)
        with self._lock:
            self._count(key, model, "ok")
            self._count(key, model, "prompt_tokens", cost)
        data = [{"object": "embedding", "index": i, "embedding": _vector(text, dimensions)}
                for i, text in enumerate(inputs)]
        return web.json_response({"object": "list", "data": data, "model": model,
                                  "usage": {"prompt_tokens": cost, "total_tokens": cost}},
                                 headers=headers)

    async def _chat_inner(self, request: web.Request, started: float) -> web.Response:
        headers = {"x-request-id": f"req_{uuid.uuid4().hex}", "openai-organization": ORG}
        opened = await self._opened(request, headers)
        if isinstance(opened, web.Response):
            return opened
        key, body, model = opened
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._bad_request(
                "Missing required parameter: 'messages'.",
                headers,
                "messages",
                "missing_required_parameter",
            )
        if body.get("stream"):
            return self._bad_request(
                "The simulator does not support stream=true.", headers, "stream"
            )
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
            return self._bad_request(
                f"Invalid '{param}': expected an integer >= 1, got {max_tokens!r}.",
                headers,
                param,
                "integer_below_min_value",
            )
        fmt = body.get("response_format")
        json_mode = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")

        with self._lock:
            if self.models is not None and model not in self.models:
                self._totals["bad_request"] += 1
                return self._error(
                    404,
                    f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                    headers,
                )
            if key in self.quota_exhausted_keys:
                self._count(key, model, "insufficient_quota")
                headers.update(self._pair(key, model).headers())
                return self._error(
                    429,
                    "You exceeded your current quota, please check your plan and billing "
                    "details. For more information on this error, read the docs: "
                    "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                    "insufficient_quota",
                    "insufficient_quota",
                    headers,
                )
            cost = token_cost(messages, max_tokens, self.default_max_tokens)
            rejected = self._admit(key, model, cost, headers)
            if rejected is not None:
                return rejected
            delay = self.latency
            if self.jitter:
                delay += self._rng.uniform(-self.jitter, self.jitter)
            fail = self.error_rate > 0 and self._rng.random() < self.error_rate
            garble = (
                json_mode
                and self.invalid_json_rate > 0
                and self._rng.random() < self.invalid_json_rate
            )

        if delay > 0:
            await asyncio.sleep(delay)
        if fail:
            with self._lock:
                self._count(key, model, "errors_500")
            return self._error(
                500,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
                headers,
            )

        content, finish = _answer(messages, json_mode, max_tokens)
        if json_mode and isinstance(fmt, dict) and isinstance(fmt.get("json_schema"), dict) \
                and fmt["json_schema"].get("name") == brand_answers.EXTRACTION_SCHEMA:
            listed = brand_answers.extraction(_last_user(messages))
        else:
            listed = None if json_mode else brand_answers.answer(_last_user(messages), model,
                                                                 self.brands)
        if listed is not None:
            content, finish = _fit(listed, max_tokens)
        if garble:
            content = "Sure! Here is the JSON you asked for: " + content[: len(content) // 2]
        prompt_tokens = math.ceil(prompt_chars(messages) / 4)
        completion_tokens = math.ceil(len(content) / 4)
        with self._lock:
            self._count(key, model, "ok")
            self._count(key, model, "prompt_tokens", prompt_tokens)
            self._count(key, model, "completion_tokens", completion_tokens)
        headers["openai-processing-ms"] = str(round((time.monotonic() - started) * 1000))
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:29]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        return web.json_response(payload, headers=headers)

    def _batch_answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One request of a Batch API batch: the answer /v1/chat/completions would give,
        without the per-minute buckets (batches have their own pool)."""
        return batch_api.chat_answer(body, _answer, prompt_chars, self.default_max_tokens,
                                     self.models)

    def _pair(self, key: str, model: str) -> _Pair:
        """The pair's rate-limit state, refilled to now (created full). Lock held.

        With limit_scope "key" every model on a key draws from one pair of buckets (the key's
        limits), as providers that count all models against the key do."""
        now = self._clock()
        if self.limit_scope == "key":
            model, limits = "*", self._keys.get(key, Limits())
        else:
            limits = self.limits_for(key, model)
        pair = self._pairs.get((key, model))
        if pair is None:
            pair = self._pairs[(key, model)] = _Pair(limits, now)
        for bucket in (pair.requests, pair.tokens):
            if bucket is not None:
                bucket.refill(now)
        return pair

    def _admit(
        self, key: str, model: str, cost: int, headers: dict[str, str]
    ) -> web.Response | None:
        """Take one request and ``cost`` tokens from the pair's buckets, or build the 429.

        Called with the lock held. A refused request still spends one request of the budget
        (``refused_spend``, the default: real providers count rejected requests against the
        per-minute limit, so a client that keeps knocking keeps itself out), down to at most a
        minute's debt; it spends no tokens.
        """
        pair = self._pair(key, model)
        req, tok = pair.requests, pair.tokens

        if tok is not None and cost > tok.capacity + _EPS:
            headers.update(pair.headers())
            self._count(key, model, "rejected_429")
            return self._error(
                429,
                f"Request too large for {model} in organization {ORG} on tokens per min (TPM): "
                f"Limit {int(tok.capacity)}, Requested {cost}. The input or output tokens must "
                "be reduced in order to run successfully. Visit "
                "https://platform.openai.com/account/rate-limits to learn more.",
                "tokens",
                "rate_limit_exceeded",
                headers,
            )

        short = []
        if req is not None and not req.has(1):
            short.append(("requests", "requests per min (RPM)", req, 1))
        if tok is not None and not tok.has(cost):
            short.append(("tokens", "tokens per min (TPM)", tok, cost))
        if short:
            kind, label, bucket, amount = short[0]
            used = bucket.used()  # as the request found it
            if self.refused_spend and req is not None:
                req.level = max(req.level - 1, -req.capacity)
            wait = max(bucket.wait(amount) for _, _, bucket, amount in short)
            # A provider that limits per key names no model in its message.
            scope = f" for {model}" if self.limit_scope == "model" else ""
            headers.update(pair.headers())
            headers["retry-after"] = str(max(1, math.ceil(wait - _EPS)))
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000 - _EPS)))
            self._count(key, model, "rejected_429")
            return self._error(
                429,
                f"Rate limit reached{scope} in organization {ORG} on {label}: "
                f"Limit {int(bucket.capacity)}, Used {used}, Requested {amount}. "
                f"Please try again in {format_duration(wait)}. Visit "
                "https://platform.openai.com/account/rate-limits to learn more.",
                kind,
                "rate_limit_exceeded",
                headers,
            )

        if req is not None:
            req.level -= 1
        if tok is not None:
            tok.level -= cost
        headers.update(pair.headers())
        self._count(key, model, "accepted")
        self._count(key, model, "tokens_accepted", cost)
        second = int(self._wall())
        for table, name in ((self._timeline, key), (self._pair_timeline, (key, model))):
            row = table.setdefault(name, {}).setdefault(second, [0, 0])
            row[0] += 1
            row[1] += cost
        return None

    async def _models(self, request: web.Request) -> web.Response:
        headers = {"x-request-id": f"req_{uuid.uuid4().hex}"}
        key = self._auth(request, headers)
        if isinstance(key, web.Response):
            return key
        with self._lock:
            names = self.models or sorted(
                {
                    *DEFAULT_MODELS,
                    *self._model_limits,
                    *(m for t in self._key_model_limits.values() for m in t),
                }
            )
        data = [
            {"id": n, "object": "model", "created": 1_700_000_000, "owned_by": "system"}
            for n in names
        ]
        return web.json_response({"object": "list", "data": data}, headers=headers)

    async def _not_found(self, request: web.Request) -> web.Response:
        return self._error(
            404,
            f"Invalid URL ({request.method} {request.path})",
            "invalid_request_error",
            None,
            {"x-request-id": f"req_{uuid.uuid4().hex}"},
        )

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _control_get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.config())

    async def _control_config(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object")
            return web.json_response(self.configure(**changes))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def _control_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    def make_app(self) -> web.Application:
        """The aiohttp application; exposed so it can be mounted or served by other means."""
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        self.batch_api.add_routes(app, self._auth)
        app.router.add_get("/_control/stats", self._control_stats)
        app.router.add_get("/_control/config", self._control_get_config)
        app.router.add_post("/_control/config", self._control_config)
        app.router.add_post("/_control/reset", self._control_reset)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, to pass to the SDK as base_url."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, the server root (control routes live under /_control/)."""
        return f"http://{self.host}:{self.port}"

    async def start_async(self) -> str:
        """Serve on the running event loop; returns base_url (the port is chosen if 0)."""
        runner = web.AppRunner(
            self.make_app(), access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=2048, reuse_address=True)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self.base_url

    async def stop_async(self) -> None:
        """Stop serving (in-flight requests get a short grace period)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def start(self) -> str:
        """Run the server in a background thread with its own event loop; returns base_url."""
        if self._thread is not None:
            raise RuntimeError("FakeOpenAI is already running")
        ready = threading.Event()
        self._start_error = None
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="fake-openai", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise self._start_error
        return self.base_url

    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.start_async())
        except BaseException as exc:
            self._start_error = exc
            loop.close()
            ready.set()
            return
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.stop_async())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    def stop(self) -> None:
        """Stop the background server started by start(); safe to call twice."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = None

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def serve_forever(self) -> None:
        """Serve in the foreground until cancelled or sent SIGINT/SIGTERM (for the CLI)."""
        await self.start_async()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        print(f"fake OpenAI listening on {self.base_url}", flush=True)
        try:
            await stop.wait()
        finally:
            await self.stop_async()


# --------------------------------------------------------------------------------------------
# Command line


def _parse_limit_spec(spec: str) -> tuple[str, Limits]:
    """``NAME[:RPM[:TPM]]``; an empty or ``-`` field is unlimited."""
    name, *rest = spec.split(":")
    if not name or len(rest) > 2:
        raise argparse.ArgumentTypeError(f"expected NAME[:RPM[:TPM]], got {spec!r}")
    values = [None if v in ("", "-") else int(v) for v in rest] + [None, None]
    try:
        return name, Limits(rpm=values[0], tpm=values[1])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: list[str] | None = None) -> None:
    """Run the simulator in the foreground."""
    parser = argparse.ArgumentParser(
        prog="python -m jobqueue.sim", description="OpenAI-compatible simulator"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100, help="0 lets the OS choose")
    parser.add_argument(
        "--key",
        action="append",
        type=_parse_limit_spec,
        default=[],
        metavar="KEY[:RPM[:TPM]]",
        help="accepted key and its limits",
    )
    parser.add_argument(
        "--model-limit",
        action="append",
        type=_parse_limit_spec,
        default=[],
        metavar="MODEL[:RPM[:TPM]]",
        help="per-model limit override",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="mean seconds per answer")
    parser.add_argument("--jitter", type=float, default=0.0, help="+/- seconds of latency")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--invalid-json-rate", type=float, default=0.0)
    parser.add_argument(
        "--quota-key", action="append", default=[], help="key that answers 429 insufficient_quota"
    )
    parser.add_argument("--default-max-tokens", type=int, default=16)
    parser.add_argument(
        "--model", action="append", default=None, help="only accept these models (default: any)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--brand", action="append", default=[],
                        help="a brand for brand-list answers to recommendation prompts")
    parser.add_argument("--limit-scope", choices=("model", "key"), default="model",
                        help="limits per (key, model), or one budget per key for every model")
    parser.add_argument("--refused-spend", action=argparse.BooleanOptionalAction, default=True,
                        help="a refused request still counts against the request limit")
    args = parser.parse_args(argv)
    keys = dict(args.key) or {"sk-fake": Limits()}
    sim = FakeOpenAI(
        keys=keys,
        model_limits=dict(args.model_limit),
        latency=args.latency,
        jitter=args.jitter,
        error_rate=args.error_rate,
        invalid_json_rate=args.invalid_json_rate,
        quota_exhausted_keys=args.quota_key,
        default_max_tokens=args.default_max_tokens,
        models=args.model,
        seed=args.seed,
        host=args.host,
        port=args.port,
        limit_scope=args.limit_scope,
        refused_spend=args.refused_spend,
        brands=args.brand,
    )
    for key, limits in keys.items():
        print(f"key {key}: rpm={limits.rpm or 'unlimited'} tpm={limits.tpm or 'unlimited'}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(sim.serve_forever())

