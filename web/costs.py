"""The API's costs and budgets: `GET /api/costs` (LLM tokens and USD summed per batch, owner,
platform, model, day or campaign) and `GET|PUT|DELETE /api/budgets...`.

Owners see their own spend; an admin sees everyone's. Owner and campaign budgets are an
admin's to set (a cap the capped cannot lift); a batch's owner may set its batch's budget.
"""

from __future__ import annotations

from typing import Literal

from flask import Blueprint, g, jsonify
from pydantic import BaseModel, ConfigDict, Field

from jobqueue.errors import InvalidJob
from jobqueue.jobs import id_from_text
from jobqueue.llm import costs
from web.auth import api_error, require
from web.contract import BadRequest, Reply, operation
from web.resources import resources

bp = Blueprint("costs", __name__)
MAX_DAYS = 366
NOT_FOUND = {404: "No such budget or batch (or not yours)"}


class CostsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: Literal[costs.GROUPS] = "day"  # type: ignore[valid-type]
    days: int = Field(30, ge=1, le=MAX_DAYS, description="UTC days back, today included")


class BudgetBody(BaseModel):
    """PUT /api/budgets/SCOPE/ID/PERIOD: at most `usd` per period."""

    model_config = ConfigDict(extra="forbid", strict=True)
    usd: float = Field(ge=0, le=costs.MAX_BUDGET_USD)


@bp.errorhandler(InvalidJob)
def _invalid(exc: InvalidJob):
    field, _, _ = str(exc).partition(":")
    return api_error(400, "invalid_request", str(exc), field=field)


@bp.get("/costs")
@require("read")
@operation("LLM tokens and USD summed per day, owner, batch, platform, model or campaign "
           "(owners: their own)", query=CostsQuery,
           replies={200: Reply(None, "{by, days, owner, rows}")})
def get_costs(query: CostsQuery):
    owner = g.principal.owner_filter()
    with resources().client.pool.connection() as conn:
        rows = costs.summary(conn, query.by, query.days, owner=owner)
    return jsonify(by=query.by, days=query.days, owner=owner, rows=rows)


@bp.get("/budgets")
@require("read")
@operation("Budgets you may see, with their period's spend",
           replies={200: Reply(None, "{budgets}")})
def list_budgets():
    with resources().client.pool.connection() as conn:
        rows = [b for b in costs.list_budgets(conn) if _may_see(b["scope"], b["id"])]
    return jsonify(budgets=rows)


@bp.put("/budgets/<scope>/<scope_id>/<period>")
@require("write")
@operation("Set a budget (USD per day, month or total); the scope's paused jobs resume",
           body=BudgetBody, replies={200: Reply(None, "The budget, with resumed")},
           errors=NOT_FOUND)
def set_budget(scope: str, scope_id: str, period: str, body: BudgetBody):
    costs.check_budget(scope, scope_id, period, body.usd)
    _check_may_set(scope, scope_id)
    with resources().client.pool.connection() as conn:
        budget = costs.set_budget(conn, scope, scope_id, period, body.usd)
    return jsonify(budget)


@bp.delete("/budgets/<scope>/<scope_id>")
@bp.delete("/budgets/<scope>/<scope_id>/<period>")
@require("write")
@operation("Remove a budget; the scope's paused jobs resume",
           replies={200: Reply(None, "{removed, resumed}")},
           errors={**NOT_FOUND, 400: "An unknown scope or period; error.field names it"})
def remove_budget(scope: str, scope_id: str, period: str | None = None):
    _check_may_set(scope, scope_id)
    with resources().client.pool.connection() as conn:
        result = costs.remove_budget(conn, scope, scope_id, period)
    if not result["removed"]:
        raise BadRequest(f"{scope} {scope_id}: no budget", status=404, code="not_found")
    return jsonify(result)


def _batch_owner(scope_id: str) -> str | None:
    batch_id = id_from_text(scope_id)
    found = resources().client.batch(batch_id) if batch_id is not None else None
    if found is None:
        raise BadRequest(f"batch {scope_id}: not found", status=404, code="not_found")
    return found["owner"]


def _may_see(scope: str, scope_id: str) -> bool:
    p = g.principal
    if p.admin:
        return True
    if scope == "owner":
        return scope_id == p.owner
    if scope == "batch":
        batch_id = id_from_text(scope_id)
        found = resources().client.batch(batch_id) if batch_id is not None else None
        return found is not None and found["owner"] == p.owner
    return False


def _check_may_set(scope: str, scope_id: str) -> None:
    if g.principal.admin:
        return
    if scope == "batch" and _batch_owner(scope_id) == g.principal.owner:
        return
    if scope == "batch":  # someone else's batch: as if it did not exist
        raise BadRequest(f"batch {scope_id}: not found", status=404, code="not_found")
    raise BadRequest(f"{scope} budgets are set by an admin", status=403, code="forbidden")
