"""The OpenAPI 3.1 description of /api, served at /api/openapi.json, built from the app itself:
every route under /api in the Flask url_map, with its methods and path variables, and what its
@operation (web/contract.py) declares: the pydantic models of its body, form and query (their
JSON Schema) and its answers. Nothing here is written by hand per route."""

from __future__ import annotations

import re

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from jobqueue import settings
from web.contract import Operation, answers_of, operation_of
from web.schemas import MAX_ID

API_PREFIX = "/api"
_VARIABLE = re.compile(r"<(?:(?P<converter>\w+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>\w+)>")
_CONVERTER_SCHEMAS = {"int": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                      "float": {"type": "number", "minimum": 0}}


def document(app: Flask) -> dict:
    """The document for `app`, built once per app (routes are fixed once it serves)."""
    cached = app.extensions.get("openapi")
    if cached is None:
        cached = app.extensions["openapi"] = _build(app)
    return cached


def _build(app: Flask) -> dict:
    routes = []  # (path, method, operation id, operation, path variables)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        op = operation_of(app, rule.endpoint)
        if not rule.rule.startswith(API_PREFIX + "/") or op is None:
            continue
        for path, fixed, variables in _expand(rule.rule.removeprefix(API_PREFIX)):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                name = rule.endpoint.rsplit(".", 1)[-1]
                op_id = _camel("_".join([name, *fixed]))
                routes.append((path, method.lower(), op_id, op, variables,
                               answers_of(app, rule.endpoint)))

    models = {m for *_, op, _, answers in routes for m in _models(op, answers)}
    refs, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}")
    paths: dict[str, dict] = {}
    for path, method, op_id, op, variables, answers in routes:
        paths.setdefault(path, {})[method] = _operation(op, op_id, variables, answers,
                                                        lambda m: refs[(m, "validation")])
    return {
        "openapi": "3.1.0",
        "info": {"title": "jobqueue", "version": settings.VERSION,
                 "description": "A Postgres-only job system for LLM and API workloads. Every "
                                "answer to an authenticated request carries X-RateLimit-Limit, "
                                "-Remaining and -Reset."},
        "servers": [{"url": API_PREFIX}],
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": defs.get("$defs", {})},
        "paths": paths,
    }


def _models(op: Operation, answers: dict) -> list[type[BaseModel]]:
    found = [m for m in (op.body, op.form, op.query, op.path) if m is not None]
    return found + [r.model for r in answers.values() if r.model is not None]


def _expand(rule: str):
    """A werkzeug rule as OpenAPI paths: <int:job_id> is {job_id}; <any(a, b):x> is one path
    per choice. Yields (path, the choices taken, {variable: schema})."""
    choices = [m for m in _VARIABLE.finditer(rule) if m["converter"] == "any"]
    combos: list[list[str]] = [[]]
    for m in choices:
        options = [o.strip().strip("'\"") for o in m["args"].split(",")]
        combos = [[*c, o] for c in combos for o in options]
    for combo in combos:
        picked = iter(combo)
        variables: dict[str, dict] = {}

        def place(m, picked=picked, variables=variables):
            if m["converter"] == "any":
                return next(picked)
            variables[m["name"]] = _CONVERTER_SCHEMAS.get(m["converter"], {"type": "string"})
            return "{" + m["name"] + "}"

        yield _VARIABLE.sub(place, rule), combo, variables


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(p.capitalize() for p in rest)


def _parameters(model: type[BaseModel], where: str) -> list[dict]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [{"name": name, "in": where, "required": name in required or where == "path",
             "schema": _text_schema(prop),
             **({"description": prop["description"]} if "description" in prop else {})}
            for name, prop in schema["properties"].items()]


def _text_schema(prop: dict) -> dict:
    """A query or path variable's schema: a query string cannot say null, so "or null" (an
    optional field's) goes, with the null default."""
    schema = {k: v for k, v in prop.items() if k not in ("title", "description")}
    options = [o for o in schema.pop("anyOf", []) if o != {"type": "null"}]
    if len(options) == 1:
        schema |= options[0]
    elif options:
        schema["anyOf"] = options
    if schema.get("default", 0) is None:
        del schema["default"]
    return schema


def _operation(op: Operation, op_id: str, variables: dict[str, dict], answers: dict,
               ref) -> dict:
    params = _parameters(op.path, "path") if op.path else []
    named = {p["name"] for p in params}
    params += [{"name": n, "in": "path", "required": True, "schema": s}
               for n, s in variables.items() if n not in named]
    if op.query:
        params += _parameters(op.query, "query")
    doc: dict = {"summary": op.summary, "operationId": op_id}
    if op.description:
        doc["description"] = op.description
    if params:
        doc["parameters"] = params
    content = {}
    if op.body:
        content["application/json"] = {"schema": ref(op.body)}
    if op.form:
        content["multipart/form-data"] = {"schema": ref(op.form)}
    if content:
        doc["requestBody"] = {"required": True, "content": content}
    doc["responses"] = {
        str(status): {"description": reply.description or "",
                      **({"content": {t: ({"schema": ref(reply.model)} if t ==
                                          "application/json" and reply.model else {})
                                      for t in reply.content_types}}
                         if reply.content_types else {})}
        for status, reply in sorted(answers.items())}
    if 401 not in answers:  # no @require: no token
        doc["security"] = []
    return doc
