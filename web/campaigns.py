"""The campaigns API under /api/campaigns: save, list, read, run, report, remove. Bodies are
pydantic models (CampaignBody); the checks beyond types are jobqueue/campaigns/model.py's,
so the CLI, campaign files and this API refuse the same things with the same words.

Owners see and change only their own campaigns, and a campaign a non-admin saves is theirs;
admins see all and may name an owner. Reads need the read scope, changes the write scope.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Literal

from flask import Blueprint, Response, g, jsonify
from pydantic import BaseModel, ConfigDict, Field

from jobqueue.campaigns import model, report, runs, store
from web.auth import require
from web.contract import BadRequest, Reply, operation
from web.llm_platforms import configured_platforms
from web.owned import Removed, as_json, refused, with_owner
from web.resources import resources
from web.schemas import ResponseModel, TextModel

bp = Blueprint("campaigns", __name__)


class CampaignBody(BaseModel):
    """A campaign: prompts x platforms x samples, on demand or on a schedule, and the
    brands (with aliases) and competitors looked for in the answers."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[str | dict[str, Any]] = Field(
        description="prompts: text, or {prompt, metadata}", max_length=model.MAX_PROMPTS)
    platforms: list[str] | str = Field(description="platforms to ask: a list or 'a,b'")
    samples: int = Field(1, ge=1, le=model.MAX_SAMPLES,
                         description="answers per prompt and platform")
    brands: list[str | dict[str, Any]] = Field(
        description="brands to track: a name or {name, aliases}", max_length=model.MAX_BRANDS)
    competitors: list[str | dict[str, Any]] = Field(default_factory=list,
                                                    max_length=model.MAX_BRANDS)
    schedule: str | dict[str, Any] | None = Field(
        None, description="a cron expression or {cron, timezone, misfire}")
    extract: dict[str, Any] | None = Field(
        None, description="{platform}: analyse answers with an LLM (string matching is the "
                          "fallback)")
    owner: str | None = Field(None, description="admins only: whose campaign it is")


class NewCampaignBody(CampaignBody):
    """POST /api/campaigns: a campaign and its name."""

    name: str = Field(max_length=90)


class Campaign(ResponseModel):
    name: str
    platforms: list[str]
    samples: int


class CampaignList(ResponseModel):
    campaigns: list[dict[str, Any]]


class RunReply(ResponseModel):
    batch_id: int


class Report(ResponseModel):
    campaign: str
    totals: list[dict[str, Any]]


class ReportQuery(TextModel):
    from_: date | None = Field(None, alias="from", description="first day, YYYY-MM-DD (UTC)")
    to: date | None = Field(None, description="last day (default: the last with answers)")
    format: Literal["json", "csv"] = "json"


NOT_FOUND = {404: "No such campaign (or not yours)"}
SAVE_ERRORS = {403: "Only an admin token may name another owner",
               409: "A campaign of that name exists (POST), or is another owner's",
               422: "The campaign cannot be run as given (platforms, brands, schedule...)"}


def _visible(conn, name: str) -> dict:
    """The campaign named `name` (or, failing a name, whose id it is), if the caller may
    see it; 404 otherwise."""
    found = None
    if model.NAME.match(name):  # ASCII only: '²' (isdigit, but not an int) never reaches int()
        found = store.get(conn, name)
        if found is None and name.isdigit() and len(name) < 19:
            found = store.get(conn, campaign_id=int(name))
    if found is None or not g.principal.can_see(found["owner"]):
        raise BadRequest(f"campaign {name}: not found", status=404, code="not_found")
    return found


def _save(name: str, body: CampaignBody, replace: bool):
    try:
        model.check_name(name)
    except model.InvalidCampaign as exc:
        raise BadRequest(str(exc), field="name") from None
    fields = with_owner(body.model_dump(exclude={"name"}, exclude_none=True) | {"name": name})
    try:
        spec = model.build(fields, platforms=configured_platforms())
    except model.InvalidCampaign as exc:
        raise BadRequest(str(exc), field=exc.field, status=422,
                         code="invalid_campaign") from None
    with resources().client.pool.connection() as conn, conn.transaction():
        outcome = store.save(conn, spec, datetime.now(UTC), replace=replace,
                             only_owner=g.principal.owner_filter())
        if outcome is None:  # taken (POST), or another owner's
            raise refused("campaign", name, store.get(conn, name))
        row = store.get(conn, name)  # our row lock keeps it until the commit
    return jsonify(as_json(row)), 201 if outcome == "created" else 200


@bp.get("")
@require("read")
@operation("Campaigns you may see (without their prompts)",
           replies={200: Reply(CampaignList, "{campaigns}")})
def list_campaigns():
    with resources().client.pool.connection() as conn:
        rows = store.listing(conn, owner=g.principal.owner_filter())
    return jsonify(campaigns=[as_json(r) for r in rows])


@bp.post("")
@require("write")
@operation("Save a new campaign", body=NewCampaignBody, limit="BATCH_MAX_BYTES",
           replies={201: Reply(Campaign, "Created")}, errors=SAVE_ERRORS)
def create_campaign(body: NewCampaignBody):
    return _save(body.name, body, replace=False)


@bp.put("/<name>")
@require("write")
@operation("Save a campaign under this name (replacing it)", body=CampaignBody,
           limit="BATCH_MAX_BYTES", replies={201: Reply(Campaign, "Created"),
                                             200: Reply(Campaign, "Replaced")},
           errors=SAVE_ERRORS)
def put_campaign(name: str, body: CampaignBody):
    return _save(name, body, replace=True)


@bp.get("/<name>")
@require("read")
@operation("A campaign with its prompts, latest runs and spend",
           replies={200: Reply(Campaign, "The campaign")}, errors=NOT_FOUND)
def get_campaign(name: str):
    with resources().client.pool.connection() as conn:
        row = _visible(conn, name)
        extra = {"runs": [as_json(r) for r in store.runs(conn, row["name"])],
                 "spend": [as_json(r) for r in store.spend(conn, row["name"])]}
    return jsonify(as_json(row) | extra)


@bp.post("/<name>/run")
@require("write")
@operation("Run now: one fan-out batch and an extract job per answer",
           replies={201: Reply(RunReply, "{batch_id, ...}")},
           errors={**NOT_FOUND, 422: "The run failed (a platform is gone, say)"})
def run_campaign(name: str):
    with resources().client.pool.connection() as conn:
        found = _visible(conn, name)
        try:
            run = runs.run_now(conn, found, datetime.now(UTC), configured_platforms())
        except model.InvalidCampaign as exc:
            raise BadRequest(str(exc), field=exc.field, status=422,
                             code="invalid_campaign") from None
    return jsonify(run), 201


@bp.get("/<name>/report")
@require("read")
@operation("Visibility, share of voice, position, sentiment and cited domains per brand x "
           "platform (x day) over [from, to], with the change against the previous period; "
           "format=csv for CSV",
           query=ReportQuery, replies={200: Reply(Report, "The report (JSON, or CSV)",
                                                  ("application/json", "text/csv"))},
           errors={**NOT_FOUND})
def campaign_report(name: str, query: ReportQuery):
    with resources().client.pool.connection() as conn:
        campaign = _visible(conn, name)
        try:
            data = report.build(conn, campaign, query.from_, query.to)
        except ValueError as exc:
            raise BadRequest(str(exc), field=str(exc).partition(":")[0]) from None
    if query.format == "csv":
        return Response(iter([report.to_csv(data)]), mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="campaign-{campaign["name"]}.csv"'})
    return jsonify(data)


@bp.delete("/<name>")
@require("write")
@operation("Remove a campaign, its schedule and analysed answers (its jobs stay)",
           replies={200: Reply(Removed, "{name, removed}")}, errors=NOT_FOUND)
def delete_campaign(name: str):
    with resources().client.pool.connection() as conn:
        found = _visible(conn, name)
        if not store.remove(conn, found["name"], owner=g.principal.owner_filter()):
            raise BadRequest(f"campaign {name}: not found", status=404, code="not_found")
    return jsonify(name=found["name"], removed=True)
