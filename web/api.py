"""The JSON API under /api (described at /api/openapi.json).

Bad input is always a 4xx whose JSON names the field (or FILE:LINE) at fault, never a 5xx,
and a rejected batch enqueues nothing. Owners see only their own jobs; admins see all.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context
from werkzeug.exceptions import RequestEntityTooLarge

from jobqueue.batches import export as batch_export
from jobqueue.batches import files as batchfiles
from jobqueue.batches import specs as batch_specs
from jobqueue.client import insert_specs
from jobqueue.db.queries import q
from jobqueue.jobs import InvalidJob, JobSpec
from jobqueue.llm import platforms
from web.auth import api_error, require
from web.openapi import OPENAPI
from web.resources import resources

bp = Blueprint("api", __name__)

JOB_FIELDS = {"queue", "kind", "payload", "priority", "run_at", "delay", "max_attempts",
              "timeout", "idempotency_key", "metadata"}
BATCH_FIELDS = {"platform", "platforms", "samples", "name", "items"}
DOCUMENT_TYPES = {".txt": "text/plain", ".text": "text/plain", ".md": "text/markdown",
                  ".markdown": "text/markdown", ".pdf": "application/pdf"}
MAX_WAIT_SECONDS = 60.0


class BadRequest(Exception):
    def __init__(self, message: str, field: str | None = None, status: int = 400,
                 code: str = "invalid_request"):
        super().__init__(message)
        self.message, self.field, self.status, self.code = message, field, status, code


@bp.errorhandler(BadRequest)
def _bad_request(exc: BadRequest):
    return api_error(exc.status, exc.code, exc.message, field=exc.field)


def _json_body(limit_key: str = "JSON_MAX_BYTES") -> dict:
    if request.content_length and request.content_length > current_app.config[limit_key]:
        raise BadRequest(f"body: larger than {current_app.config[limit_key]} bytes",
                         status=413, code="too_large")
    if not request.is_json:
        raise BadRequest("body: send JSON with Content-Type: application/json", status=415,
                         code="unsupported_media_type")
    raw = _read_body(current_app.config[limit_key])
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body: not valid JSON ({exc})", field="body") from None
    if not isinstance(body, dict):
        raise BadRequest("body: must be a JSON object", field="body")
    return body


def _read_body(limit: int) -> bytes:
    """The body, at most `limit` bytes, else 413. A chunked body has no Content-Length to
    check first, and werkzeug's get_data() would quietly cut it at the limit."""
    parts, size = [], 0
    try:
        while chunk := request.stream.read(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise RequestEntityTooLarge()
            parts.append(chunk)
    except RequestEntityTooLarge:
        raise BadRequest(f"body: larger than {limit} bytes", status=413,
                         code="too_large") from None
    return b"".join(parts)


def _platform(name) -> platforms.Platform:
    if not isinstance(name, str) or not name:
        raise BadRequest("platform: required, the name of a platform", field="platform")
    try:
        found = platforms.load(current_app.config.get("JOBQUEUE_CONFIG"))
    except platforms.ConfigError as exc:
        raise BadRequest(f"platform: the server has no usable platform config ({exc})",
                         field="platform", status=422) from None
    if name not in found:
        raise BadRequest(f"platform: unknown platform {name!r} (known: "
                         f"{', '.join(sorted(found))})", field="platform", status=422)
    return found[name]


def _public(job, principal) -> dict:
    data = job.to_dict()
    data.pop("lease_owner", None)
    if not principal.admin:  # tracebacks are for operators
        data["errors"] = [{k: v for k, v in e.items() if k != "traceback"}
                          for e in data["errors"]]
    return data


def _visible_job(job_id: int):
    job = resources().client.get(job_id)
    if job is None or not g.principal.can_see(job.owner):
        raise BadRequest(f"job {job_id}: not found", status=404, code="not_found")
    return job


# -- jobs -----------------------------------------------------------------------------------

@bp.post("/jobs")
@require("write")
def create_job():
    body = _json_body()
    unknown = set(body) - JOB_FIELDS
    if unknown:
        field = sorted(unknown)[0]
        raise BadRequest(f"{field}: unknown field (known: {', '.join(sorted(JOB_FIELDS))})",
                         field=field)
    for name in ("queue", "kind"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise BadRequest(f"{name}: required, a non-empty string", field=name)
    run_at = body.get("run_at")
    if run_at is not None:
        try:
            run_at = datetime.fromisoformat(run_at) if isinstance(run_at, str) else None
        except ValueError:
            run_at = None
        if run_at is None:
            raise BadRequest("run_at: must be an ISO 8601 time with a zone, e.g. "
                             "2026-11-22T10:00:00Z", field="run_at")
    for name, kinds in (("delay", (int, float)), ("timeout", (int, float)),
                        ("max_attempts", (int,))):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            raise BadRequest(f"{name}: must be a number, got {json.dumps(value)}", field=name)
    if body.get("delay") is not None and body["delay"] < 0:
        raise BadRequest("delay: must not be negative", field="delay")
    spec = JobSpec(kind=body["kind"], payload=body.get("payload", {}), queue=body["queue"],
                   priority=body.get("priority"), run_at=run_at, delay=body.get("delay"),
                   max_attempts=body.get("max_attempts"), timeout=body.get("timeout"),
                   idempotency_key=body.get("idempotency_key"), owner=g.principal.owner,
                   metadata=body.get("metadata"))
    client = resources().client
    try:
        job_id, created = client.enqueue_spec(spec)
    except InvalidJob as exc:
        message = str(exc).removeprefix("job 0: ")
        raise BadRequest(message, field=message.split(":", 1)[0]) from None
    state = "waiting" if created and spec.delay is None and run_at is None else \
        client.get(job_id).state
    response = jsonify(id=job_id, state=state, created=created)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/api/jobs/{job_id}"
    return response


@bp.get("/jobs/<int:job_id>")
@require("read")
def get_job(job_id: int):
    job = _visible_job(job_id)
    wait = request.args.get("wait")
    if wait is not None and not job.finished:
        try:
            seconds = min(MAX_WAIT_SECONDS, max(0.0, float(wait)))
        except ValueError:
            raise BadRequest("wait: must be a number of seconds", field="wait") from None
        principal = g.principal
        return resources().streams.long_poll(
            principal.token_id, job_id, seconds, lambda job: _waited(job_id, job, principal))
    return jsonify(_public(job, g.principal))


def _waited(job_id: int, job, principal):
    if job is None:  # deleted (dashboard, purge or prune) while we waited
        return api_error(404, "not_found", f"job {job_id}: deleted")
    return jsonify(_public(job, principal))


@bp.post("/jobs/<int:job_id>/cancel")
@require("write")
def cancel_job(job_id: int):
    _visible_job(job_id)
    outcome = resources().client.cancel(job_id)
    if outcome == "finished":
        raise BadRequest(f"job {job_id}: already finished", status=409, code="conflict")
    return jsonify(id=job_id, outcome=outcome)


@bp.post("/jobs/<int:job_id>/retry")
@require("write")
def retry_job(job_id: int):
    job = _visible_job(job_id)
    if not resources().client.retry(job_id):
        raise BadRequest(f"job {job_id}: is {job.state}; only dead or cancelled jobs retry",
                         status=409, code="conflict")
    return jsonify(id=job_id, state="waiting")


@bp.get("/jobs/<int:job_id>/events")
@require("read")
def job_events(job_id: int):
    """Server-Sent Events: the job's state and progress as they change, until it finishes."""
    _visible_job(job_id)
    principal = g.principal
    return resources().streams.event_stream(principal.token_id, job_id,
                                            lambda job: _public(job, principal))


# -- batches --------------------------------------------------------------------------------

@bp.post("/batches")
@require("write")
def create_batch():
    if request.mimetype == "multipart/form-data":
        return _batch_from_upload()
    body = _json_body("BATCH_MAX_BYTES")
    unknown = set(body) - BATCH_FIELDS
    if unknown:
        field = sorted(unknown)[0]
        raise BadRequest(f"{field}: unknown field (known: {', '.join(sorted(BATCH_FIELDS))})",
                         field=field)
    targets, samples = _fanout(body.get("platform"), body.get("platforms"),
                               body.get("samples", 1))
    items = body.get("items")
    if not isinstance(items, list) or not items:
        raise BadRequest("items: required, a non-empty list of {prompt | messages, ...}",
                         field="items")
    rows, problems = [], []
    for index, item in enumerate(items):
        row, errs = batchfiles.check_object(item, index)
        for field, text in errs:
            problems.append(f"items[{index}]" + (f".{field}" if field else "") + f": {text}")
        rows.append(row)
    if problems:
        return _rejected(problems, field=problems[0].split(":", 1)[0])
    return _submit(targets, samples, rows, body.get("name"), source=None)


def _batch_from_upload():
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise BadRequest("file: required, a CSV or JSONL file", field="file")
    samples = request.form.get("samples", "1")
    try:
        samples = int(samples)
    except ValueError:
        raise BadRequest(f"samples: must be an integer, got {samples[:40]!r}",
                         field="samples") from None
    targets, samples = _fanout(request.form.get("platform"), request.form.get("platforms"),
                               samples)
    template = request.form.get("template") or None
    fmt = request.form.get("format") or None
    name = upload.filename
    suffix = os.path.splitext(name)[1].lower()
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        upload.save(tmp)
        tmp.flush()
        size = os.path.getsize(tmp.name)
        if size > current_app.config["BATCH_MAX_BYTES"]:
            raise BadRequest(f"file: larger than {current_app.config['BATCH_MAX_BYTES']} bytes",
                             field="file", status=413, code="too_large")
        report = batchfiles.validate(tmp.name, template=template, fmt=fmt)
        if not report.ok:
            return _rejected([line.replace(tmp.name, name) for line in report.lines()],
                             field="file")
        rows = batchfiles.iter_rows(tmp.name, template=template, fmt=fmt)
        return _submit(targets, samples, rows, request.form.get("name") or name, source=name)


def _rejected(problems: list[str], field: str):
    response = api_error(422, "invalid_batch",
                         f"{len(problems)} problem(s); nothing was enqueued: {problems[0]}",
                         field=field)
    body = response.get_json()
    body["error"]["problems"] = problems[:100]
    response.set_data(json.dumps(body))
    return response


def _fanout(platform, names, samples) -> tuple[list[batch_specs.Target], int]:
    """The platforms and samples of a batch request: `platform` (one name) or `platforms` (a
    list, or a,b,c in a form), each a platform of the config; 400/422 naming the field."""
    if platform is not None and names is not None:
        raise BadRequest("platforms: give platform or platforms, not both", field="platforms")
    if names is None:
        return [_target(_platform(platform))], _samples(samples)
    if not isinstance(names, str | list):
        raise BadRequest("platforms: must be a list of platform names", field="platforms")
    try:
        parsed = batch_specs.parse_platforms(names)
    except ValueError as exc:
        raise BadRequest(f"platforms: {exc}", field="platforms") from None
    targets = []
    for name in parsed:
        try:
            targets.append(_target(_platform(name)))
        except BadRequest as exc:
            raise BadRequest(str(exc).replace("platform:", "platforms:", 1), field="platforms",
                             status=exc.status, code=exc.code) from None
    return targets, _samples(samples)


def _target(platform) -> batch_specs.Target:
    return batch_specs.Target(platform.name, platform.max_attempts)


def _samples(value) -> int:
    top = batch_specs.MAX_SAMPLES
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise BadRequest(f"samples: must be an integer from 1 to {top}, got {value!r:.40}",
                         field="samples")
    return value


def _submit(targets, samples, rows, name, source):
    queue = ",".join(t.platform for t in targets)
    fanout = len(targets) > 1 or samples > 1
    batch_id, total = resources().client.submit_batch(
        batch_specs.fanout_specs(rows, targets, samples),
        queue=queue, name=name, owner=g.principal.owner, source=source,
        metadata={"platforms": [t.platform for t in targets], "samples": samples}
        if fanout else None)
    response = jsonify(id=batch_id, total=total, queue=queue)
    response.status_code = 201
    response.headers["Location"] = f"/api/batches/{batch_id}"
    return response


def _visible_batch(batch_id: int) -> dict:
    found = resources().client.batch(batch_id)
    if found is None or not g.principal.can_see(found["owner"]):
        raise BadRequest(f"batch {batch_id}: not found", status=404, code="not_found")
    return found


@bp.get("/batches/<int:batch_id>")
@require("read")
def get_batch(batch_id: int):
    found = _visible_batch(batch_id)
    found["created_at"] = found["created_at"].isoformat()
    found["finished"] = found["succeeded"] + found["dead"] + found["cancelled"]
    return jsonify(found)


@bp.get("/batches/<int:batch_id>/results")
@require("read")
def batch_results(batch_id: int):
    """A page of results as JSON (?after=ID&limit=N), or the whole batch as a JSONL or CSV
    download (?format=jsonl|csv), streamed a page at a time."""
    _visible_batch(batch_id)
    client = resources().client
    fmt = request.args.get("format")
    if fmt in ("jsonl", "csv"):
        return _download(client, batch_id, fmt)
    if fmt is not None:
        raise BadRequest("format: jsonl or csv", field="format")
    try:
        after = int(request.args.get("after", 0))
        limit = min(1000, max(1, int(request.args.get("limit", 100))))
    except ValueError:
        raise BadRequest("after and limit: must be integers", field="after") from None
    jobs = client.batch_jobs(batch_id, after=after, limit=limit)
    items = [batch_export.export_record(j) for j in jobs]
    next_after = jobs[-1]["id"] if len(jobs) == limit else None
    return jsonify(items=json.loads(json.dumps(items, default=str)), next_after=next_after)


def _download(client, batch_id: int, fmt: str):
    mimetype = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
    return Response(stream_with_context(batch_export.export_lines(client, batch_id, fmt)),
                    mimetype=mimetype, headers={
                        "Content-Disposition": f'attachment; filename="batch-{batch_id}.{fmt}"'})


# -- documents ------------------------------------------------------------------------------

@bp.post("/documents")
@require("write")
def upload_document():
    """Store a text, Markdown or PDF file and queue its analysis (extract, chunk, analyze)."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise BadRequest("file: required (multipart/form-data, field 'file')", field="file")
    platform = _platform(request.form.get("platform"))
    suffix = os.path.splitext(upload.filename)[1].lower()
    content_type = DOCUMENT_TYPES.get(suffix)
    if content_type is None:
        raise BadRequest(f"file: {upload.filename}: only {', '.join(sorted(DOCUMENT_TYPES))} "
                         "files", field="file", status=415, code="unsupported_media_type")
    limit = current_app.config["DOCUMENT_MAX_BYTES"]
    data = upload.stream.read(limit + 1)
    if len(data) > limit:
        raise BadRequest(f"file: larger than the {limit} byte limit", field="file",
                         status=413, code="too_large")
    if not data:
        raise BadRequest("file: is empty", field="file")
    if content_type == "application/pdf" and not data.startswith(b"%PDF-"):
        raise BadRequest(f"file: {upload.filename} is not a PDF", field="file")
    if content_type != "application/pdf":
        try:
            chars = len(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise BadRequest(f"file: {upload.filename} is not UTF-8 text (byte {exc.start})",
                             field="file") from None
        max_chars = current_app.config["DOCUMENT_MAX_CHARS"]
        if chars > max_chars:  # a PDF's text is known only once its job extracts it
            raise BadRequest(f"file: {upload.filename} has {chars} characters, over the limit "
                             f"of {max_chars} (JOBQUEUE_DOCUMENT_MAX_CHARS)", field="file",
                             status=422)
    client = resources().client
    with client.pool.connection() as conn, conn.transaction():
        doc_id = conn.execute(q("document_insert"), {
            "owner": g.principal.owner, "filename": upload.filename,
            "content_type": content_type, "size": len(data), "data": data}).fetchone()["id"]
        spec = JobSpec("document", {"document_id": doc_id}, queue=platform.name,
                       max_attempts=platform.max_attempts, owner=g.principal.owner,
                       metadata={"filename": upload.filename})
        ((job_id, _),) = insert_specs(conn, [spec])
        conn.execute(q("document_set_job"), {"id": doc_id, "job_id": job_id})
    response = jsonify(id=doc_id, job_id=job_id, state="waiting")
    response.status_code = 201
    response.headers["Location"] = f"/api/documents/{doc_id}"
    return response


@bp.get("/documents/<int:doc_id>")
@require("read")
def get_document(doc_id: int):
    client = resources().client
    with client.pool.connection() as conn:
        doc = conn.execute(q("document_get"), {"id": doc_id}).fetchone()
    if doc is None or not g.principal.can_see(doc["owner"]):
        raise BadRequest(f"document {doc_id}: not found", status=404, code="not_found")
    job = client.get(doc["job_id"]) if doc["job_id"] else None
    doc["created_at"] = doc["created_at"].isoformat()
    doc["job"] = _public(job, g.principal) if job else None
    return jsonify(doc)


@bp.delete("/documents/<int:doc_id>")
@require("write")
def delete_document(doc_id: int):
    """Delete a document, its bytes and its text (its owner's or, for an admin, anyone's).
    Its analysis job stays, as jobs do, until pruned with the finished ones."""
    with resources().client.pool.connection() as conn:
        row = conn.execute(q("document_delete"), {
            "id": doc_id, "owner": g.principal.owner_filter()}).fetchone()
    if row is None:
        raise BadRequest(f"document {doc_id}: not found", status=404, code="not_found")
    return jsonify(id=doc_id, deleted=True)


# -- queues ---------------------------------------------------------------------------------

@bp.get("/queues")
@require("read")
def list_queues():
    return jsonify(queues=resources().client.status())


@bp.post("/queues/<name>/<any(pause, resume):action>")
@require("admin")
def pause_queue(name: str, action: str):
    client = resources().client
    with client.pool.connection() as conn:
        conn.execute(q("queue_pause"), {"name": name, "paused": action == "pause"})
    return jsonify(queue=name, paused=action == "pause")


# -- dashboard sessions ---------------------------------------------------------------------

@bp.get("/sessions")
@require("read")
def list_sessions():
    """The caller's owner's dashboard sessions (an admin's: everyone's), newest first."""
    with resources().client.pool.connection() as conn:
        rows = conn.execute(q("session_list"), {"owner": g.principal.owner_filter()}).fetchall()
    return jsonify(sessions=json.loads(json.dumps(rows, default=_iso)))


@bp.delete("/sessions/<int:session_id>")
@require("write")
def revoke_session(session_id: int):
    """End a dashboard session at once (its owner's or, for an admin, anyone's)."""
    with resources().client.pool.connection() as conn:
        row = conn.execute(q("session_revoke"), {
            "id": session_id, "owner": g.principal.owner_filter()}).fetchone()
    if row is None:
        raise BadRequest(f"session {session_id}: not found", status=404, code="not_found")
    return jsonify(id=session_id, revoked=row["revoked"])


def _iso(value):
    return value.isoformat() if isinstance(value, datetime) else str(value)


@bp.get("/openapi.json")
@require("read")
def openapi():
    return jsonify(OPENAPI)
