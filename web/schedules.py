"""The schedules API under /api/schedules: save, list, read with runs, pause, resume, run
now, remove. Request bodies are pydantic models (ScheduleBody), from which the OpenAPI
document can describe them; the checks beyond types are jobqueue/schedules/spec.py's, so the
CLI, jobqueue.toml and this API refuse the same things with the same words.

Owners see and change only their own schedules, and a schedule a non-admin saves is theirs
(its jobs carry that owner); admins see all and may name an owner. Reads need the read
scope, changes the write scope.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from flask import Blueprint, g, jsonify
from pydantic import BaseModel, ConfigDict, Field

from jobqueue.errors import InvalidSchedule
from jobqueue.schedules import spec, store, tick
from web.auth import require
from web.contract import BadRequest, Reply, operation
from web.llm_platforms import configured_platforms, fire_platforms
from web.owned import Removed, as_json, refused, with_owner
from web.resources import resources
from web.schemas import ResponseModel, TextModel

bp = Blueprint("schedules", __name__)

MAX_RUNS_PAGE = 200


class ScheduleBody(BaseModel):
    """A schedule: when (cron in a time zone), what (a job, or a batch file's text for a
    platform) and what to do about fires missed while no worker ran."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(description="5 fields (minute hour day month weekday) or @hourly, "
                                  "@daily, @weekly, @monthly, @yearly", max_length=200)
    timezone: str = Field("UTC", description="IANA zone the cron is read in", max_length=64)
    misfire: Literal["skip", "once", "all"] = Field(
        "once", description="missed fires: skip them, one catch-up, or each")
    max_lateness: float | None = Field(None, gt=0,
                                       description="seconds: a missed fire later is skipped")
    paused: bool = False
    owner: str | None = Field(None, description="admins only: whose schedule it is")
    kind: str | None = Field(None, description="the task a fire enqueues")
    queue: str | None = None
    platform: str | None = Field(None, description="an LLM platform: chat jobs, or a batch")
    payload: Any = None
    priority: int | Literal["high", "normal", "low"] | None = None
    max_attempts: int | None = Field(None, ge=1)
    timeout: float | None = Field(None, gt=0)
    metadata: dict[str, Any] | None = None
    batch: str | None = Field(None, description="a batch file's text (JSONL or CSV), "
                                                "stored with the schedule")
    format: Literal["jsonl", "csv"] | None = None
    template: str | None = Field(None, description="CSV: a prompt with {column} placeholders")
    on_complete: dict[str, Any] | None = Field(
        None, description="batch schedules: a job {kind, queue?, payload?, priority?, "
                          "max_attempts?} enqueued when every job of a fire's batch has ended")


class NewScheduleBody(ScheduleBody):
    """POST /api/schedules: a schedule and its name."""

    name: str = Field(max_length=100)


class Schedule(ResponseModel):
    name: str
    cron: str
    timezone: str
    paused: bool


class ScheduleList(ResponseModel):
    schedules: list[dict[str, Any]]


class RunList(ResponseModel):
    runs: list[dict[str, Any]]


class Run(ResponseModel):
    decision: str


class RunsQuery(TextModel):
    before: int | None = Field(None, ge=0, le=2**63 - 1, description="The last run id seen")
    limit: int = Field(50, ge=1, le=MAX_RUNS_PAGE)


NOT_FOUND = {404: "No such schedule (or not yours)"}
SAVE_ERRORS = {403: "Only an admin token may name another owner",
               409: "A schedule of that name exists (POST), or is another owner's",
               422: "The schedule cannot be run as given (cron, zone, target, batch file)"}


def _save(name: str, body: ScheduleBody, replace: bool):
    fields = with_owner(body.model_dump(exclude={"name"}, exclude_none=True))
    try:
        definition = spec.build(name, fields,
                                platforms=configured_platforms() if "platform" in fields else None)
    except InvalidSchedule as exc:
        field = str(exc).partition(":")[0]
        raise BadRequest(str(exc), field=field, status=422, code="invalid_schedule") from None
    with resources().client.pool.connection() as conn, conn.transaction():
        outcome = store.save(conn, definition, datetime.now(UTC), replace=replace,
                             only_owner=g.principal.owner_filter())
        if outcome == "kept":  # taken (POST), or another owner's
            raise refused("schedule", name, store.get(conn, name))
        (row,) = store.listing(conn, name=name)  # our row lock keeps it until the commit
    return jsonify(_public(row)), 201 if outcome == "created" else 200


def _public(row: dict) -> dict:
    return as_json(row) | {"next_fires": [t.isoformat() for t in row.get("next_fires", [])]}


def _not_found(name: str) -> BadRequest:
    return BadRequest(f"schedule {name}: not found", status=404, code="not_found")


def _visible(conn, name: str) -> dict:
    rows = store.listing(conn, owner=g.principal.owner_filter(), name=name)
    if not rows:
        raise _not_found(name)
    return rows[0]


@bp.get("")
@require("read")
@operation("Schedules you may see, with their next fires",
           replies={200: Reply(ScheduleList, "{schedules}")})
def list_schedules():
    with resources().client.pool.connection() as conn:
        rows = store.listing(conn, owner=g.principal.owner_filter())
    return jsonify(schedules=[_public(r) for r in rows])


@bp.post("")
@require("write")
@operation("Save a new schedule", body=NewScheduleBody, limit="BATCH_MAX_BYTES",
           replies={201: Reply(Schedule, "Created")}, errors=SAVE_ERRORS)
def create_schedule(body: NewScheduleBody):
    try:
        spec.check_name(body.name)
    except InvalidSchedule as exc:
        raise BadRequest(str(exc), field="name") from None
    return _save(body.name, body, replace=False)


@bp.put("/<name>")
@require("write")
@operation("Save a schedule under this name (replacing it)", body=ScheduleBody,
           limit="BATCH_MAX_BYTES", replies={201: Reply(Schedule, "Created"),
                                             200: Reply(Schedule, "Replaced")},
           errors=SAVE_ERRORS)
def put_schedule(name: str, body: ScheduleBody):
    return _save(name, body, replace=True)


@bp.get("/<name>")
@require("read")
@operation("A schedule with its latest runs", replies={200: Reply(Schedule, "The schedule")},
           errors=NOT_FOUND)
def get_schedule(name: str):
    with resources().client.pool.connection() as conn:
        row = _visible(conn, name)
        runs = store.runs(conn, name, limit=20)
    return jsonify(_public(row) | {"runs": [_public(r) for r in runs]})


@bp.get("/<name>/runs")
@require("read")
@operation("A schedule's runs, newest first: each fire's decision and its job or batch",
           query=RunsQuery, replies={200: Reply(RunList, "{runs}")}, errors=NOT_FOUND)
def schedule_runs(name: str, query: RunsQuery):
    before, limit = query.before, query.limit
    with resources().client.pool.connection() as conn:
        _visible(conn, name)
        runs = store.runs(conn, name, before, limit)
    return jsonify(runs=[_public(r) for r in runs])


@bp.post("/<name>/<any(pause, resume):action>")
@require("write")
@operation("Pause or resume a schedule", replies={200: Reply(Schedule, "The schedule")},
           errors=NOT_FOUND)
def pause_schedule(name: str, action: str):
    with resources().client.pool.connection() as conn:
        if store.set_paused(conn, name, action == "pause", datetime.now(UTC),
                            owner=g.principal.owner_filter()) is None:
            raise _not_found(name)
        row = _visible(conn, name)
    return jsonify(_public(row))


@bp.post("/<name>/run")
@require("write")
@operation("Run now: one manual fire, outside the cron times",
           replies={201: Reply(Run, "The run: its decision and its job or batch")},
           errors={**NOT_FOUND, 422: "The fire failed (the run records why)"})
def run_schedule(name: str):
    """Run now: one manual fire, outside the cron times."""
    with resources().client.pool.connection() as conn:
        found = _visible(conn, name)
        run = tick.run_now(conn, name, datetime.now(UTC), fire_platforms(found))
    status = 422 if run["decision"] == "failed" else 201
    return jsonify(_public(run)), status


@bp.delete("/<name>")
@require("write")
@operation("Remove a schedule (its runs' jobs stay)",
           replies={200: Reply(Removed, "{name, removed}")}, errors=NOT_FOUND)
def delete_schedule(name: str):
    with resources().client.pool.connection() as conn:
        if not store.remove(conn, name, owner=g.principal.owner_filter()):  # none of yours
            raise _not_found(name)
    return jsonify(name=name, removed=True)
