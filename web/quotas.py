"""Per-owner quotas over HTTP: the 429 a refused enqueue answers, the X-Quota-* headers of an
accepted one, and /api/quotas to read them (everyone: the quotas and their own standing) and
to set or remove them (admin). The quotas themselves are jobqueue/quotas.py's.

A refusal is 429 with Retry-After and the X-RateLimit-Limit/-Remaining/-Reset (and -Policy,
e.g. `10;w=60`) of the quota that refused, in place of the token's request-rate headers: the
client needs to know which limit to wait for.
"""

from __future__ import annotations

import math

from flask import Blueprint, g, jsonify, request
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from jobqueue import quotas
from jobqueue.errors import QuotaExceeded
from web.auth import api_error, require
from web.resources import resources

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


class QuotaBody(BaseModel):
    """PUT /api/quotas/<scope>/<name>: "N/period" budgets, at least one."""

    model_config = ConfigDict(extra="forbid")

    jobs: str | None = None
    tokens: str | None = None

    @field_validator("jobs", "tokens")
    @classmethod
    def _rate(cls, value: str | None, info) -> str | None:
        if value is not None:
            quotas.parse_rate(value, info.field_name)
        return value


_PATH = [{"name": "scope", "in": "path", "required": True,
          "schema": {"type": "string", "enum": list(quotas.SCOPES)}},
         {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
_ANSWER = {"description": "The quota", "content": {"application/json": {
    "schema": {"type": "object"}}}}
# This module's routes in OpenAPI form; web/openapi.py adds them to the document.
OPENAPI_PATHS = {
    "/quotas": {"get": {
        "summary": "Every quota, and the caller's standing (admin: ?owner=)",
        "operationId": "listQuotas", "responses": {"200": _ANSWER}}},
    "/quotas/{scope}/{name}": {
        "put": {"summary": "Set a per-owner quota (admin)", "operationId": "setQuota",
                "parameters": _PATH,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": QuotaBody.model_json_schema()}}},
                "responses": {"200": _ANSWER}},
        "delete": {"summary": "Remove a quota (admin)", "operationId": "removeQuota",
                   "parameters": _PATH, "responses": {"200": _ANSWER}}},
}


def _scope(scope: str):
    if scope not in quotas.SCOPES:
        return api_error(404, "not_found", f"scope: queue or kind, got {scope!r}",
                         field="scope")
    return None


@bp.get("/quotas")
@require("read")
def list_quotas():
    """Every quota, and the caller's standing on those it used lately (an admin may ask for
    anyone's with ?owner=)."""
    owner = request.args.get("owner") if g.principal.admin else None
    with resources().client.pool.connection() as conn:
        return jsonify(quotas=quotas.listed(conn), owner=owner or g.principal.owner,
                       usage=quotas.usage(conn, owner or g.principal.owner))


@bp.put("/quotas/<scope>/<path:name>")
@require("admin")
def set_quota(scope: str, name: str):
    if (bad := _scope(scope)) is not None:
        return bad
    try:
        body = QuotaBody.model_validate(request.get_json(silent=True, force=True))
        quota = quotas.Quota(scope, name,
                             jobs=quotas.parse_rate(body.jobs) if body.jobs else None,
                             tokens=quotas.parse_rate(body.tokens) if body.tokens else None)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        message = first["msg"].removeprefix("Value error, ")
        if field == "body" or first["type"] == "model_type":
            field, message = "body", "must be a JSON object like {\"jobs\": \"10/min\"}"
        if not message.startswith(f"{field}:"):
            message = f"{field}: {message}"
        return api_error(400, "invalid_request", message, field=field)
    except ValueError as exc:
        return api_error(400, "invalid_request", str(exc), field=str(exc).split(":")[0])
    with resources().client.pool.connection() as conn:
        quotas.store(conn, quota)
    return jsonify(quota.to_dict() | {"source": "api"})


@bp.delete("/quotas/<scope>/<path:name>")
@require("admin")
def remove_quota(scope: str, name: str):
    if (bad := _scope(scope)) is not None:
        return bad
    with resources().client.pool.connection() as conn:
        if not quotas.remove(conn, scope, name):
            return api_error(404, "not_found", f"quota {scope}:{name}: not found")
    return jsonify(scope=scope, name=name, removed=True)
