"""The API's costs and budgets: `GET /api/costs` (LLM tokens and USD summed per batch, owner,
platform, model, day or campaign) and `GET|PUT|DELETE /api/budgets...`.

Owners see their own spend; an admin sees everyone's. Owner and campaign budgets are an
admin's to set (a cap the capped cannot lift); a batch's owner may set its batch's budget.
"""

from __future__ import annotations

from typing import Literal

from flask import Blueprint, g, jsonify
from pydantic import BaseModel, ConfigDict, Field

from jobqueue.db import store
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
    p = g.principal
    with resources().client.pool.connection() as conn:
        rows = costs.list_budgets(conn)
        if not p.admin:  # an owner sees its own budget and its batches' (owners read at once)
            owners = _owners(conn, [b["id"] for b in rows if b["scope"] == "batch"])
            rows = [b for b in rows if (b["scope"] == "owner" and b["id"] == p.owner) or (
                b["scope"] == "batch" and owners.get(id_from_text(b["id"])) == p.owner)]
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


def _owners(conn, scope_ids: list[str]) -> dict[int, str | None]:
    """{batch id: owner} of the batches these budget ids name (an id no batch can have is
    left out: '²', past bigint)."""
    ids = [i for i in map(id_from_text, scope_ids) if i is not None]
    return store.batch_owners(conn, ids) if ids else {}


def _batch_owner(scope_id: str) -> str | None:
    with resources().client.pool.connection() as conn:
        owners = _owners(conn, [scope_id])
    if not owners:
        raise BadRequest(f"batch {scope_id}: not found", status=404, code="not_found")
    return next(iter(owners.values()))


def _check_may_set(scope: str, scope_id: str) -> None:
    if g.principal.admin:
        return
    if scope == "batch" and _batch_owner(scope_id) == g.principal.owner:
        return
    if scope == "batch":  # someone else's batch: as if it did not exist
        raise BadRequest(f"batch {scope_id}: not found", status=404, code="not_found")
    raise BadRequest(f"{scope} budgets are set by an admin", status=403, code="forbidden")
