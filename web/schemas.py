"""The request and response models of /api, in pydantic: each is both the check a route runs on
its input and that input's description in /api/openapi.json (web/contract.py wires them to
routes, web/openapi.py turns them into the document).

Limits are not set here: they come from where the Python API and the CLI take them too
(jobqueue/jobs.py for jobs, jobqueue/batches/files.py for batch items), so one number holds on
every surface. Request models refuse unknown fields and are strict (a JSON "3" is not the
integer 3, true is not 1); query, path and form models read text, as those arrive as text.

Building blocks for new models: `Text` (a string Postgres can store: no NUL), `Name` (a
non-empty Text of at most MAX_NAME_LENGTH characters), `JsonValue` / `JsonObject` (JSON a job
may carry: no NUL, no NaN, at most MAX_JSON_DEPTH deep), `Upload` (a multipart file part),
`one_message` (one clear error for a union instead of one per member).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from werkzeug.datastructures import FileStorage

from jobqueue.batches.files import MAX_TOKENS_RANGE, ROLES, TEMPERATURE_RANGE
from jobqueue.batches.specs import MAX_SAMPLES
from jobqueue.errors import InvalidJob
from jobqueue.jobs import (
    ATTEMPTS_RANGE,
    MAX_DELAY_SECONDS,
    MAX_NAME_LENGTH,
    MAX_PARENTS,
    PARENT_FAILURE_POLICIES,
    PRIORITIES,
    PRIORITY_RANGE,
    STATES,
    TIMEOUT_RANGE,
    check_run_at,
    text_problem,
    to_json,
)
from jobqueue.queues import MAX_CAP

MAX_ID = 2**63 - 1          # bigint: ids in paths and queries beyond it are no id of ours
MAX_WAIT_SECONDS = 60.0     # GET /api/jobs/<id>?wait=
MAX_FILENAME_LENGTH = 255   # what file systems allow
MAX_TEMPLATE_LENGTH = 10_000
MAX_PLATFORMS = 50          # a fan-out's platforms (each must be in the config anyway)


class RequestModel(BaseModel):
    """A JSON request body: unknown fields refused, JSON types as written."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TextModel(BaseModel):
    """Query strings, path segments and form fields: text read as the declared type."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class ResponseModel(BaseModel):
    """An answer's JSON. Extra fields are allowed: answers may grow without breaking clients."""

    model_config = ConfigDict(extra="allow")


# -- building blocks ------------------------------------------------------------------------

def _storable(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise PydanticCustomError("text", problem)
    return value


def _not_blank(value: str) -> str:
    if value.isspace():
        raise PydanticCustomError("text", "must not be only whitespace")
    return value


def _json_value(value: Any) -> Any:
    try:
        to_json(value, "")
    except InvalidJob as exc:  # "" + ".a[2]: contains a NUL ..." (the place, then the problem)
        raise PydanticCustomError("json_value", "{where}", {"where": str(exc)}) from None
    return value


def one_message(message: str):
    """A union's errors as one error with `message` (pydantic would report each member)."""

    def validate(value, handler):
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("choice", message) from None

    return WrapValidator(validate)


def _upload(value: Any) -> FileStorage:
    if not isinstance(value, FileStorage) or not value.filename:
        raise PydanticCustomError("upload", "must be a file (a multipart part with a filename)")
    problem = text_problem(value.filename)
    if problem:
        raise PydanticCustomError("upload", "file name {problem}", {"problem": problem})
    if len(value.filename) > MAX_FILENAME_LENGTH:
        raise PydanticCustomError("upload", "file name longer than {n} characters",
                                  {"n": MAX_FILENAME_LENGTH})
    return value


Text = Annotated[str, AfterValidator(_storable)]
Name = Annotated[Text, Field(min_length=1, max_length=MAX_NAME_LENGTH)]
# Not blank: the pattern documents it (JSON Schema reads it as "somewhere a non-space").
Filled = Annotated[Text, Field(min_length=1, json_schema_extra={"pattern": r"\S"}),
                   AfterValidator(_not_blank)]
JsonValue = Annotated[Any, AfterValidator(_json_value)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_value)]
Upload = Annotated[FileStorage, PlainValidator(_upload),
                   WithJsonSchema({"type": "string", "format": "binary"})]
Id = Annotated[int, Field(ge=0, le=MAX_ID)]
JobId = Annotated[int, Field(ge=1, le=MAX_ID)]  # job ids start at 1

_lo, _hi = PRIORITY_RANGE
Priority = Annotated[
    Annotated[int, Field(ge=_lo, le=_hi)] | Literal[tuple(PRIORITIES)],
    one_message(f"must be an integer from {_lo} to {_hi} or one of {', '.join(PRIORITIES)}"),
    Field(description="Lower runs first; high, normal and low are "
                      + ", ".join(str(v) for v in PRIORITIES.values())),
]


def _run_at(value):
    try:
        check_run_at(value)
    except InvalidJob as exc:
        raise PydanticCustomError("run_at", "{problem}",
                                  {"problem": str(exc).split(": ", 1)[1]}) from None
    return value


RunAt = Annotated[AwareDatetime, AfterValidator(_run_at)]


# -- requests -------------------------------------------------------------------------------

class NewJob(RequestModel):
    """POST /api/jobs: one job. `delay` and `run_at` are alternatives."""

    queue: Name
    kind: Name = Field(description="The task that runs it")
    payload: JsonValue = Field(default_factory=dict, description="Any JSON the task takes")
    priority: Priority | None = None
    run_at: RunAt | None = Field(None, description="When it may run first (with a zone)")
    delay: Annotated[float, Field(ge=0, le=MAX_DELAY_SECONDS)] | None = Field(
        None, description="Seconds from now before it may run")
    max_attempts: Annotated[int, Field(ge=ATTEMPTS_RANGE[0], le=ATTEMPTS_RANGE[1])] | None = None
    timeout: Annotated[float, Field(ge=TIMEOUT_RANGE[0], le=TIMEOUT_RANGE[1])] | None = Field(
        None, description="Seconds an attempt may run")
    idempotency_key: Name | None = Field(
        None, description="A second job with the same key (and owner) returns the first")
    metadata: JsonObject | None = None
    depends_on: Annotated[list[JobId], Field(max_length=MAX_PARENTS)] | None = Field(
        None, description="Ids of jobs (the caller's own) it waits for: it is `blocked` until "
                          "they have ended")
    on_parent_failure: Literal[tuple(PARENT_FAILURE_POLICIES)] | None = Field(
        None, description="When a parent ends dead or cancelled: cancel (default) or run")

    # What JobSpec refuses (delay or run_at, not both), as JSON Schema says it.
    model_config = ConfigDict(json_schema_extra={"not": {
        "required": ["delay", "run_at"],
        "properties": {"delay": {"type": "number"}, "run_at": {"type": "string"}}}})

    @model_validator(mode="after")
    def _delay_or_run_at(self):
        if self.delay is not None and self.run_at is not None:
            raise PydanticCustomError("delay", "give delay or run_at, not both")
        return self


class ContentPart(BaseModel):
    """One part of a message's content, as the OpenAI chat API takes it."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    type: Text


class ChatMessage(BaseModel):
    """A chat message; other OpenAI fields (name, tool_calls, ...) pass through."""

    # What _content_or_tool_calls checks, as JSON Schema says it.
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False,
                              json_schema_extra={"anyOf": [
                                  {"required": ["content"], "properties": {
                                      "content": {"type": ["string", "array"]}}},
                                  {"required": ["tool_calls"], "properties": {
                                      "role": {"const": "assistant"},
                                      "tool_calls": {"type": "array", "minItems": 1}}}]})
    role: Literal[tuple(ROLES)]
    content: Annotated[
        Text | Annotated[list[ContentPart], Field(min_length=1)] | None,
        one_message("must be a string or a non-empty list of content parts")] = None

    @model_validator(mode="after")
    def _content_or_tool_calls(self):
        if self.content is None and not (self.role == "assistant" and
                                         (self.model_extra or {}).get("tool_calls")):
            raise PydanticCustomError("content", 'missing "content"')
        if self.model_extra:
            _json_value(self.model_extra)
        return self


_tlo, _thi = TEMPERATURE_RANGE


class BatchItem(RequestModel):
    """One item of a JSON batch: "prompt" or "messages" (not both), as a JSONL line."""

    # What _prompt_or_messages checks, as JSON Schema says it: exactly one of them set.
    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
        {"required": ["messages"], "properties": {"messages": {"type": "array"}}}]})

    prompt: Filled | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    model: Filled | None = None
    max_tokens: Annotated[int, Field(ge=MAX_TOKENS_RANGE[0], le=MAX_TOKENS_RANGE[1])] | None \
        = None
    temperature: Annotated[float, Field(ge=_tlo, le=_thi)] | None = None
    priority: Priority | None = None
    idempotency_key: Name | None = None
    metadata: JsonObject | None = None
    ref: Filled | None = Field(None, description="A name later items can wait for")
    depends_on: Annotated[list[Filled | JobId], Field(max_length=MAX_PARENTS)] | None = Field(
        None, description="Refs of earlier items, or ids of existing jobs, it waits for")
    on_parent_failure: Literal[tuple(PARENT_FAILURE_POLICIES)] | None = None

    @model_validator(mode="after")
    def _prompt_or_messages(self):
        if (self.prompt is None) == (self.messages is None):
            raise PydanticCustomError("prompt_or_messages",
                                      'give "prompt" or "messages" (one of them)')
        return self


class OnComplete(RequestModel):
    """A job to enqueue once every member of the batch has ended; its payload gets the
    batch id and counts added."""

    kind: Name
    queue: Name | None = None
    payload: JsonObject = Field(default_factory=dict)
    priority: Priority | None = None
    max_attempts: Annotated[int, Field(ge=ATTEMPTS_RANGE[0], le=ATTEMPTS_RANGE[1])] | None = None
    metadata: JsonObject | None = None


class NewBatch(RequestModel):
    """POST /api/batches as JSON. `platform`, or `platforms` for a fan-out: one job per
    (item, platform, sample)."""

    # One of the two, as JSON Schema says it (the route checks it and names the field).
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["platform"]},
                                                           {"required": ["platforms"]}]})

    platform: Name | None = None
    platforms: Annotated[list[Name], Field(min_length=1, max_length=MAX_PLATFORMS)] | None = \
        Field(None, description="Fan out over these platforms (instead of platform)")
    samples: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] = Field(
        1, description="Jobs per item and platform (independent answers, not cached)")
    name: Annotated[Text, Field(max_length=MAX_NAME_LENGTH)] | None = None
    items: Annotated[list[BatchItem], Field(min_length=1)]
    on_complete: OnComplete | None = None
    fallback: bool = Field(True, description="false: never answer with the platform's "
                                             "fallback model (jobs wait for the main one)")


class BatchUpload(TextModel):
    """POST /api/batches as multipart/form-data: a CSV or JSONL file."""

    platform: Name | None = None
    platforms: Annotated[Text, Field(min_length=1, max_length=MAX_PLATFORMS * 65)] | None = \
        Field(None, description="a,b,c: fan out over these platforms (instead of platform)")
    samples: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] = Field(
        1, description="Jobs per row and platform")
    file: Upload
    template: Annotated[Text, Field(max_length=MAX_TEMPLATE_LENGTH)] | None = Field(
        None, description="CSV only: a prompt with {column} placeholders")
    format: Literal["jsonl", "ndjson", "csv"] | None = Field(
        None, description="Else told by the file name's extension")
    name: Annotated[Text, Field(max_length=MAX_NAME_LENGTH)] | None = None
    on_complete: Annotated[Text, Field(max_length=100_000)] | None = Field(
        None, description="An OnComplete object as JSON text")


class DocumentUpload(TextModel):
    """POST /api/documents: a .txt, .md or .pdf file to analyze on a platform."""

    platform: Name
    file: Upload


class JobWait(TextModel):
    wait: Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS)] | None = Field(
        None, description="Block up to this many seconds for the job to finish")


class ResultsQuery(TextModel):
    after: Id = Field(0, description="The last id of the previous page")
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    format: Literal["jsonl", "csv"] | None = Field(
        None, description="The whole batch as a download instead of a JSON page")


class QueueName(TextModel):
    name: Name


class QueueSettingsChange(RequestModel):
    """PATCH /api/queues/<name>/settings: fields left out keep their value; null removes a
    cap. Bounds are jobqueue/queues.py's."""

    max_running: Annotated[int, Field(ge=1, le=MAX_CAP)] | None = None
    max_running_per_owner: Annotated[int, Field(ge=1, le=MAX_CAP)] | None = None
    fair: bool = Field(False, description="Fair shares between owners (a per-owner cap needs "
                                          "it)")
    retry_order: Literal["first", "last"] = Field(
        "first", description="Where retries go in the claim order: before new work of the "
                             "same priority (first) or after it (last)")


# -- responses ------------------------------------------------------------------------------

class ErrorDetail(ResponseModel):
    code: str
    message: str
    field: str | None = Field(None, description="The field at fault, e.g. items[3].prompt")
    problems: list[str] | None = Field(None, description="Every problem of a rejected batch "
                                                         "(FILE:LINE or items[i].field)")


class Error(ResponseModel):
    error: ErrorDetail


class JobCreated(ResponseModel):
    id: int
    state: Literal[tuple(STATES)]
    created: bool = Field(description="False when an idempotency key named an existing job")


class Job(ResponseModel):
    id: int
    queue: str
    kind: str
    state: Literal[tuple(STATES)]
    payload: Any = None
    priority: int
    run_at: str
    attempts: int
    max_attempts: int
    timeout_seconds: float | None
    result: Any = None
    errors: list[dict[str, Any]]
    progress: Any = None
    owner: str | None
    batch_id: int | None
    idempotency_key: str | None
    metadata: dict[str, Any]
    created_at: str
    started_at: str | None
    finished_at: str | None


class CancelOutcome(ResponseModel):
    id: int
    outcome: Literal["cancelled", "requested", "not_found"]


class RetryOutcome(ResponseModel):
    id: int
    state: Literal["waiting"]


class BatchCreated(ResponseModel):
    id: int
    total: int
    queue: str
    duplicates: int = Field(0, description="Rows whose idempotency key named an existing job")
    on_complete_job: int | None = None
    refused: int | None = Field(None, description="With ?partial=true: items over the "
                                                  "owner's quota, not enqueued")
    retry_after: float | None = Field(None, description="Seconds until the quota has room")


class BatchQuery(TextModel):
    partial: bool = Field(False, description="Over the owner's quota, enqueue the first items "
                                             "that fit (default: refuse the batch whole, 429)")


class Batch(ResponseModel):
    id: int
    name: str | None
    queue: str
    total: int
    created_at: str
    finished: int
    platforms: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="platform -> counts by state and total")
    waiting: int
    scheduled: int
    retrying: int
    running: int
    succeeded: int
    dead: int
    cancelled: int
    blocked: int = Field(0, description="Members waiting for the jobs they depend on")
    duplicates: int = Field(0, description="Rows whose idempotency key named an existing job")
    on_complete_job: int | None = None


class ResultsPage(ResponseModel):
    items: list[dict[str, Any]]
    next_after: int | None


class DocumentCreated(ResponseModel):
    id: int
    job_id: int
    state: Literal["waiting"]


class Document(ResponseModel):
    id: int
    owner: str | None
    filename: str
    content_type: str
    size: int
    job_id: int | None
    created_at: str
    text_chars: int | None = Field(description="Characters extracted (null until then)")
    original_kept: bool
    job: Job | None


class DocumentDeleted(ResponseModel):
    id: int
    deleted: Literal[True]


class QueueList(ResponseModel):
    queues: list[dict[str, Any]]


class QueuePaused(ResponseModel):
    queue: str
    paused: bool


class SessionList(ResponseModel):
    sessions: list[dict[str, Any]]


class SessionRevoked(ResponseModel):
    id: int
    revoked: bool


class QueueSettings(ResponseModel):
    queue: str
    max_running: int | None
    max_running_per_owner: int | None
    fair: bool
    retry_order: str


class OpenApiDocument(ResponseModel):
    openapi: str
    paths: dict[str, Any]


# -- dashboard forms and filters (HTML: checked here, not in the OpenAPI document) -----------

class JobFilterArgs(TextModel):
    """The job list's filter, from a query string or a bulk action's form."""

    queue: Name | None = None
    kind: Name | None = None
    owner: Name | None = None
    batch: Id | None = None
    state: Text | None = None  # an unknown state filters nothing, as a stale link would
    q: Annotated[Text, Field(max_length=MAX_NAME_LENGTH)] | None = None


class IdList(TextModel):
    """Ids ticked on a page (`ids`) and a bulk action's confirmed bound (`upto`)."""

    ids: list[Id] = []
    upto: Id | None = None
    before: Id | None = None
