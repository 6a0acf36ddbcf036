"""Reading what LLM work cost, and managing budgets: for the CLI (`batch show`, `budgets`),
the API, the dashboard and /metrics. (The runtime writes the figures: jobqueue/llm/spend.py.)

Sums come from the `llm_spend` rollup, per batch, owner, platform, model, day or campaign.
Budgets are USD per UTC day, calendar month or in total for an owner, a batch or a campaign;
setting (raising) or removing one makes its scope's paused jobs due at once.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

import psycopg
from psycopg.rows import dict_row

from jobqueue.db import store
from jobqueue.db.queries import q
from jobqueue.errors import InvalidJob
from jobqueue.jobs import MAX_ID, id_from_text

SCOPES = ("owner", "batch", "campaign")
PERIODS = ("day", "month", "total")
GROUPS = ("batch", "owner", "platform", "model", "day", "campaign")
MAX_BUDGET_USD = 1e9
_FIGURES = ("calls", "fallback_calls", "prompt_tokens", "cached_tokens", "completion_tokens",
            "cost_usd", "unpriced_calls", "cache_hits", "saved_tokens", "saved_usd")


def _shaped(row: dict) -> dict:
    """Figures as JSON numbers (numeric arrives as Decimal), with the fallback share and a
    word when some cost is unknown."""
    out = {k: (float(row[k]) if k.endswith("_usd") else int(row[k] or 0)) for k in _FIGURES}
    out["cost_usd"] = round(out["cost_usd"], 6)
    out["saved_usd"] = round(out["saved_usd"], 6)
    out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    out["fallback_share"] = round(out["fallback_calls"] / out["calls"], 4) if out["calls"] \
        else 0.0
    if out["unpriced_calls"]:
        out["cost_note"] = (f"{out['unpriced_calls']} call(s) of models with no price are not "
                            "in cost_usd (add [prices.\"MODEL\"] to jobqueue.toml)")
    return out


def batch_costs(conn: psycopg.Connection, batch_id: int) -> dict:
    """A batch's tokens and cost, its fallback share and its jobs paused over budget."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("spend_batch"), {"batch_id": batch_id}).fetchone()
    return _shaped(row) | {"over_budget": store.batch_over_budget(conn, batch_id)}


def summary(conn: psycopg.Connection, by: str, days: int = 30, owner: str | None = None,
            limit: int = 100) -> list[dict]:
    """Sums grouped `by` one of GROUPS over the last `days` UTC days (today included)."""
    if by not in GROUPS:
        raise InvalidJob(f"by: must be one of {', '.join(GROUPS)}, got {by!r}")
    since = date.today() - timedelta(days=max(0, days - 1))
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(q("spend_by"), {"by": by, "since": since, "owner": owner,
                                           "limit": limit}).fetchall()
    return [{by: r["key"]} | _shaped(r) for r in rows]


def batches_costs(conn: psycopg.Connection, batch_ids: list[int]) -> dict[int, dict]:
    """{batch id: calls, fallback_calls, total_tokens, cost_usd, unpriced_calls, cache_hits}
    of the batches that spent anything."""
    rows = _dicts(conn).execute(q("spend_batches"), {"ids": list(batch_ids)}).fetchall()
    return {r["batch_id"]: r for r in rows}


def check_budget(scope: str, scope_id: str, period: str, limit_usd) -> float:
    """The budget's limit as a float; InvalidJob naming the field if anything is wrong."""
    if scope not in SCOPES:
        raise InvalidJob(f"scope: must be one of {', '.join(SCOPES)}, got {scope!r}")
    if not isinstance(scope_id, str) or not scope_id.strip() or len(scope_id) > 200:
        raise InvalidJob("id: must be a non-empty string of at most 200 characters")
    if scope == "batch" and id_from_text(scope_id) is None:
        raise InvalidJob(f"id: a batch budget needs a batch id (a number from 1 to {MAX_ID}), "
                         f"got {scope_id!r}")
    if period not in PERIODS:
        raise InvalidJob(f"period: must be one of {', '.join(PERIODS)}, got {period!r}")
    if isinstance(limit_usd, bool) or not isinstance(limit_usd, int | float) or \
            not math.isfinite(limit_usd) or not 0 <= limit_usd <= MAX_BUDGET_USD:
        raise InvalidJob(f"usd: must be a number from 0 to {MAX_BUDGET_USD:g}, "
                         f"got {limit_usd!r}")
    return float(limit_usd)


def set_budget(conn: psycopg.Connection, scope: str, scope_id: str, period: str,
               limit_usd: float) -> dict:
    """Create or change a budget and resume its scope's paused jobs (those still over some
    budget pause again on their next call). Returns the budget as listed, plus `resumed`."""
    limit_usd = check_budget(scope, scope_id, period, limit_usd)
    with conn.transaction():
        conn.execute(q("budget_set"), {"scope": scope, "scope_id": scope_id,
                                       "period": period, "limit_usd": limit_usd})
        resumed = store.resume_over_budget(conn, scope, scope_id)
    (budget,) = [b for b in list_budgets(conn, scope, scope_id) if b["period"] == period]
    return budget | {"resumed": resumed}


def remove_budget(conn: psycopg.Connection, scope: str, scope_id: str,
                  period: str | None = None) -> dict:
    """Remove a scope's budget (one period, or all); resume its paused jobs."""
    if scope not in SCOPES:
        raise InvalidJob(f"scope: must be one of {', '.join(SCOPES)}, got {scope!r}")
    if period is not None and period not in PERIODS:
        raise InvalidJob(f"period: must be one of {', '.join(PERIODS)}, got {period!r}")
    with conn.transaction():
        removed = [r["period"] for r in _dicts(conn).execute(q("budget_remove"), {
            "scope": scope, "scope_id": scope_id, "period": period}).fetchall()]
        resumed = store.resume_over_budget(conn, scope, scope_id) if removed else 0
    return {"removed": sorted(removed), "resumed": resumed}


def list_budgets(conn: psycopg.Connection, scope: str | None = None,
                 scope_id: str | None = None) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(q("budget_list"), {"scope": scope, "scope_id": scope_id}).fetchall()
    return [{"scope": r["scope"], "id": r["scope_id"], "period": r["period"],
             "limit_usd": float(r["limit_usd"]), "spent_usd": round(float(r["spent_usd"]), 6),
             "remaining_usd": round(max(0.0, float(r["limit_usd"] - r["spent_usd"])), 6),
             "updated_at": r["updated_at"].isoformat()} for r in rows]


def metrics(conn: psycopg.Connection) -> list[dict]:
    """Totals per platform and model since the rollup began (for /metrics)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q("spend_metrics")).fetchall()


def _dicts(conn: psycopg.Connection) -> psycopg.Cursor:
    return conn.cursor(row_factory=dict_row)
