"""Per-owner quotas on new work: at most N jobs (and T estimated LLM tokens) per period, for
each owner, on a queue or a job kind, kept in Postgres and charged at enqueue.

    # jobqueue.toml (applied to the database by `jobqueue migrate` or `jobqueue quotas apply`)
    [quotas.kind]
    lesson = "10/min"                                   # 10 lesson jobs per owner per minute
    [quotas.queue]
    uploads = "5/min"
    openai = { jobs = "1000/hour", tokens = "200000/hour" }

or at run time: `jobqueue quotas set kind:lesson 10/min`, `PUT /api/quotas/kind/lesson`.

Each (quota, owner) is a pair of token buckets (sql/queries/quotas.sql), like the provider
limiter's: full at the quota's budget, refilled continuously from the database clock, so
"10/min" lets 10 through at once and then one every 6 s. An enqueue locks the owner's buckets,
checks every quota that applies to every job, charges them and inserts the jobs in one
transaction: concurrent enqueues never exceed a quota, and a refused enqueue charges nothing.
Jobs without an owner are not counted (quotas are per owner).

Refusal raises QuotaExceeded (nothing enqueued) with the retry time; a caller that asks for
`partial` gets the longest prefix of its jobs that fits instead. The token budget is charged
with each job's estimate where the enqueue knows it (a chat job's messages or prompt, /4, plus
its max_tokens); an uploaded document's estimate is known only once its text is extracted,
and is charged then (`debit`), possibly into debt that the owner's later enqueues wait out.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from jobqueue import config
from jobqueue.db.queries import q
from jobqueue.errors import ConfigError, InvalidJob, QuotaExceeded

SCOPES = ("queue", "kind")
# The tuple positions of JobSpec.validated_row this module reads.
_QUEUE, _KIND, _PAYLOAD, _OWNER = 0, 1, 2, 7
# A chat job that names no max_tokens: the platforms' default (jobqueue/llm/platforms.py).
DEFAULT_MAX_TOKENS = 512

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600,
          "hour": 3600, "d": 86400, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True)
class Rate:
    """`amount` per `seconds`."""

    amount: int
    seconds: float

    def __str__(self) -> str:
        for unit, size in (("day", 86400), ("hour", 3600), ("min", 60)):
            if self.seconds == size:
                return f"{self.amount}/{unit}"
        return f"{self.amount}/{self.seconds:g}s"


# A quota's period: at least a millisecond, at most a leap year. Beyond either, the `real`
# columns that hold it overflow or round to 0 (and infinity made every enqueue divide by 0).
MIN_PERIOD_SECONDS = 0.001
MAX_PERIOD_SECONDS = 366 * 86400


def parse_rate(text: Any, field: str = "rate") -> Rate:
    """"10/min", "5/s", "1000/hour", "100/day", "20/30s"; ValueError naming `field`."""
    match = _RATE.match(text) if isinstance(text, str) else None
    unit = _UNITS.get(match.group(3)) if match else None
    if not match or unit is None:
        raise ValueError(f"{field}: must look like 10/min (N per s, min, hour, day or Ns), "
                         f"got {text!r}")
    digits = match.group(1)
    amount = int(digits) if len(digits) <= 10 else 0  # int() refuses 4,300 digits and more
    seconds = float(match.group(2) or 1) * unit
    if amount < 1 or amount > 2**31 - 1:
        raise ValueError(f"{field}: needs a positive amount (at most {2**31 - 1}), "
                         f"got {text!r}")
    if not MIN_PERIOD_SECONDS <= seconds <= MAX_PERIOD_SECONDS:  # also NaN, inf: a real column
        raise ValueError(f"{field}: needs a period from {MIN_PERIOD_SECONDS:g}s to "
                         f"{MAX_PERIOD_SECONDS // 86400:g} days, got {text!r}")
    return Rate(amount, seconds)


@dataclass(frozen=True)
class Quota:
    """One quota: `jobs` and/or `tokens` per owner on the queue or job kind `name`."""

    scope: str
    name: str
    jobs: Rate | None = None
    tokens: Rate | None = None

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"scope: queue or kind, got {self.scope!r}")
        if not self.name or "\x00" in self.name or len(self.name) > 200:
            raise ValueError("name: a non-empty queue or kind name")
        if self.jobs is None and self.tokens is None:
            raise ValueError(f"jobs: give a jobs budget, a tokens budget or both ({self.key})")

    @property
    def key(self) -> str:
        return f"{self.scope}:{self.name}"

    def to_dict(self) -> dict:
        return {"scope": self.scope, "name": self.name,
                "jobs": str(self.jobs) if self.jobs else None,
                "tokens": str(self.tokens) if self.tokens else None}


def parse_key(text: str) -> tuple[str, str]:
    """"kind:lesson" -> ("kind", "lesson"); ValueError for anything else."""
    scope, sep, name = text.partition(":")
    if not sep or scope not in SCOPES or not name:
        raise ValueError(f"quota: name it queue:NAME or kind:NAME, got {text!r}")
    return scope, name


# -- jobqueue.toml ----------------------------------------------------------------------------

def load(path: Path | str | None = None) -> list[Quota]:
    """The [quotas] of the project's config file; [] when the default file is absent."""
    return config.load(parse, path, missing_ok=path is None and not config.explicitly_configured())


def parse(data: dict[str, Any], source: str = "config") -> list[Quota]:
    """`[quotas.kind]` / `[quotas.queue]`: NAME = "10/min" or {jobs = ..., tokens = ...}."""
    section = data.get("quotas", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: quotas: must be a table ([quotas.kind], [quotas.queue])")
    found = []
    for scope, table in section.items():
        where = f"{source}: quotas.{scope}"
        if scope not in SCOPES:
            raise ConfigError(f"{where}: unknown; quotas are per queue ([quotas.queue]) or per "
                              "job kind ([quotas.kind])")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table of NAME = \"10/min\"")
        for name, value in table.items():
            found.append(_quota(scope, name, value, f"{where}.{name}"))
    return found


def _quota(scope: str, name: str, value: Any, where: str) -> Quota:
    try:
        if isinstance(value, str):
            return Quota(scope, name, jobs=parse_rate(value, "jobs"))
        if isinstance(value, dict):
            unknown = set(value) - {"jobs", "tokens"}
            if unknown:
                raise ValueError(f"{sorted(unknown)[0]}: unknown (known: jobs, tokens)")
            return Quota(scope, name,
                         jobs=parse_rate(value["jobs"], "jobs") if "jobs" in value else None,
                         tokens=parse_rate(value["tokens"], "tokens") if "tokens" in value
                         else None)
        raise ValueError(f"must be \"10/min\" or {{jobs = \"10/min\", tokens = \"50000/hour\"}},"
                         f" got {value!r}")
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# -- stored quotas ----------------------------------------------------------------------------

def store(conn, quota: Quota, source: str = "api") -> None:
    conn.execute(q("quota_set"), {
        "scope": quota.scope, "name": quota.name, "source": source,
        "jobs": quota.jobs.amount if quota.jobs else None,
        "jobs_seconds": quota.jobs.seconds if quota.jobs else None,
        "tokens": quota.tokens.amount if quota.tokens else None,
        "tokens_seconds": quota.tokens.seconds if quota.tokens else None})


def remove(conn, scope: str, name: str) -> bool:
    return conn.execute(q("quota_remove"), {"scope": scope, "name": name}).fetchone() is not None


def apply_config(conn, quotas: list[Quota]) -> dict[str, list[str]]:
    """Make the database's 'config' quotas what jobqueue.toml says, in one transaction;
    quotas set through the CLI or API stay. Returns {"set": [...], "removed": [...]}."""
    with conn.transaction():
        for quota in quotas:
            store(conn, quota, source="config")
        gone = conn.execute(q("quota_remove_config_except"),
                            {"keep": [quota.key for quota in quotas]}).fetchall()
    return {"set": [quota.key for quota in quotas],
            "removed": [f"{_get(r, 'scope', 0)}:{_get(r, 'name', 1)}" for r in gone]}


def listed(conn) -> list[dict]:
    """Every stored quota, as people read it: {scope, name, jobs: "10/min", tokens, source}."""
    out = []
    for row in conn.execute(q("quota_list")).fetchall():
        quota = _from_row(row)
        out.append(quota.to_dict() | {"source": row["source"]})
    return out


def usage(conn, owner: str) -> list[dict]:
    """An owner's standing on each quota it used lately: limit, remaining, reset seconds."""
    out = []
    for row in conn.execute(q("quota_usage_of"), {"owner": owner}).fetchall():
        out.extend(_standing(row))
    return out


def debit(*, owner: str | None, queue: str, kind: str, tokens: int):
    """The statement and parameters that charge `tokens` to the owner's token budgets on
    `queue` and `kind`, never refused (see quota_usage_debit); for sync or async callers:
    `await conn.execute(*debit(...))`. None when there is nothing to charge."""
    if not owner or tokens <= 0:
        return None
    return q("quota_usage_debit"), {"owner": owner, "queue": queue, "kind": kind,
                                    "tokens": tokens}


# -- the enqueue check ------------------------------------------------------------------------

@dataclass(frozen=True)
class Standing:
    """The tightest quota an enqueue was charged against, for X-Quota-* / X-RateLimit-*."""

    quota: str
    budget: str
    limit: int
    period_seconds: float
    remaining: float
    reset_seconds: float


def owned(rows: list[tuple]) -> bool:
    """Whether any of `rows` has an owner: only those can meet a quota."""
    return any(row[_OWNER] is not None for row in rows)


def applies(conn, rows: list[tuple]) -> bool:
    """Whether any quota could apply to `rows` (one indexed lookup; False at once when no
    row has an owner): lets an enqueue that no quota concerns skip the transaction."""
    owned = [row for row in rows if row[_OWNER] is not None]
    return bool(owned) and conn.execute(q("quota_find"), {
        "queues": sorted({row[_QUEUE] for row in owned}),
        "kinds": sorted({row[_KIND] for row in owned})}).fetchone() is not None


class Admission(NamedTuple):
    """What admit let through: the first `count` rows; the tightest quota's `standing` after
    the charge (None: no quota applies); and, when `partial` cut the rows short, the
    QuotaExceeded that the first refused row met (its retry time)."""

    count: int
    standing: Standing | None = None
    exceeded: QuotaExceeded | None = None


def admit(conn, rows: list[tuple], *, partial: bool = False,
          tokens: list[int | None] | None = None) -> Admission:
    """Charge the quotas that apply to `rows` (JobSpec.validated_row tuples) in the caller's
    transaction, which must also insert them: the first Admission.count rows (all of them,
    unless `partial`). Raises QuotaExceeded when not even the rows asked for fit (with
    `partial`: when not even the first fits). `tokens`: per row, an estimate that overrides
    the one read from the payload."""
    if all(row[_OWNER] is None for row in rows):
        return Admission(len(rows))
    # The buckets each row would charge if its queue and its kind had a quota. The ensure
    # statement creates rows only for quotas that exist, and the lock returns only those:
    # no separate lookup of the quotas first.
    wanted = sorted({(scope, name, row[_OWNER]) for row in rows if row[_OWNER] is not None
                     for scope, name in (("queue", row[_QUEUE]), ("kind", row[_KIND]))})
    params = {"scopes": [b[0] for b in wanted], "names": [b[1] for b in wanted],
              "owners": [b[2] for b in wanted]}
    conn.execute(q("quota_usage_ensure"), params)
    levels = {(_get(r, "scope", 0), _get(r, "name", 1), _get(r, "owner", 2)): _row_dict(r)
              for r in conn.execute(q("quota_usage_lock"), params).fetchall()}
    if not levels:
        return Admission(len(rows))
    charges: list[list[tuple[str, str, str]]] = [
        [] if row[_OWNER] is None else [
            b for b in (("queue", row[_QUEUE], row[_OWNER]), ("kind", row[_KIND], row[_OWNER]))
            if b in levels]
        for row in rows]
    buckets = sorted(levels)
    params = {"scopes": [b[0] for b in buckets], "names": [b[1] for b in buckets],
              "owners": [b[2] for b in buckets]}
    jobs_left = {b: levels[b]["jobs_now"] for b in buckets}
    tokens_left = {b: levels[b]["tokens_now"] for b in buckets}
    wants_tokens = any(levels[b]["tokens"] is not None for b in buckets)
    admitted = 0
    refusal = None
    for index, row_charges in enumerate(charges):
        cost = 0
        if wants_tokens and any(levels[b]["tokens"] is not None for b in row_charges):
            given = tokens[index] if tokens is not None else None
            cost = given if given is not None else estimate_tokens(rows[index][_PAYLOAD])
        refusal = _first_refusal(row_charges, levels, jobs_left, tokens_left, cost)
        if refusal is not None:
            break
        for b in row_charges:
            if jobs_left[b] is not None:
                jobs_left[b] -= 1
            if tokens_left[b] is not None:
                tokens_left[b] -= cost
        admitted += 1
    exceeded = None
    if refusal is not None:
        left = {"jobs": jobs_left, "tokens": tokens_left}[refusal[1]][refusal[0]]
        exceeded = _exceeded(refusal, levels, charges, partial, left)
        if not partial or admitted == 0:
            raise exceeded
    conn.execute(q("quota_usage_charge"), params | {
        "jobs_levels": [jobs_left[b] if jobs_left[b] is not None else 0.0 for b in buckets],
        "tokens_levels": [tokens_left[b] if tokens_left[b] is not None else 0.0
                          for b in buckets]})
    return Admission(admitted, _tightest(buckets, levels, jobs_left, tokens_left), exceeded)


def _first_refusal(row_charges, levels, jobs_left, tokens_left, cost):
    """(bucket, budget, needed) of the first bucket this row does not fit in, or None."""
    for b in row_charges:
        if jobs_left[b] is not None and jobs_left[b] < 1 - 1e-9:
            return b, "jobs", 1
        cap = levels[b]["tokens"]
        if tokens_left[b] is not None and cost > 0:
            # A job bigger than the whole budget passes when the bucket is full and leaves it
            # in debt (the average still holds), as the provider limiter does.
            if tokens_left[b] < cost and tokens_left[b] < cap - 1e-9:
                return b, "tokens", min(cost, cap)
        elif tokens_left[b] is not None and tokens_left[b] < 0:
            return b, "tokens", 0
    return None


def _exceeded(refusal, levels, charges, partial, now: float) -> QuotaExceeded:
    """The refusal of `bucket` (its `budget` has `now` left after the rows admitted before)."""
    bucket, budget, needed = refusal
    level = levels[bucket]
    limit, seconds = level[budget], level[f"{budget}_seconds"]
    per_second = limit / seconds
    # What must fit for the caller's request to pass: without `partial`, every job asked for
    # (more than the whole budget never fits: then the time to a full budget, and the message
    # says to split or ask for partial); with it, the first job.
    if budget == "jobs" and not partial:
        needed = sum(1 for row_charges in charges if bucket in row_charges)
    missing = max(0.0, min(needed, limit) - now)
    retry = max(1.0, math.ceil(missing / per_second)) if missing > 0 else 1.0
    reset = math.ceil(max(0.0, limit - now) / per_second)
    owner = bucket[2]
    what = "jobs" if budget == "jobs" else "estimated tokens"
    message = (f"quota {bucket[0]}:{bucket[1]} ({Rate(limit, seconds)} {what}) of owner "
               f"{owner!r}: {math.floor(max(0.0, now))} left")
    if budget == "jobs" and not partial and needed > limit:
        message += (f"; a request of {needed} jobs is more than the whole quota: split it or "
                    "submit with partial")
    else:
        message += f"; retry in {retry:.0f}s"
    return QuotaExceeded(message + "; nothing was enqueued", quota=f"{bucket[0]}:{bucket[1]}",
                         owner=owner, budget=budget, limit=limit, period_seconds=seconds,
                         remaining=max(0.0, now), reset_seconds=reset, retry_after=retry,
                         requested=needed)


def _tightest(buckets, levels, jobs_left, tokens_left) -> Standing:
    """The bucket with the smallest share of its budget left."""
    best = None
    for b in buckets:
        for budget, left in (("jobs", jobs_left[b]), ("tokens", tokens_left[b])):
            if left is None:
                continue
            limit, seconds = levels[b][budget], levels[b][f"{budget}_seconds"]
            share = left / limit
            if best is None or share < best[0]:
                reset = math.ceil(max(0.0, limit - left) / (limit / seconds))
                best = (share, Standing(f"{b[0]}:{b[1]}", budget, limit, seconds,
                                        max(0.0, left), reset))
    return best[1]


def _standing(row) -> list[dict]:
    out = []
    for budget in ("jobs", "tokens"):
        limit = row[budget]
        if limit is None:
            continue
        left, seconds = row[f"{budget}_now"], row[f"{budget}_seconds"]
        out.append({"quota": f"{row['scope']}:{row['name']}", "budget": budget,
                    "limit": limit, "per": str(Rate(limit, seconds)),
                    "remaining": math.floor(max(0.0, left)),
                    "reset_seconds": math.ceil(max(0.0, limit - left) / (limit / seconds))})
    return out


def estimate_tokens(payload: str | dict) -> int:
    """What a chat-like job will ask of a provider, as the limiter estimates it: prompt
    characters / 4 (messages, prompt or text) plus max_tokens (the platform default when
    absent). 0 for a payload with none of those (a document job: charged once extracted)."""
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            raise InvalidJob("payload: not JSON") from None
    if not isinstance(payload, dict):
        return 0
    chars = 0
    messages = payload.get("messages")
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                chars += sum(len(p.get("text", "")) for p in content
                             if isinstance(p, dict) and isinstance(p.get("text"), str))
    for field in ("prompt", "text"):
        if isinstance(payload.get(field), str):
            chars += len(payload[field])
    if not chars and not isinstance(messages, list):
        return 0
    max_tokens = payload.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        max_tokens = DEFAULT_MAX_TOKENS
    return math.ceil(chars / 4) + max_tokens


def _from_row(row) -> Quota:
    return Quota(row["scope"], row["name"],
                 jobs=Rate(row["jobs"], row["jobs_seconds"]) if row["jobs"] else None,
                 tokens=Rate(row["tokens"], row["tokens_seconds"]) if row["tokens"] else None)


def _get(row, name: str, index: int):
    return row[name] if isinstance(row, dict) else row[index]


_LOCK_COLUMNS = ("scope", "name", "owner", "jobs", "jobs_seconds", "tokens", "tokens_seconds",
                 "jobs_now", "tokens_now")


def _row_dict(row) -> dict:
    return row if isinstance(row, dict) else dict(zip(_LOCK_COLUMNS, row, strict=True))

