"""What each /api route takes and answers, declared once with @operation: the declaration is
both the check the route runs on its input (pydantic models from web/schemas.py) and the
route's entry in /api/openapi.json (web/openapi.py builds the document from the Flask url_map
and these declarations). A field cannot be checked one way and documented another.

Bad input becomes BadRequest: a 4xx whose JSON is {"error": {"code", "message", "field"}},
the field named as a client would write it (`items[3].metadata.note`, `body` for JSON that
does not parse, with the field it broke in when that can be told).

Wiring a route in, e.g. in a new module web/schedules.py:

    from pydantic import Field
    from web.contract import BadRequest, Reply, operation
    from web.schemas import Name, RequestModel, ResponseModel, Text

    class NewSchedule(RequestModel):          # the body: checked, and documented
        name: Name
        cron: Text = Field(max_length=100, description="Five fields, UTC")

    class Schedule(ResponseModel):
        id: int
        name: str

    @bp.post("/schedules")
    @require("write")                         # auth first: 401/403/429 before 400
    @operation("Create a schedule", body=NewSchedule,
               replies={201: Reply(Schedule, "Created")},
               errors={409: "A schedule of that name exists"})
    def create_schedule(body: NewSchedule):   # the validated model comes in as `body`
        ...
        raise BadRequest("name: taken", field="name", status=409, code="conflict")

`query=` (a TextModel of the query string) comes in as `query`; `path=` checks the URL's
variables and passes them on; `form=` takes multipart/form-data (with `body=` too, the route
takes either, by Content-Type). 400, 401, 403, 413, 415 and 429 are documented for the
routes that can give them; declare the others in `errors`. Register the blueprint under /api
in create_app: tests/integration/test_api_contract.py then fails for a route that lacks
@operation, and the tests' servers (API_CHECK_RESPONSES) fail an answer whose status or JSON
the declaration does not describe.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field

from flask import Flask, current_app, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from web.auth import api_error
from web.schemas import Error


class BadRequest(Exception):
    """A client error, answered as {"error": {"code", "message", "field"}} with `status`."""

    def __init__(self, message: str, field: str | None = None, status: int = 400,
                 code: str = "invalid_request"):
        super().__init__(message)
        self.message, self.field, self.status, self.code = message, field, status, code

    def response(self):
        return api_error(self.status, self.code, self.message, field=self.field)


@dataclass(frozen=True)
class Reply:
    """One answer of a route: its JSON model (None: no JSON body) or other content types."""

    model: type[BaseModel] | None = None
    description: str = ""
    content_types: tuple[str, ...] = ("application/json",)


STANDARD_ERRORS = {
    400: "Bad input; error.field names the field",
    401: "Missing, unknown or revoked token",
    403: "The token lacks the scope",
    413: "The body is over the route's size limit",
    415: "The wrong Content-Type",
    429: "Over the token's rate limit (or too many failed sign-ins); see Retry-After",
}
# Answered by Gunicorn before the app sees the request, so with no JSON body.
SERVER_ERRORS = {414: Reply(None, "The request line is over Gunicorn's limit (4094 bytes)",
                            ())}


@dataclass(frozen=True)
class Operation:
    """A route's declaration (see the module docstring)."""

    summary: str
    replies: dict[int, Reply]
    errors: dict[int, str] = field(default_factory=dict)
    body: type[BaseModel] | None = None
    form: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path: type[BaseModel] | None = None
    limit: str = "JSON_MAX_BYTES"  # the config key of the body's size limit
    description: str | None = None
    # Fields whose every problem is listed at once (error.problems) with this status, when
    # they are the only ones at fault: a batch's items, 422, nothing enqueued.
    problems: tuple[tuple[str, ...], int] | None = None

    def answers(self, scope: str | None) -> dict[int, Reply]:
        """Every status the route may answer, with what comes with it, given the token scope
        its @require asks for (None: no token needed). 403 is for scopes above read, which
        every token has."""
        statuses = dict(self.errors)
        if scope is not None:
            statuses = {s: STANDARD_ERRORS[s] for s in (401, 429)} | statuses
        if scope not in (None, "read"):
            statuses[403] = STANDARD_ERRORS[403]
        if self.body or self.form or self.query or self.path:
            statuses[400] = statuses.get(400, STANDARD_ERRORS[400])
        if self.body or self.form:
            statuses |= {s: statuses.get(s, STANDARD_ERRORS[s]) for s in (413, 415)}
        return (self.replies | {s: Reply(Error, text) for s, text in statuses.items()}
                | SERVER_ERRORS)


def operation(summary: str, *, replies: dict[int, Reply], errors: dict[int, str] | None = None,
              body: type[BaseModel] | None = None, form: type[BaseModel] | None = None,
              query: type[BaseModel] | None = None, path: type[BaseModel] | None = None,
              limit: str = "JSON_MAX_BYTES",
              description: str | None = None,
              problems: tuple[tuple[str, ...], int] | None = None):
    """Declare a route's input and answers; the view gets the checked `body` and `query`."""
    op = Operation(summary, replies, errors or {}, body, form, query, path, limit,
                   description, problems)

    def decorate(view):
        @functools.wraps(view)
        def checked(*args, **kwargs):
            # A BadRequest raised here is answered by the app's one handler (web/__init__.py).
            if op.path is not None:
                kwargs = dict(_validate(op.path, kwargs)) | {
                    k: v for k, v in kwargs.items() if k not in op.path.model_fields}
            if op.query is not None:
                kwargs["query"] = _validate(op.query, request.args.to_dict())
            if op.body is not None or op.form is not None:
                kwargs["body"] = _request_body(op)
            return view(*args, **kwargs)

        checked.operation = op
        return checked

    return decorate


def operation_of(app: Flask, endpoint: str | None) -> Operation | None:
    view = app.view_functions.get(endpoint) if endpoint else None
    return getattr(view, "operation", None)


def answers_of(app: Flask, endpoint: str) -> dict[int, Reply]:
    """What the route at `endpoint` may answer (its @operation, and its @require's scope)."""
    view = app.view_functions[endpoint]
    return view.operation.answers(getattr(view, "required_scope", None))


# -- reading requests -----------------------------------------------------------------------

def _request_body(op: Operation) -> BaseModel:
    if op.form is not None and request.mimetype == "multipart/form-data":
        data: dict = {k: v for k, v in request.form.items() if v != ""}  # empty: not given
        data |= {k: v for k, v in request.files.items()}
        return _validate(op.form, data)
    limit = current_app.config[op.limit]
    if request.content_length and request.content_length > limit:
        raise BadRequest(f"body: larger than {limit} bytes", status=413, code="too_large")
    if op.body is None or not request.is_json:
        wanted = " or ".join(t for t, m in (("application/json", op.body),
                                            ("multipart/form-data", op.form)) if m)
        raise BadRequest(f"body: send Content-Type: {wanted}", status=415,
                         code="unsupported_media_type")
    raw = _read_body(limit)
    try:
        return op.body.model_validate_json(raw)
    except ValidationError as exc:
        raise bad_request(exc, op.body, raw, op.problems) from None


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


def _validate(model: type[BaseModel], data: dict) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_request(exc, model) from None


# -- errors as clients read them ------------------------------------------------------------

def bad_request(exc: ValidationError, model: type[BaseModel] | None = None,
                raw: bytes | None = None, problems: tuple[tuple[str, ...], int] | None = None,
                status: int = 400) -> BadRequest:
    """The first of pydantic's errors as a BadRequest naming the field; or, when `problems`
    (fields, status) covers every error, all of them in error.problems. A model validator
    blames a field by naming its error type after it (PydanticCustomError("delay", ...))."""
    fields = set(model.model_fields) if model is not None else set()
    errors = [e | {"loc": (e["type"],)} if not e["loc"] and e["type"] in fields else e
              for e in exc.errors(include_url=False)]
    if problems and all(e["loc"] and e["loc"][0] in problems[0] for e in errors):
        listed = [describe(e) for e in errors]
        return Rejected(listed, status=problems[1])
    first = errors[0]
    kind, loc = first["type"], first["loc"]
    if kind == "json_invalid":
        problem = first["ctx"]["error"]
        # Where it broke, unless it is the end (a cut-off body is the body's problem).
        where = ((not problem.startswith("EOF") and _place_in_json(raw or b"", problem))
                 or "body")
        return BadRequest(f"{where}: not valid JSON ({problem})", field=where, status=status)
    if not loc:
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            return BadRequest("body: must be a JSON object", field="body", status=status)
        return BadRequest(f"body: {_message(first)}", field="body", status=status)
    text = describe(first)
    return BadRequest(text, field=text.split(": ", 1)[0], status=status)


def describe(error: dict) -> str:
    """One pydantic error as people read it: "items[3].max_tokens: must be ..."."""
    place = dotted(error["loc"])
    if error["type"] == "json_value":  # the place inside the value comes with the message
        return f"{place}{error['ctx']['where']}"
    return f"{place}: {_message(error)}"


class Rejected(BadRequest):
    """Several problems at once (a batch's items or a file's lines): error.problems lists
    them (the first 100), error.field names the first one's field."""

    def __init__(self, problems: list[str], status: int = 422, code: str = "invalid_batch",
                 field: str | None = None):
        super().__init__(f"{len(problems)} problem(s); nothing was enqueued: {problems[0]}",
                         field=field or problems[0].split(":", 1)[0], status=status, code=code)
        self.problems = problems

    def response(self):
        response = super().response()
        body = response.get_json()
        body["error"]["problems"] = self.problems[:100]
        response.set_data(json.dumps(body))
        return response


def dotted(loc) -> str:
    """('items', 3, 'metadata') -> items[3].metadata"""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_PLAIN = {"missing": "required", "extra_forbidden": "unknown field"}


def _message(error: dict) -> str:
    kind = error["type"]
    if kind in _PLAIN:
        return _PLAIN[kind]
    text = error["msg"]
    text = text.removeprefix("Value error, ")
    text = text[:1].lower() + text[1:]
    value = error.get("input")
    if kind.endswith(("_type", "_parsing", "_error", "greater_than", "less_than",
                      "greater_than_equal", "less_than_equal", "finite_number")) and \
            isinstance(value, str | int | float | bool | type(None)):
        shown = json.dumps(value, ensure_ascii=False, default=str)
        text += f", got {shown if len(shown) <= 60 else shown[:57] + '...'}"
    return text


_POSITION = re.compile(r"at line (\d+) column (\d+)$")


def _place_in_json(raw: bytes, problem: str) -> str | None:
    """The field a JSON syntax error is in ("payload.a[2]"), from the parser's line and
    (byte) column: a scan of the text up to there, run only on this error path."""
    found = _POSITION.search(problem)
    if not found:
        return None
    line, column = int(found[1]), int(found[2])
    lines = raw.split(b"\n")
    if line > len(lines):
        return None
    offset = sum(len(x) + 1 for x in lines[: line - 1]) + column - 1
    text = raw[:offset].decode("utf-8", errors="replace")
    stack: list[list] = []  # [is_object, key or index]
    last_string, i = None, 0
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            last_string, i = text[i + 1: j], j + 1
            continue
        if c == "{":
            stack.append([True, None])
        elif c == "[":
            stack.append([False, 0])
        elif c in "}]" and stack:
            stack.pop()
        elif c == ":" and stack and stack[-1][0]:
            stack[-1][1] = last_string
        elif c == "," and stack:
            stack[-1][1] = None if stack[-1][0] else stack[-1][1] + 1
        i += 1
    loc = [key for _, key in stack if key is not None][:6]
    return dotted(loc) if loc else None


# -- holding answers to the declarations (tests) --------------------------------------------

def check_answers(app: Flask) -> None:
    """Fail every answer of a declared route whose status it does not declare, or whose JSON
    does not fit the declared model. The tests' servers run with this (API_CHECK_RESPONSES);
    a mismatch is an AssertionError the test sees as a 500."""

    @app.after_request
    def _check(response):
        if operation_of(app, request.endpoint) is None:
            return response
        reply = answers_of(app, request.endpoint).get(response.status_code)
        assert reply is not None, (
            f"{request.method} {request.path} answered {response.status_code}, which its "
            f"@operation does not declare: {response.get_data(as_text=True)[:300]}")
        assert response.mimetype in reply.content_types, (
            f"{request.method} {request.path} answered {response.mimetype}, declared "
            f"{reply.content_types}")
        if reply.model is not None and not response.is_streamed:
            try:
                reply.model.model_validate_json(response.get_data())
            except ValidationError as exc:
                raise AssertionError(f"{request.method} {request.path} "
                                     f"{response.status_code}: {exc}") from None
        return response
