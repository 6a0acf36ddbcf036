"""The JSON API under /api (described at /api/openapi.json).

Each route declares its input and answers with @operation (web/contract.py), using the
models of web/schemas.py: the same declaration checks the request and documents it. Bad
input is always a 4xx whose JSON names the field (or FILE:LINE) at fault, never a 5xx, and a
rejected batch enqueues nothing. Owners see only their own jobs; admins see all.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context
from pydantic import ValidationError

from jobqueue import queues as queue_settings
from jobqueue.batches import export as batch_export
from jobqueue.batches import files as batchfiles
from jobqueue.batches import specs as batch_specs
from jobqueue.client import insert_specs
from jobqueue.db.queries import q
from jobqueue.errors import InvalidQueueSettings, QueueBusy
from jobqueue.jobs import MAX_NAME_LENGTH, InvalidJob, JobSpec
from jobqueue.llm import payloads, platforms
from jobqueue.tasks import Permanent
from web import quotas as quota_web
from web import schemas as s
from web.auth import acting, api_error, require
from web.contract import BadRequest, Rejected, Reply, operation
from web.llm_platforms import configured_platforms
from web.openapi import document
from web.resources import resources
from web.schemas import MAX_WAIT_SECONDS as MAX_WAIT_SECONDS

bp = Blueprint("api", __name__)
QUOTA_429 = ("Over the token's rate limit, or over the owner's quota (error.code "
             "quota_exceeded, with that quota's X-RateLimit-* headers); see Retry-After")

DOCUMENT_TYPES = {".txt": "text/plain", ".text": "text/plain", ".md": "text/markdown",
                  ".markdown": "text/markdown", ".pdf": "application/pdf"}
NOT_FOUND = {404: "Not found (or not yours)"}


def _platform(name: str) -> platforms.Platform:
    found = configured_platforms()
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


def _visible_job(job_id: int, fresh: bool = False):
    """The job if the caller may see it, else 404. Read from the replica (the primary when
    the replica has not got it yet); `fresh`: from the primary, before a change."""
    if fresh:
        job = resources().client.get(job_id)
    else:
        job = resources().read(lambda reader: reader.get(job_id))
    if job is None or not g.principal.can_see(job.owner):
        raise BadRequest(f"job {job_id}: not found", status=404, code="not_found")
    return job


# -- jobs -----------------------------------------------------------------------------------

@bp.post("/jobs")
@require("write")
@operation("Enqueue a job", body=s.NewJob, replies={
    201: Reply(s.JobCreated, "Created"),
    200: Reply(s.JobCreated, "The job an idempotency key already names")},
    errors={429: QUOTA_429})
def create_job(body: s.NewJob):
    _check_llm_payload(body.kind, body.queue, body.payload)
    spec = JobSpec(kind=body.kind, payload=body.payload, queue=body.queue,
                   priority=body.priority, run_at=body.run_at, delay=body.delay,
                   max_attempts=body.max_attempts, timeout=body.timeout,
                   idempotency_key=body.idempotency_key, owner=g.principal.owner,
                   metadata=body.metadata, depends_on=body.depends_on,
                   on_parent_failure=body.on_parent_failure)
    client = resources().client
    try:
        job_id, created, standing = client.create(spec)
    except InvalidJob as exc:
        message = str(exc).removeprefix("job 0: ")
        raise BadRequest(message, field=message.split(":", 1)[0]) from None
    state = "waiting" if (created and spec.delay is None and spec.run_at is None
                          and not spec.depends_on) else client.get(job_id).state
    response = jsonify(id=job_id, state=state, created=created)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/api/jobs/{job_id}"
    response.headers.update(quota_web.standing_headers(standing))
    return response


@bp.get("/jobs/<int:job_id>")
@require("read")
@operation("A job with state, attempts, errors, result and progress", query=s.JobWait,
           replies={200: Reply(s.Job, "The job")},
           errors={404: "Not found (or not yours, or deleted while waited for)"})
def get_job(job_id: int, query: s.JobWait):
    wait = query.wait  # checked: 0 to MAX_WAIT_SECONDS
    # A waiter wants the state as it is (a replica may still show a retried job dead): with
    # ?wait= every read is the primary's.
    job = _visible_job(job_id, fresh=wait is not None)
    if wait is not None and not job.finished:
        seconds = wait
        # The streams re-read the primary (`client.get`): a notification can arrive before
        # a replica has replayed the change it announces.
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
@operation("Cancel (waiting: now; running: its worker stops it)",
           replies={200: Reply(s.CancelOutcome, "{id, outcome}")},
           errors=NOT_FOUND | {409: "The job has already finished"})
def cancel_job(job_id: int):
    _visible_job(job_id, fresh=True)
    outcome = resources().client.cancel(job_id, acting())
    if outcome == "finished":
        raise BadRequest(f"job {job_id}: already finished", status=409, code="conflict")
    return jsonify(id=job_id, outcome=outcome)


@bp.post("/jobs/<int:job_id>/retry")
@require("write")
@operation("Run a dead or cancelled job again", replies={200: Reply(s.RetryOutcome, "{id, state}")},
           errors=NOT_FOUND | {409: "The job is not dead or cancelled"})
def retry_job(job_id: int):
    job = _visible_job(job_id, fresh=True)
    if not resources().client.retry(job_id, acting()):
        raise BadRequest(f"job {job_id}: is {job.state}; only dead or cancelled jobs retry",
                         status=409, code="conflict")
    return jsonify(id=job_id, state="waiting")


@bp.get("/jobs/<int:job_id>/events")
@require("read")
@operation("Server-Sent Events of state and progress until the job finishes", replies={
    200: Reply(None, "Events 'state' and 'done' carry the job as JSON; 'gone' if deleted",
               ("text/event-stream",))}, errors=NOT_FOUND)
def job_events(job_id: int):
    """Server-Sent Events: the job's state and progress as they change, until it finishes."""
    _visible_job(job_id)
    # The stream reads the primary: it follows notifications, which can overtake a replica.
    principal = g.principal
    return resources().streams.event_stream(principal.token_id, job_id,
                                            lambda job: _public(job, principal))


# -- batches --------------------------------------------------------------------------------

@bp.post("/batches")
@require("write")
@operation("Create a batch of LLM jobs from JSON items or an uploaded CSV/JSONL",
           body=s.NewBatch, form=s.BatchUpload, query=s.BatchQuery, limit="BATCH_MAX_BYTES",
           problems=(("items",), 422),
           replies={201: Reply(s.BatchCreated, "{id, total, queue, duplicates, "
                                               "on_complete_job}")},
           errors={429: QUOTA_429,
                   422: "Rejected whole (nothing enqueued): an unknown platform, or items "
                        "or lines at fault, listed in error.problems as items[i].field or "
                        "FILE:LINE"})
def create_batch(body: s.NewBatch | s.BatchUpload, query: s.BatchQuery):
    if isinstance(body, s.BatchUpload):
        return _batch_from_upload(body)
    targets = _fanout(body.platform, body.platforms, body.samples)
    on_complete = _on_complete(body.on_complete)
    rows, problems = [], []
    refs = batchfiles.RefCheck()
    for index, item in enumerate(body.items):
        # The model checked the item; check_object is the CLI's JSONL check (the two are held
        # together by tests/integration/test_api_contract.py) and makes the row.
        row, errs = batchfiles.check_object(item.model_dump(exclude_none=True), index)
        if row is not None:
            errs = refs.problems(row)
        for field, text in errs:
            problems.append(f"items[{index}]" + (f".{field}" if field else "") + f": {text}")
        rows.append(row)
    if problems:
        return Rejected(problems).response()
    return _submit(targets, body.samples, rows, body.name, source=None,
                   on_complete=on_complete, fallback=body.fallback)


def _check_llm_payload(kind: str, queue: str, payload) -> None:
    """A built-in LLM kind sent to a platform's queue: its payload is checked now (a chat
    without prompt or messages is a 400 naming the payload), not left to die on the worker."""
    if kind not in payloads.CHECKED_KINDS:
        return
    try:
        found = configured_platforms()
    except BadRequest:
        return  # no platforms here: the job is for a queue of the user's own
    if queue in found:
        try:
            payloads.check(kind, payload, found[queue])
        except Permanent as exc:
            raise BadRequest(str(exc), field="payload") from None


def _on_complete(value: s.OnComplete | None) -> JobSpec | None:
    """A batch's completion callback as a job spec; the model checked its fields, the job's
    own check the rest (a 400 naming the field; nothing is enqueued)."""
    if value is None:
        return None
    spec = JobSpec(kind=value.kind, payload=value.payload, queue=value.queue,
                   priority=value.priority, max_attempts=value.max_attempts,
                   metadata=value.metadata)
    try:
        spec.validated_row("default", 1, datetime.now().astimezone())
    except InvalidJob as exc:
        raise BadRequest(f"on_complete.{exc}", field="on_complete") from None
    return spec


def _batch_from_upload(form: s.BatchUpload):
    upload, template, fmt = form.file, form.template, form.format
    targets = _fanout(form.platform, form.platforms, form.samples)
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
            return Rejected([line.replace(tmp.name, name) for line in report.lines()],
                            field="file").response()
        rows = batchfiles.iter_rows(tmp.name, template=template, fmt=fmt)
        on_complete = None
        if form.on_complete:
            try:
                on_complete = s.OnComplete.model_validate_json(form.on_complete)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise BadRequest(f"on_complete{'.' + where if where else ''}: {first['msg']}",
                                 field="on_complete") from None
        return _submit(targets, form.samples, rows, form.name or name[:MAX_NAME_LENGTH],
                       source=name, on_complete=_on_complete(on_complete))


def _fanout(platform: str | None, names, samples: int) -> list[batch_specs.Target]:
    """The platforms of a batch request: `platform` (one name) or `platforms` (a list, or
    a,b,c in a form), each a platform of the config; 400/422 naming the field. (The models
    checked the types and the samples' range.)"""
    if (platform is None) == (names is None):
        raise BadRequest("platforms: give platform (one) or platforms (a list), not both"
                         if platform is not None else "platform: required (or platforms)",
                         field="platforms" if platform is not None else "platform")
    if names is None:
        return [_target(_platform(platform))]
    try:
        parsed = batch_specs.parse_platforms(names)
    except ValueError as exc:
        raise BadRequest(f"platforms: {exc}", field="platforms") from None
    targets = []
    for name in parsed:
        try:
            targets.append(_target(_platform(name)))
        except BadRequest as exc:
            exc.message = exc.message.replace("platform:", "platforms:", 1)
            exc.field = "platforms"
            raise
    return targets


def _target(platform) -> batch_specs.Target:
    return batch_specs.Target(platform.name, platform.max_attempts)


def _submit(targets: list[batch_specs.Target], samples: int, rows, name, source,
            on_complete: JobSpec | None = None, fallback: bool = True):
    """One batch of a job per (row, platform, sample): a fan-out when there are several.
    Over the owner's quota the batch is refused whole (429, see web/quotas.py), unless
    ?partial=true: then the first items that fit are enqueued and `refused` counts the rest."""
    partial = s.BatchQuery.model_validate(request.args.to_dict()).partial  # checked already
    client = resources().client
    queue = ",".join(t.platform for t in targets)
    fanout = len(targets) > 1 or samples > 1
    try:
        submitted = client.submit_batch(
            batch_specs.fanout_specs(rows, targets, samples) if fallback else
            batch_specs.without_fallback(batch_specs.fanout_specs(rows, targets, samples)),
            queue=queue, name=name, owner=g.principal.owner, source=source,
            metadata={"platforms": [t.platform for t in targets], "samples": samples}
            if fanout else None, on_complete=on_complete, partial=partial)
    except ValueError as exc:  # a limit only the job's own check knows ("job 3: payload..."),
        # a depends_on naming a job id that is not the caller's, or a fanned-out ref
        message = re.sub(r"^job (\d+): ", r"items[\1].", str(exc))
        return Rejected([message]).response()
    found = client.batch(submitted.batch_id)
    body = {"id": submitted.batch_id, "total": submitted.total, "queue": queue,
            "duplicates": found["duplicates"], "on_complete_job": found["on_complete_job"]}
    if submitted.refused:
        body |= {"refused": submitted.refused,
                 "retry_after": submitted.exceeded.retry_after if submitted.exceeded else None}
    response = jsonify(body)
    response.status_code = 201
    response.headers["Location"] = f"/api/batches/{submitted.batch_id}"
    response.headers.update(quota_web.standing_headers(submitted.quota))
    return response


def _visible_batch(batch_id: int) -> dict:
    return _batch_source(batch_id)[1]


def _batch_source(batch_id: int):
    """(the pool that has the batch: the replica's, or the primary's while the replica has
    not got it yet; the batch), or 404."""
    client, found = resources().source(lambda reader: reader.batch(batch_id))
    if found is None or not g.principal.can_see(found["owner"]):
        raise BadRequest(f"batch {batch_id}: not found", status=404, code="not_found")
    return client, found


@bp.get("/batches/<int:batch_id>")
@require("read")
@operation("A batch with counts by state", replies={200: Reply(s.Batch, "The batch")},
           errors=NOT_FOUND)
def get_batch(batch_id: int):
    found = _visible_batch(batch_id)
    found["created_at"] = found["created_at"].isoformat()
    found["completed_at"] = found["completed_at"] and found["completed_at"].isoformat()
    # Rows that were duplicates of existing jobs count as done (they point at those jobs).
    found["finished"] = (found["succeeded"] + found["dead"] + found["cancelled"]
                         + found["duplicates"])
    return jsonify(found)


@bp.get("/batches/<int:batch_id>/results")
@require("read")
@operation("Results: a JSON page (?after, ?limit) or a download (?format)",
           query=s.ResultsQuery, replies={200: Reply(
               s.ResultsPage, "{items, next_after}; with ?format, a JSONL or CSV download",
               ("application/json", "application/x-ndjson", "text/csv"))}, errors=NOT_FOUND)
def batch_results(batch_id: int, query: s.ResultsQuery):
    """A page of results as JSON (?after=ID&limit=N), or the whole batch as a JSONL or CSV
    download (?format=jsonl|csv), streamed a page at a time."""
    client, _ = _batch_source(batch_id)
    if query.format is not None:
        return _download(client, batch_id, query.format)
    after, limit = query.after, query.limit
    jobs = client.batch_jobs(batch_id, after=after, limit=limit)
    items = [batch_export.export_record(j) for j in jobs]
    next_after = jobs[-1]["place"] if len(jobs) == limit else None
    return jsonify(items=json.loads(json.dumps(items, default=str)), next_after=next_after)


def _download(client, batch_id: int, fmt: str):
    mimetype = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
    return Response(stream_with_context(batch_export.export_lines(client, batch_id, fmt)),
                    mimetype=mimetype, headers={
                        "Content-Disposition": f'attachment; filename="batch-{batch_id}.{fmt}"'})


# -- documents ------------------------------------------------------------------------------

@bp.post("/documents")
@require("write")
@operation("Upload a text, Markdown or PDF document to analyze", form=s.DocumentUpload,
           limit="DOCUMENT_MAX_BYTES", replies={201: Reply(s.DocumentCreated, "Queued")},
           errors={429: QUOTA_429, 413: "Over JOBQUEUE_DOCUMENT_MAX_BYTES",
                   415: "Not multipart/form-data, or not a .txt, .md or .pdf file",
                   422: "An unknown platform, or a text over JOBQUEUE_DOCUMENT_MAX_CHARS"})
def upload_document(body: s.DocumentUpload):
    """Store a text, Markdown or PDF file and queue its analysis (extract, chunk, analyze)."""
    upload = body.file
    platform = _platform(body.platform)
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
@operation("A document and its analysis job", replies={200: Reply(s.Document, "The document")},
           errors=NOT_FOUND)
def get_document(doc_id: int):
    doc = resources().read(lambda reader: _document(reader, doc_id))
    if doc is None or not g.principal.can_see(doc["owner"]):
        raise BadRequest(f"document {doc_id}: not found", status=404, code="not_found")
    job = resources().read(lambda reader: reader.get(doc["job_id"])) if doc["job_id"] else None
    doc["created_at"] = doc["created_at"].isoformat()
    doc["job"] = _public(job, g.principal) if job else None
    return jsonify(doc)


def _document(client, doc_id: int) -> dict | None:
    with client.pool.connection() as conn:
        return conn.execute(q("document_get"), {"id": doc_id}).fetchone()


@bp.delete("/documents/<int:doc_id>")
@require("write")
@operation("Delete a document, its bytes and text (its owner or an admin)",
           replies={200: Reply(s.DocumentDeleted, "{id, deleted}")}, errors=NOT_FOUND)
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
@operation("Queues with counts by state", replies={200: Reply(s.QueueList, "{queues}")})
def list_queues():
    return jsonify(queues=resources().reader.status())


@bp.post("/queues/<name>/<any(pause, resume):action>")
@require("admin")
@operation("Pause or resume a queue (admin)", path=s.QueueName,
           replies={200: Reply(s.QueuePaused, "{queue, paused}")})
def queue(name: str, action: str):
    try:
        with resources().client.pool.connection() as conn:
            queue_settings.pause(conn, name, action == "pause")
    except InvalidQueueSettings as exc:  # a blank name
        raise BadRequest(str(exc), field="queue") from None
    return jsonify(queue=name, paused=action == "pause")


@bp.get("/queues/<name>/settings")
@require("read")
@operation("A queue's caps and fairness, and its running jobs", path=s.QueueName,
           replies={200: Reply(s.QueueSettings, "The settings (defaults if never set)")})
def get_queue_settings(name: str):
    """A queue's caps and fairness (defaults for a queue never set), and its running jobs."""
    with resources().client.pool.connection() as conn:
        row = queue_settings.list_settings(conn, name)[0]
    return jsonify(_settings_json(row))


@bp.patch("/queues/<name>/settings")
@require("admin")
@operation("Change a queue's caps and fairness (admin); null removes a cap",
           path=s.QueueName, body=s.QueueSettingsChange,
           replies={200: Reply(s.QueueSettings, "The settings now")},
           errors={409: "Enqueues held a change of fairness back; try again"})
def set_queue_settings(name: str, body: s.QueueSettingsChange):
    """Change a queue's caps and fairness: `{"max_running": 30, "max_running_per_owner": 3,
    "fair": true}`; fields left out keep their value, null removes a cap."""
    try:
        with resources().client.pool.connection() as conn:
            row = queue_settings.change(conn, name, **body.model_dump(exclude_unset=True))
    except InvalidQueueSettings as exc:
        field = str(exc).split(":", 1)[0]
        raise BadRequest(str(exc), field=field) from None
    except QueueBusy as exc:
        raise BadRequest(str(exc), status=409, code="busy") from None
    return jsonify(_settings_json(row))


def _settings_json(row: dict) -> dict:
    return {**row, "updated_at": row["updated_at"].isoformat() if row["updated_at"] else None}


# -- dashboard sessions ---------------------------------------------------------------------

@bp.get("/sessions")
@require("read")
@operation("Dashboard sessions of the caller's owner (admin: all)",
           replies={200: Reply(s.SessionList, "{sessions}")})
def list_sessions():
    """The caller's owner's dashboard sessions (an admin's: everyone's), newest first."""
    with resources().client.pool.connection() as conn:
        rows = conn.execute(q("session_list"), {"owner": g.principal.owner_filter()}).fetchall()
    return jsonify(sessions=json.loads(json.dumps(rows, default=_iso)))


@bp.delete("/sessions/<int:session_id>")
@require("write")
@operation("Revoke a dashboard session", replies={200: Reply(s.SessionRevoked, "{id, revoked}")},
           errors=NOT_FOUND)
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
@operation("This document", replies={200: Reply(s.OpenApiDocument, "OpenAPI 3.1")})
def openapi():
    return jsonify(document(current_app))
