"""Per-owner quotas over HTTP: the 429 a refused enqueue answers, the X-Quota-* headers of an
accepted one, and /api/quotas to read them (everyone: the quotas and their own standing) and
to set or remove them (admin). The quotas themselves are jobqueue/quotas.py's.

A refusal is 429 with Retry-After and the X-RateLimit-Limit/-Remaining/-Reset (and -Policy,
e.g. `10;w=60`) of the quota that refused, in place of the token's request-rate headers: the
client needs to know which limit to wait for.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from flask import Blueprint, g, jsonify
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from jobqueue import quotas
from jobqueue.errors import QuotaExceeded
from web.auth import api_error, require
from web.contract import BadRequest, Reply, operation
from web.resources import resources
from web.schemas import Name, RequestModel, ResponseModel, Text, TextModel

bp = Blueprint("quotas", __name__)


def refusal_headers(exc: QuotaExceeded) -> dict[str, str]:
    return {
        "Retry-After": str(max(1, math.ceil(exc.retry_after))),
        "X-RateLimit-Limit": str(exc.limit),
        "X-RateLimit-Remaining": str(math.floor(exc.remaining)),
        "X-RateLimit-Reset": str(math.ceil(exc.reset_seconds)),
        "X-RateLimit-Policy": f"{exc.limit};w={exc.period_seconds:g}",
    }


def standing_headers(standing: quotas.Standing | None) -> dict[str, str]:
    """X-Quota-* for an accepted enqueue: the tightest quota it was charged to. (X-RateLimit-*
    stay the token's request rate.)"""
    if standing is None:
        return {}
    return {
        "X-Quota": standing.quota + ("" if standing.budget == "jobs" else " tokens"),
        "X-Quota-Limit": str(standing.limit),
        "X-Quota-Remaining": str(math.floor(standing.remaining)),
        "X-Quota-Reset": str(math.ceil(standing.reset_seconds)),
    }


@bp.app_errorhandler(QuotaExceeded)
def _quota_exceeded(exc: QuotaExceeded):
    headers = refusal_headers(exc)
    # after_request writes g.rate_headers onto every answer: make them this quota's.
    g.rate_headers = {k: v for k, v in headers.items() if k.startswith("X-RateLimit")}
    response = api_error(429, "quota_exceeded", str(exc), headers)
    body = response.get_json()
    body["error"].update(quota=exc.quota, budget=exc.budget, limit=exc.limit,
                         period_seconds=exc.period_seconds, retry_after=exc.retry_after,
                         retry_at=exc.retry_at.isoformat())
    response.set_data(jsonify(body).get_data())
    return response


def _scope(scope: str):
    if scope not in quotas.SCOPES:
        return api_error(404, "not_found", f"scope: queue or kind, got {scope!r}",
                         field="scope")
    return None


class QuotaBody(RequestModel):
    """PUT /api/quotas/<scope>/<name>: "N/period" budgets, at least one."""

    jobs: Text | None = Field(None, description='Jobs per period, e.g. "10/min"')
    tokens: Text | None = Field(None, description='Estimated LLM tokens per period, e.g. '
                                                  '"200000/day"')

    @field_validator("jobs", "tokens")
    @classmethod
    def _rate(cls, value: str | None, info) -> str | None:
        if value is not None:
            try:
                quotas.parse_rate(value, info.field_name)
            except ValueError as exc:
                raise PydanticCustomError("rate", "{problem}", {
                    "problem": str(exc).removeprefix(f"{info.field_name}: ")}) from None
        return value


class QuotaPath(TextModel):
    scope: Name = Field(description="queue or kind (another is a 404)")
    name: Name


class QuotaList(ResponseModel):
    quotas: list[dict[str, Any]]
    owner: str | None
    usage: list[dict[str, Any]]


class QuotaSet(ResponseModel):
    scope: str
    name: str


class QuotaRemoved(ResponseModel):
    scope: str
    name: str
    removed: Literal[True]


class QuotasQuery(TextModel):
    owner: Name | None = Field(None, description="admins only: whose standing (default: "
                                                 "the caller's; others ignore it)")


@bp.get("/quotas")
@require("read")
@operation("Every quota, and the caller's standing (admin: ?owner=)", query=QuotasQuery,
           replies={200: Reply(QuotaList, "{quotas, owner, usage}")})
def list_quotas(query: QuotasQuery):
    """Every quota, and the caller's standing on those it used lately (an admin may ask for
    anyone's with ?owner=)."""
    owner = query.owner if g.principal.admin else None
    with resources().client.pool.connection() as conn:
        return jsonify(quotas=quotas.listed(conn), owner=owner or g.principal.owner,
                       usage=quotas.usage(conn, owner or g.principal.owner))


@bp.put("/quotas/<scope>/<path:name>")
@require("admin")
@operation("Set a per-owner quota (admin)", path=QuotaPath, body=QuotaBody,
           replies={200: Reply(QuotaSet, "The quota")}, errors={404: "No such scope"})
def set_quota(scope: str, name: str, body: QuotaBody):
    if (bad := _scope(scope)) is not None:
        return bad
    try:
        quota = quotas.Quota(scope, name,
                             jobs=quotas.parse_rate(body.jobs) if body.jobs else None,
                             tokens=quotas.parse_rate(body.tokens) if body.tokens else None)
    except ValueError as exc:
        return BadRequest(str(exc), field=str(exc).split(":")[0]).response()
    with resources().client.pool.connection() as conn:
        quotas.store(conn, quota)
    return jsonify(quota.to_dict() | {"source": "api"})


@bp.delete("/quotas/<scope>/<path:name>")
@require("admin")
@operation("Remove a quota (admin)", path=QuotaPath,
           replies={200: Reply(QuotaRemoved, "{scope, name, removed}")},
           errors={404: "No such scope or quota"})
def remove_quota(scope: str, name: str):
    if (bad := _scope(scope)) is not None:
        return bad
    with resources().client.pool.connection() as conn:
        if not quotas.remove(conn, scope, name):
            return api_error(404, "not_found", f"quota {scope}:{name}: not found")
    return jsonify(scope=scope, name=name, removed=True)
