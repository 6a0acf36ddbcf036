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

from flask import Blueprint, current_app, g, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobqueue.errors import InvalidSchedule
from jobqueue.schedules import spec, store, tick
from web.auth import api_error, require
from web.contract import BadRequest, _read_body
from web.resources import resources

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


class NewScheduleBody(ScheduleBody):
    """POST /api/schedules: a schedule and its name."""

    name: str = Field(max_length=100)


@bp.errorhandler(BadRequest)
def _bad_request(exc: BadRequest):
    return api_error(exc.status, exc.code, exc.message, field=exc.field)


def _parsed(model: type[BaseModel]) -> BaseModel:
    limit = current_app.config["BATCH_MAX_BYTES"]
    if request.content_length and request.content_length > limit:
        raise BadRequest(f"body: larger than {limit} bytes", status=413, code="too_large")
    if not request.is_json:
        raise BadRequest("body: send Content-Type: application/json", status=415,
                         code="unsupported_media_type")
    try:
        return model.model_validate_json(_read_body(limit))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadRequest(f"{field}: {first['msg']}", field=field.split(".")[0]) from None


def _save(name: str, body: ScheduleBody, replace: bool):
    fields = body.model_dump(exclude={"name"}, exclude_none=True)
    if not g.principal.admin:
        if "owner" in fields and fields["owner"] != g.principal.owner:
            raise BadRequest("owner: only an admin token may name another owner", "owner", 403,
                             "forbidden")
        fields["owner"] = g.principal.owner
    try:
        definition = spec.build(name, fields,
                                platforms=configured_platforms() if "platform" in fields else None)
    except InvalidSchedule as exc:
        field = str(exc).partition(":")[0]
        raise BadRequest(str(exc), field=field, status=422, code="invalid_schedule") from None
    with resources().client.pool.connection() as conn:
        existing = store.get(conn, name)
        if existing is not None and not g.principal.can_see(existing["owner"]):
            raise BadRequest(f"schedule {name}: exists", field="name", status=409,
                             code="conflict")
        outcome = store.save(conn, definition, datetime.now(UTC), replace=replace)
        if outcome == "kept":
            raise BadRequest(f"schedule {name}: exists (PUT /api/schedules/{name} replaces "
                             "it)", field="name", status=409, code="conflict")
        (row,) = store.listing(conn, name=name)
    return jsonify(_public(row)), 201 if outcome == "created" else 200


def configured_platforms():
    from jobqueue.llm import platforms

    try:
        return platforms.load(current_app.config.get("JOBQUEUE_CONFIG"))
    except platforms.ConfigError as exc:
        raise BadRequest(f"platform: the server has no usable platform config ({exc})",
                         field="platform", status=422) from None


def _public(row: dict) -> dict:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()} | {
        "next_fires": [t.isoformat() for t in row.get("next_fires", [])]}


def _visible(conn, name: str) -> dict:
    rows = store.listing(conn, owner=g.principal.owner_filter(), name=name)
    if not rows:
        raise BadRequest(f"schedule {name}: not found", status=404, code="not_found")
    return rows[0]


@bp.get("")
@require("read")
def list_schedules():
    with resources().client.pool.connection() as conn:
        rows = store.listing(conn, owner=g.principal.owner_filter())
    return jsonify(schedules=[_public(r) for r in rows])


@bp.post("")
@require("write")
def create_schedule():
    body = _parsed(NewScheduleBody)
    try:
        spec.check_name(body.name)
    except InvalidSchedule as exc:
        raise BadRequest(str(exc), field="name") from None
    return _save(body.name, body, replace=False)


@bp.put("/<name>")
@require("write")
def put_schedule(name: str):
    return _save(name, _parsed(ScheduleBody), replace=True)


@bp.get("/<name>")
@require("read")
def get_schedule(name: str):
    with resources().client.pool.connection() as conn:
        row = _visible(conn, name)
        runs = store.runs(conn, name, limit=20)
    return jsonify(_public(row) | {"runs": [_public(r) for r in runs]})


@bp.get("/<name>/runs")
@require("read")
def schedule_runs(name: str):
    before = request.args.get("before", type=int)
    limit = min(max(request.args.get("limit", 50, type=int), 1), MAX_RUNS_PAGE)
    with resources().client.pool.connection() as conn:
        _visible(conn, name)
        runs = store.runs(conn, name, before, limit)
    return jsonify(runs=[_public(r) for r in runs])


@bp.post("/<name>/<any(pause, resume):action>")
@require("write")
def pause_schedule(name: str, action: str):
    with resources().client.pool.connection() as conn:
        _visible(conn, name)
        store.set_paused(conn, name, action == "pause", datetime.now(UTC))
        row = _visible(conn, name)
    return jsonify(_public(row))


@bp.post("/<name>/run")
@require("write")
def run_schedule(name: str):
    """Run now: one manual fire, outside the cron times."""
    with resources().client.pool.connection() as conn:
        found = _visible(conn, name)
        platforms = configured_platforms() if found["target"]["type"] == "batch" else None
        run = tick.run_now(conn, name, datetime.now(UTC), platforms)
    status = 422 if run["decision"] == "failed" else 201
    return jsonify(_public(run)), status


@bp.delete("/<name>")
@require("write")
def delete_schedule(name: str):
    with resources().client.pool.connection() as conn:
        _visible(conn, name)
        store.remove(conn, name)
    return "", 204
