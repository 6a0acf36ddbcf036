"""No input of any kind reaches a 5xx, and bad input is a 4xx naming the field.

Property-based, from /api/openapi.json itself: valid bodies drawn from the document's schemas
are accepted; the same bodies with one value swapped for a hostile JSON token (NUL, lone
surrogates, 1e400, NaN, 5,000-digit integers, nesting 10,000 deep, ...) are refused naming
that field; random paths, query strings and bodies on every documented route, and random
filters and forms on the dashboard, never answer 5xx. The tests' server also fails any answer
its route does not declare (API_CHECK_RESPONSES), so a 500 or an undocumented status fails
here. Examples are bounded so the file runs in well under a minute.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.openapi_strategies import (
    CLEAN_JSON,
    RAW_TOKENS,
    Schemas,
    hostile_token,
    with_token,
)
from tests.support.web import Api, Dashboard, Server

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.filter_too_much])
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def server(db_url, config_file):
    s = Server(db_url, JOBQUEUE_CONFIG=config_file, JSON_MAX_BYTES=256 * 1024,
               BATCH_MAX_BYTES=256 * 1024)
    yield s
    s.close()


@pytest.fixture
def alice(server, make_token):
    return Api(server.base, make_token("alice", ["admin"]))


@pytest.fixture
def schemas(alice) -> Schemas:
    return Schemas(alice.get("/api/openapi.json").json())


def assert_no_5xx(r, what) -> None:
    assert r.status_code < 500, (what, r.status_code, r.text[:500])


def top_field(field: str) -> str:
    return field.split(".")[0].split("[")[0]


def _without_dependencies(body: dict) -> dict:
    """A schema-valid body cannot know which jobs or refs exist: a `depends_on` naming none
    of the caller's is refused (422/400, as documented); tests/system/test_workflows_web.py
    covers dependencies."""
    body.pop("depends_on", None)
    for item in body.get("items") or []:
        if isinstance(item, dict):
            item.pop("depends_on", None)
            item.pop("ref", None)  # two items with one ref is refused (a ref names one row)
    return body


class TestValidBodiesAreAccepted:
    @PROPERTY
    @given(data=st.data())
    def test_a_job_the_document_allows_is_enqueued(self, alice, schemas, data):
        body = _without_dependencies(
            data.draw(schemas.valid(schemas.request_schema("/jobs", "post"))))
        r = alice.post("/api/jobs", json=body)
        assert r.status_code in (200, 201), (body, r.text)

    @PROPERTY
    @given(data=st.data())
    def test_a_batch_the_document_allows_is_created(self, alice, schemas, data):
        body = on_sim(_without_dependencies(
            data.draw(schemas.valid(schemas.request_schema("/batches", "post")))))
        r = alice.post("/api/batches", json=body)
        assert r.status_code == 201, (body, r.text)


def on_sim(body: dict) -> dict:
    """A batch body on the platform the server has (else 422, as documented): `platform`,
    or `platforms` for a fan-out (the document allows one of the two). Rows with a `ref` or
    `depends_on` are not fanned out (a ref names one job: 422), so those stay plain."""
    items = body.get("items") or []
    if any(isinstance(i, dict) and (i.get("ref") is not None or i.get("depends_on"))
           for i in items):
        body.pop("platforms", None)
        body.pop("samples", None)
    if "platforms" in body:
        body["platforms"] = ["sim"]
    else:
        body["platform"] = "sim"
    return body


def _paths(value, prefix=()):
    """Every place in a JSON value (keys and indexes), shallow first."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


class TestOneHostileValue:
    @PROPERTY
    @given(data=st.data(), route=st.sampled_from(["/jobs", "/batches"]), token=hostile_token())
    def test_is_refused_naming_its_field_or_taken(self, alice, schemas, data, route, token):
        """A valid body with one value (anywhere, even deep in items or metadata) replaced
        by a hostile token: 4xx naming the field the token is in, or accepted as valid."""
        body = _without_dependencies(
            data.draw(schemas.valid(schemas.request_schema(route, "post"))))
        if route == "/batches":
            body = on_sim(body)
        places = [p for p in _paths(body) if p and p not in (("platform",), ("platforms", 0))]
        place = data.draw(st.sampled_from(places))
        raw = with_token(body, list(place), token)
        r = alice.post("/api/" + route.strip("/"), data=raw, headers=JSON)
        assert_no_5xx(r, (raw[:300], token))
        if r.status_code >= 400:
            field = r.json()["error"]["field"]
            assert top_field(field) == place[0], (place, token, r.json())

    @PROPERTY
    @given(body=CLEAN_JSON, route=st.sampled_from(["/jobs", "/batches"]))
    def test_any_json_at_all(self, alice, body, route):
        r = alice.post("/api" + route, data=json.dumps(body), headers=JSON)
        assert_no_5xx(r, body)
        assert r.status_code < 300 or r.json()["error"]["field"]


HOSTILE_TEXT = st.sampled_from(["", "0", "-1", "1.5", "abc", str(2**63), "9" * 400, "nan",
                                "inf", "1e400", "%00", "%0d%0a", "%ff", "%ed%a0%80", "a%00b",
                                "q" * 300, "true", "[]", "%2e%2e", "\u00b2"])


class TestEveryRoute:
    @PROPERTY
    @given(data=st.data(), value=HOSTILE_TEXT, body=st.none() | CLEAN_JSON
           | hostile_token().map(lambda t: RAW_TOKENS[t]))
    def test_never_a_5xx(self, alice, schemas, data, value, body):
        """Any documented route, path variables and query parameters set to odd text, any
        body: never a 5xx."""
        path, method = data.draw(st.sampled_from(sorted(
            (p, m) for p, ops in schemas.document["paths"].items() for m in ops)))
        op = schemas.document["paths"][path][method]
        url = path
        query = []
        for param in op.get("parameters", []):
            if param["in"] == "path":
                url = url.replace("{" + param["name"] + "}", data.draw(HOSTILE_TEXT))
            elif data.draw(st.booleans()):
                query.append(f"{param['name']}={value}")
        url = "/api" + url + ("?" + "&".join(query) if query else "")
        if method == "get" and path.endswith("/events") and "0" not in url:
            return  # a stream of a live job runs until the job finishes
        payload = body if isinstance(body, str) or body is None else json.dumps(body)
        r = getattr(alice, method)(url, data=payload, headers=JSON if payload else {})
        assert_no_5xx(r, (method, url, payload and payload[:200]))


def multipart(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart body written by hand, so a file name can hold what clients' libraries
    would escape (NUL, CR, LF, quotes)."""
    boundary = "jqhostile"
    out = b""
    for name, value in fields.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                ).encode() + value.encode("utf-8", "surrogatepass") + b"\r\n"
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            ).encode() + b'filename="' + filename.encode("utf-8", "surrogatepass") + \
        b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class TestUploads:
    @PROPERTY
    @given(route=st.sampled_from(["/api/documents", "/api/batches"]),
           filename=st.sampled_from(["a\x00.txt", "a\ud800.txt", "x" * 300 + ".txt",
                                     "é.md", "a.jsonl", ".txt", "a\r\n.txt"])
           | st.text(max_size=20).map(lambda t: t + ".txt"),
           platform=st.sampled_from(["sim", "", "\x00", "nope", "s" * 300]),
           extra=st.dictionaries(st.sampled_from(["template", "format", "name"]),
                                 st.sampled_from(["", "\x00", "csv", "jsonl", "{x}", "n" * 300,
                                                  "xml"]), max_size=2),
           content=st.sampled_from([b"", b"hello", b'{"prompt": "a\\u0000"}\n', b"\xff\xfe",
                                    b'{"prompt": "x"}\n', b"%PDF-1.4 junk"]))
    def test_never_a_5xx(self, alice, route, filename, platform, extra, content):
        raw, content_type = multipart({"platform": platform, **extra}, filename, content)
        r = alice.post(route, data=raw, headers={"Content-Type": content_type})
        assert_no_5xx(r, (route, filename, platform, extra, content))
        if r.status_code >= 400:
            assert r.json()["error"]["field"], r.json()


# -- the issue's list, case by case ---------------------------------------------------------

JOB = {"queue": "q", "kind": "k"}
CASES = [
    # (route, body with the hostile token in place of "@", the field the answer must name)
    ("/jobs", {**JOB, "payload": {"a": "@"}}, "nul", "payload.a"),
    ("/jobs", {**JOB, "kind": "@"}, "nul", "kind"),
    ("/jobs", {**JOB, "queue": "@"}, "nul", "queue"),
    ("/jobs", {**JOB, "metadata": {"m": "@"}}, "nul", "metadata"),
    ("/jobs", {**JOB, "metadata": "@"}, "nul_key", "metadata"),
    ("/jobs", {**JOB, "idempotency_key": "@"}, "nul", "idempotency_key"),
    ("/jobs", {**JOB, "kind": "@"}, "lone_surrogate", "kind"),
    ("/jobs", {**JOB, "payload": "@"}, "lone_surrogate", "payload"),
    ("/jobs", {**JOB, "payload": "@"}, "big_exponent", "payload"),
    ("/jobs", {**JOB, "payload": {"x": "@"}}, "nan", "payload.x"),
    ("/jobs", {**JOB, "payload": ["@"]}, "infinity", "payload[0]"),
    ("/jobs", {**JOB, "delay": "@"}, "big_exponent", "delay"),
    ("/jobs", {**JOB, "timeout": "@"}, "nan", "timeout"),
    ("/jobs", {**JOB, "payload": "@"}, "huge_int", "payload"),
    ("/jobs", {**JOB, "max_attempts": "@"}, "huge_int", "max_attempts"),
    ("/jobs", {**JOB, "payload": "@"}, "deep", "payload"),
    ("/jobs", {**JOB, "metadata": "@"}, "deep_object", "metadata"),
    ("/jobs", {**JOB, "max_attempts": "@"}, "int64_over", "max_attempts"),
    ("/jobs", {**JOB, "max_attempts": "@"}, "int32_over", "max_attempts"),
    ("/jobs", {**JOB, "timeout": "@"}, "int70", "timeout"),
    ("/jobs", {**JOB, "delay": "@"}, "int70", "delay"),
    ("/jobs", {**JOB, "priority": "@"}, "int32_over", "priority"),
    ("/jobs", {**JOB, "run_at": "0001-01-01T00:00:00+05:00"}, None, "run_at"),
    ("/jobs", {**JOB, "run_at": "2026-01-01T00:00:00"}, None, "run_at"),
    ("/jobs", {**JOB, "queue": "q" * 201}, None, "queue"),
    ("/jobs", {**JOB, "delay": 5, "run_at": "2030-01-01T00:00:00Z"}, None, "delay"),
    ("/jobs", {**JOB, "kind": "k" * 5000}, None, "kind"),
    ("/jobs", {**JOB, "idempotency_key": "i" * 201}, None, "idempotency_key"),
    ("/batches", {"platform": "sim", "name": "@", "items": [{"prompt": "p"}]}, "nul", "name"),
    ("/batches", {"platform": "sim", "name": "n" * 201, "items": [{"prompt": "p"}]}, None,
     "name"),
    ("/batches", {"platform": "@", "items": [{"prompt": "p"}]}, "nul", "platform"),
    ("/batches", {"platform": "sim", "items": [{"prompt": "@"}]}, "nul", "items[0].prompt"),
    ("/batches", {"platform": "sim", "items": [{"prompt": "p", "metadata": {"k": "@"}}]},
     "nul", "items[0].metadata"),
    ("/batches", {"platform": "sim", "items": [{"messages": [
        {"role": "user", "content": "@"}]}]}, "lone_surrogate", "items[0].messages[0].content"),
    ("/batches", {"platform": "sim", "items": [{"messages": [
        {"role": "assistant", "tool_calls": [{"id": "@"}]}]}]}, "nul", "items[0].messages[0]"),
    ("/batches", {"platform": "sim", "items": [{"prompt": "p", "idempotency_key": "@"}]},
     "nul", "items[0].idempotency_key"),
    ("/batches", {"platform": "sim", "items": ["@"]}, "deep", "items[0]"),
    ("/batches", {"platform": "sim", "items": [{"prompt": "p", "max_tokens": "@"}]},
     "huge_int", "items[0].max_tokens"),
]


class TestTheIssuesCases:
    @pytest.mark.parametrize(("route", "body", "token", "field"), CASES,
                             ids=[f"{c[0]}-{c[3]}-{c[2]}" for c in CASES])
    def test_a_4xx_naming_the_field(self, alice, route, body, token, field):
        raw = json.dumps(body).encode()
        if token:
            raw = raw.replace(b'"@"', RAW_TOKENS[token].encode())
        r = alice.post("/api" + route, data=raw, headers=JSON)
        assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
        error = r.json()["error"]
        # The field, or a place inside it (payload.a[0]: the deepest place that can be told).
        assert error["field"] == field or error["field"].startswith((field + ".", field + "[")), \
            error
        assert error["field"] + ": " in error["message"], error

    @pytest.mark.parametrize("filename", ["a\x00.txt", "a" * 300 + ".txt"])
    def test_hostile_file_names(self, alice, filename):
        for route in ("/api/documents", "/api/batches"):
            raw, content_type = multipart({"platform": "sim"}, filename, b"hello")
            r = alice.post(route, data=raw, headers={"Content-Type": content_type})
            assert r.status_code == 400 and r.json()["error"]["field"] == "file", r.text


# -- the dashboard --------------------------------------------------------------------------

@pytest.fixture
def dashboard(server, make_token) -> Dashboard:
    d = Dashboard(server.base)
    assert d.sign_in(make_token("ops", ["admin"])).status_code == 302
    return d


ODD = HOSTILE_TEXT | st.text(max_size=8).map(quote)


class TestDashboard:
    @pytest.mark.parametrize("query", [
        "batch=99999999999999999999", "batch=%C2%B2", "before=99999999999999999999",
        "before=-5", "queue=%00", "kind=a%00", "owner=%00", "q=%00", "queue=" + "q" * 300,
        "state=%00"])
    def test_odd_filters_are_400_naming_the_field(self, dashboard, query):
        r = dashboard.get("/jobs?" + query)
        assert r.status_code == 400, (query, r.status_code)
        assert query.split("=")[0] in r.text

    @pytest.mark.parametrize("ids", [["99999999999999999999"], ["\u00b2"], ["1", "x"]])
    def test_odd_ids_in_bulk_forms_are_400(self, dashboard, ids):
        dashboard.get("/jobs")
        r = dashboard.post("/jobs/bulk", [("action", "retry")] + [("ids", i) for i in ids],
                           allow_redirects=False)
        assert r.status_code == 400, (ids, r.status_code)
        dashboard.get("/dead")
        r = dashboard.post("/dead/retry", [("ids", i) for i in ids], allow_redirects=False)
        assert r.status_code == 400, (ids, r.status_code)

    @PROPERTY
    @given(page=st.sampled_from(["/jobs", "/jobs/bulk", "/batches", "/dead", "/", "/workers"]),
           params=st.lists(st.tuples(st.sampled_from(
               ["queue", "kind", "owner", "batch", "state", "q", "before", "action",
                "partial"]), ODD), max_size=4))
    def test_pages_with_any_query_never_5xx(self, dashboard, page, params):
        r = dashboard.get(page + "?" + "&".join(f"{k}={v}" for k, v in params))
        assert_no_5xx(r, (page, params))

    @PROPERTY
    @given(form=st.sampled_from(["/jobs/bulk", "/dead/retry", "/dead/purge",
                                 "/queues/%00/pause", "/queues/" + "q" * 300 + "/pause",
                                 "/jobs/99999999999999999999/retry", "/logout"]),
           fields=st.lists(st.tuples(st.sampled_from(
               ["ids", "upto", "action", "queue", "all", "state", "batch"]),
               HOSTILE_TEXT | st.text(max_size=6)), max_size=5))
    def test_forms_with_any_fields_never_5xx(self, dashboard, form, fields):
        dashboard.get("/jobs")  # a fresh CSRF token
        r = dashboard.post(form, fields, allow_redirects=False)
        assert_no_5xx(r, (form, fields))

    @PROPERTY
    @given(token=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
           latin=st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40),
           where=st.sampled_from(["form", "header", "sign-in"]))
    def test_any_wrong_csrf_token_is_a_400(self, server, dashboard, token, latin, where):
        """hmac.compare_digest refuses str with non-ASCII characters: a token of "é" in the
        form or the X-CSRF-Token header was a 500, even on the sign-in form."""
        dashboard.get("/jobs")
        if where == "form":
            r = dashboard.post("/queues/q/pause", [("csrf_token", token)], csrf=False,
                               allow_redirects=False)
        elif where == "header":  # HTTP headers carry latin-1
            r = dashboard.post("/queues/q/pause", [], csrf=False, allow_redirects=False,
                               headers={"X-CSRF-Token": latin})
        else:
            r = Dashboard(server.base).post("/login", [("token", "x"), ("csrf_token", token)],
                                            csrf=False, allow_redirects=False)
        assert r.status_code == 400, (where, token, latin, r.status_code)

    @pytest.mark.parametrize("target", ["/\r\n/evil.example", "/jobs\r\nX-Evil: 1",
                                        "/%0d%0aSet-Cookie:x=1", "\n//evil.example"])
    def test_cr_lf_in_next_stays_on_this_site(self, server, make_token, target):
        r = Dashboard(server.base).sign_in(make_token("ops", ["admin"]), next_url=target)
        assert r.status_code == 302 and r.headers["Location"].startswith("/")
        assert "X-Evil" not in r.headers and "evil.example" not in r.headers["Location"]
