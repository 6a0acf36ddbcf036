"""The API's costs and budgets: `GET /api/costs` (LLM tokens and USD summed per batch, owner,
platform, model, day or campaign) and `GET|PUT|DELETE /api/budgets...`.

Owners see their own spend; an admin sees everyone's. Owner and campaign budgets are an
admin's to set (a cap the capped cannot lift); a batch's owner may set its batch's budget.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from jobqueue.errors import InvalidJob
from jobqueue.llm import costs
from web.api import BadRequest, _json_body
from web.auth import api_error, require
from web.resources import resources

bp = Blueprint("costs", __name__)
MAX_DAYS = 366


@bp.errorhandler(BadRequest)
def _bad_request(exc: BadRequest):
    return api_error(exc.status, exc.code, exc.message, field=exc.field)


@bp.errorhandler(InvalidJob)
def _invalid(exc: InvalidJob):
    field, _, _ = str(exc).partition(":")
    return api_error(400, "invalid_request", str(exc), field=field)


@bp.get("/costs")
@require("read")
def get_costs():
    """?by=batch|owner|platform|model|day|campaign (default day) &days=N (default 30)."""
    by = request.args.get("by", "day")
    raw_days = request.args.get("days", "30")
    if not raw_days.isdigit() or not 1 <= int(raw_days) <= MAX_DAYS:
        raise BadRequest(f"days: a whole number from 1 to {MAX_DAYS}", field="days")
    owner = g.principal.owner_filter()
    with resources().client.pool.connection() as conn:
        rows = costs.summary(conn, by, int(raw_days), owner=owner)
    return jsonify(by=by, days=int(raw_days), owner=owner, rows=rows)


@bp.get("/budgets")
@require("read")
def list_budgets():
    with resources().client.pool.connection() as conn:
        rows = [b for b in costs.list_budgets(conn) if _may_see(b["scope"], b["id"])]
    return jsonify(budgets=rows)


@bp.put("/budgets/<scope>/<scope_id>/<period>")
@require("write")
def set_budget(scope: str, scope_id: str, period: str):
    """Body {"usd": N}: at most N USD per period; paused jobs of the scope resume."""
    body = _json_body()
    unknown = set(body) - {"usd"}
    if unknown:
        raise BadRequest(f"{sorted(unknown)[0]}: unknown field (known: usd)",
                         field=sorted(unknown)[0])
    if "usd" not in body:
        raise BadRequest("usd: required, a number of USD", field="usd")
    costs.check_budget(scope, scope_id, period, body["usd"])
    _check_may_set(scope, scope_id)
    with resources().client.pool.connection() as conn:
        budget = costs.set_budget(conn, scope, scope_id, period, body["usd"])
    return jsonify(budget)


@bp.delete("/budgets/<scope>/<scope_id>")
@bp.delete("/budgets/<scope>/<scope_id>/<period>")
@require("write")
def remove_budget(scope: str, scope_id: str, period: str | None = None):
    _check_may_set(scope, scope_id)
    with resources().client.pool.connection() as conn:
        result = costs.remove_budget(conn, scope, scope_id, period)
    if not result["removed"]:
        raise BadRequest(f"{scope} {scope_id}: no budget", status=404, code="not_found")
    return jsonify(result)


def _batch_owner(scope_id: str) -> str | None:
    found = resources().client.batch(int(scope_id)) if scope_id.isdigit() else None
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
        found = resources().client.batch(int(scope_id)) if scope_id.isdigit() else None
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
