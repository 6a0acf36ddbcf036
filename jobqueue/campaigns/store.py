"""Campaigns in Postgres: save (with the campaign's schedule, `campaign:NAME`), read, list,
remove, and a campaign's runs, over the named queries of sql/queries/campaigns.sql. Functions
run on a connection the caller holds; rows come back as dicts."""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from jobqueue.campaigns.model import CampaignSpec, InvalidCampaign
from jobqueue.db.queries import q
from jobqueue.schedules.spec import CAMPAIGN_PREFIX


def schedule_name(campaign: str) -> str:
    """A campaign's own schedule (sql/queries/campaigns.sql writes the same prefix)."""
    return CAMPAIGN_PREFIX + campaign


def _execute(conn: psycopg.Connection, name: str, params: dict) -> psycopg.Cursor:
    return conn.cursor(row_factory=dict_row).execute(q(name), params)


def save(conn: psycopg.Connection, spec: CampaignSpec, now: datetime, *,
         replace: bool = False, only_owner: str | None = None) -> str | None:
    """Store a campaign and its schedule (made, replaced or removed to match) in one
    transaction: 'created', 'updated', or None (it exists and `replace` is false, or it is
    not `only_owner`'s when one is given)."""
    from jobqueue.schedules import store as schedules
    from jobqueue.schedules.spec import ScheduleSpec

    with conn.transaction():
        row = _execute(conn, "campaign_upsert", {
            "name": spec.name, "owner": spec.owner, "prompts": Jsonb(spec.prompts),
            "prompt_source": spec.prompt_source, "platforms": spec.platforms,
            "samples": spec.samples, "brands": Jsonb(spec.brands),
            "extract": Jsonb(spec.extract), "replace": replace,
            "only_owner": only_owner}).fetchone()
        if row is None:
            return None
        if spec.schedule is not None:
            schedules.save(conn, ScheduleSpec(
                name=schedule_name(spec.name), cron=spec.schedule["cron"],
                timezone=spec.schedule["timezone"], misfire=spec.schedule["misfire"],
                target={"type": "campaign", "campaign": spec.name}, owner=spec.owner),
                now, replace=True, only_if_changed=True)
        else:
            schedules.remove(conn, schedule_name(spec.name))
    return "created" if row["created"] else "updated"


def get(conn: psycopg.Connection, name: str | None = None,
        campaign_id: int | None = None) -> dict | None:
    """One campaign with its prompts and schedule (cron, timezone, paused, next_fire_at)."""
    return _execute(conn, "campaign_get", {"name": name, "id": campaign_id}).fetchone()


def require(conn: psycopg.Connection, name: str) -> dict:
    """The campaign `name` (as get gives it); InvalidCampaign naming `campaign` if none."""
    found = get(conn, name)
    if found is None:
        raise InvalidCampaign(f"campaign: no campaign {name!r}")
    return found


def listing(conn: psycopg.Connection, owner: str | None = None,
            limit: int = 1000) -> list[dict]:
    return _execute(conn, "campaigns_list", {"owner": owner, "limit": limit}).fetchall()


def remove(conn: psycopg.Connection, name: str, owner: str | None = None) -> bool:
    """Delete a campaign (`owner`'s, when given), its schedule and its analysed answers (its
    jobs and batches stay); False if there is no such campaign. The campaign's row is locked
    first, as save() locks it, so a save and a removal of the same campaign never deadlock."""
    from jobqueue.schedules import store as schedules

    with conn.transaction():
        if _execute(conn, "campaign_remove", {"name": name, "owner": owner}).fetchone() is None:
            return False
        schedules.remove(conn, schedule_name(name))
        return True


def runs(conn: psycopg.Connection, name: str, limit: int = 20) -> list[dict]:
    """The batches of the campaign's runs, newest first."""
    return _execute(conn, "campaign_runs", {"name": name, "limit": limit}).fetchall()


def spend(conn: psycopg.Connection, name: str) -> list[dict]:
    """The campaign's LLM spend per platform (calls, tokens, cost_usd)."""
    return _execute(conn, "campaign_spend", {"name": name}).fetchall()
