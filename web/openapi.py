"""The OpenAPI 3.1 description of /api, served at /api/openapi.json."""

from __future__ import annotations

from jobqueue import settings
from jobqueue.jobs import STATES


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": _json(_ref("Error"), "Bad input; error.field names the field"),
    "401": _json(_ref("Error"), "Missing, unknown or revoked token"),
    "403": _json(_ref("Error"), "The token lacks the scope"),
    "404": _json(_ref("Error"), "Not found (or not yours)"),
    "429": _json(_ref("Error"), "Over the token's rate limit; see Retry-After"),
}

JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer"}}
BATCH_ID = {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "integer"}}

# A fan-out batch (issue 14): one job per (item or row, platform, sample); give `platform`
# or `platforms`, not both.
FANOUT_PLATFORMS = {"type": "array", "items": {"type": "string"}, "minItems": 1,
                    "description": "Fan out over these platforms (instead of platform)"}
FANOUT_SAMPLES = {"type": "integer", "minimum": 1, "maximum": 100, "default": 1,
                  "description": "Jobs per item and platform"}

OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "jobqueue", "version": settings.VERSION,
             "description": "A Postgres-only job system for LLM and API workloads. Every "
                            "answer carries X-RateLimit-Limit, -Remaining and -Reset."},
    "servers": [{"url": "/api"}],
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                               "field": {"type": "string"},
                               "problems": {"type": "array", "items": {"type": "string"}}}}}},
            "NewJob": {"type": "object", "required": ["queue", "kind"],
                       "additionalProperties": False, "properties": {
                           "queue": {"type": "string", "minLength": 1},
                           "kind": {"type": "string", "minLength": 1},
                           "payload": {},
                           "priority": {"oneOf": [{"type": "integer"}, {
                               "enum": ["high", "normal", "low"]}]},
                           "run_at": {"type": "string", "format": "date-time"},
                           "delay": {"type": "number", "minimum": 0},
                           "max_attempts": {"type": "integer", "minimum": 1},
                           "timeout": {"type": "number", "exclusiveMinimum": 0},
                           "idempotency_key": {"type": "string"},
                           "metadata": {"type": "object"}}},
            "Job": {"type": "object", "properties": {
                "id": {"type": "integer"}, "queue": {"type": "string"},
                "kind": {"type": "string"},
                "state": {"enum": list(STATES)},
                "payload": {}, "result": {}, "progress": {},
                "attempts": {"type": "integer"}, "max_attempts": {"type": "integer"},
                "errors": {"type": "array", "items": {"type": "object"}},
                "metadata": {"type": "object"}, "batch_id": {"type": ["integer", "null"]},
                "created_at": {"type": "string"}, "started_at": {"type": ["string", "null"]},
                "finished_at": {"type": ["string", "null"]}}},
            "BatchItem": {"type": "object", "additionalProperties": False, "properties": {
                "prompt": {"type": "string"}, "messages": {"type": "array"},
                "model": {"type": "string"}, "max_tokens": {"type": "integer"},
                "temperature": {"type": "number"}, "priority": {},
                "idempotency_key": {"type": "string"}, "metadata": {"type": "object"}}},
            "Batch": {"type": "object", "properties": {
                "id": {"type": "integer"}, "name": {"type": ["string", "null"]},
                "queue": {"type": "string"}, "total": {"type": "integer"},
                **{state: {"type": "integer"} for state in STATES},
                "finished": {"type": "integer"},
                "platforms": {"type": "object", "description": "platform -> counts by state "
                                                               "and total (a fan-out's)"}}},
        },
    },
    "paths": {
        "/jobs": {"post": {
            "summary": "Enqueue a job", "operationId": "createJob",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("NewJob")}}},
            "responses": {"201": _json({"type": "object"}, "Created: {id, state, created}"),
                          "200": _json({"type": "object"}, "The job an idempotency key "
                                       "already names"), **ERRORS}}},
        "/jobs/{job_id}": {"get": {
            "summary": "A job with state, attempts, errors, result and progress",
            "operationId": "getJob",
            "parameters": [JOB_ID, {"name": "wait", "in": "query", "schema": {
                "type": "number", "minimum": 0, "maximum": 60},
                "description": "Block up to this many seconds for the job to finish"}],
            "responses": {"200": _json(_ref("Job"), "The job"), **ERRORS}}},
        "/jobs/{job_id}/cancel": {"post": {
            "summary": "Cancel (waiting: now; running: its worker stops it)",
            "operationId": "cancelJob", "parameters": [JOB_ID],
            "responses": {"200": _json({"type": "object"}, "{id, outcome}"), **ERRORS}}},
        "/jobs/{job_id}/retry": {"post": {
            "summary": "Run a dead or cancelled job again", "operationId": "retryJob",
            "parameters": [JOB_ID],
            "responses": {"200": _json({"type": "object"}, "{id, state}"), **ERRORS}}},
        "/jobs/{job_id}/events": {"get": {
            "summary": "Server-Sent Events of state and progress until the job finishes",
            "operationId": "jobEvents", "parameters": [JOB_ID],
            "responses": {"200": {"description": "text/event-stream; events 'state' and "
                                                 "'done' carry the job as JSON"}, **ERRORS}}},
        "/batches": {"post": {
            "summary": "Create a batch of LLM jobs from JSON items or an uploaded CSV/JSONL",
            "operationId": "createBatch",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {
                    "type": "object", "required": ["items"],
                    "properties": {"platform": {"type": "string"},
                                   "platforms": FANOUT_PLATFORMS, "samples": FANOUT_SAMPLES,
                                   "name": {"type": "string"},
                                   "items": {"type": "array", "items": _ref("BatchItem")}}}},
                "multipart/form-data": {"schema": {
                    "type": "object", "required": ["file"],
                    "properties": {"platform": {"type": "string"},
                                   "platforms": {"type": "string",
                                                 "description": "a,b,c: fan out over these"},
                                   "samples": FANOUT_SAMPLES,
                                   "file": {"type": "string", "format": "binary"},
                                   "template": {"type": "string"},
                                   "format": {"enum": ["jsonl", "csv"]},
                                   "name": {"type": "string"}}}}}},
            "responses": {"201": _json({"type": "object"}, "{id, total, queue}"),
                          "422": _json(_ref("Error"), "Rejected whole; problems list "
                                       "FILE:LINE or items[i].field"), **ERRORS}}},
        "/batches/{batch_id}": {"get": {
            "summary": "A batch with counts by state", "operationId": "getBatch",
            "parameters": [BATCH_ID],
            "responses": {"200": _json(_ref("Batch"), "The batch"), **ERRORS}}},
        "/batches/{batch_id}/results": {"get": {
            "summary": "Results: a JSON page (?after, ?limit) or a download (?format)",
            "operationId": "batchResults",
            "parameters": [BATCH_ID,
                           {"name": "after", "in": "query", "schema": {"type": "integer"}},
                           {"name": "limit", "in": "query", "schema": {
                               "type": "integer", "minimum": 1, "maximum": 1000}},
                           {"name": "format", "in": "query", "schema": {
                               "enum": ["jsonl", "csv"]}}],
            "responses": {"200": _json({"type": "object"}, "{items, next_after}"),
                          **ERRORS}}},
        "/documents": {"post": {
            "summary": "Upload a text, Markdown or PDF document to analyze",
            "operationId": "uploadDocument",
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["file", "platform"],
                "properties": {"file": {"type": "string", "format": "binary"},
                               "platform": {"type": "string"}}}}}},
            "responses": {"201": _json({"type": "object"}, "{id, job_id, state}"),
                          "413": _json(_ref("Error"), "Too large"),
                          "415": _json(_ref("Error"), "Not text, Markdown or PDF"),
                          "422": _json(_ref("Error"), "A text over JOBQUEUE_DOCUMENT_MAX_CHARS"),
                          **ERRORS}}},
        "/documents/{document_id}": {"get": {
            "summary": "A document and its analysis job", "operationId": "getDocument",
            "parameters": [{"name": "document_id", "in": "path", "required": True,
                            "schema": {"type": "integer"}}],
            "responses": {"200": _json({"type": "object"}, "The document"), **ERRORS}},
            "delete": {
                "summary": "Delete a document, its bytes and text (its owner or an admin)",
                "operationId": "deleteDocument",
                "parameters": [{"name": "document_id", "in": "path", "required": True,
                                "schema": {"type": "integer"}}],
                "responses": {"200": _json({"type": "object"}, "{id, deleted}"), **ERRORS}}},
        "/sessions": {"get": {
            "summary": "Dashboard sessions of the caller's owner (admin: all)",
            "operationId": "listSessions",
            "responses": {"200": _json({"type": "object"}, "{sessions}"), **ERRORS}}},
        "/sessions/{session_id}": {"delete": {
            "summary": "Revoke a dashboard session", "operationId": "revokeSession",
            "parameters": [{"name": "session_id", "in": "path", "required": True,
                            "schema": {"type": "integer"}}],
            "responses": {"200": _json({"type": "object"}, "{id, revoked}"), **ERRORS}}},
        "/queues": {"get": {
            "summary": "Queues with counts by state", "operationId": "listQueues",
            "responses": {"200": _json({"type": "object"}, "{queues}"), **ERRORS}}},
        "/queues/{name}/pause": {"post": {
            "summary": "Pause a queue (admin)", "operationId": "pauseQueue",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": _json({"type": "object"}, "{queue, paused}"), **ERRORS}}},
        "/queues/{name}/resume": {"post": {
            "summary": "Resume a queue (admin)", "operationId": "resumeQueue",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": _json({"type": "object"}, "{queue, paused}"), **ERRORS}}},
    },
}
