"""The web app's defences over real HTTP on loopback: sign-in redirects stay on this site,
dashboard sessions are server-side records, CSV exports cannot run formulas, security headers
and cookie flags, body limits without Content-Length, and failed-authentication floods."""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import os
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobqueue.jobs import JobSpec
from jobqueue.tokens import hash_token
from tests.support.helpers import ROOT, wait_until
from tests.support.web import Api, Dashboard, Server
from web import create_app


@pytest.fixture
def server(db_url, config_file):
    s = Server(db_url, JOBQUEUE_CONFIG=config_file)
    yield s
    s.close()


@pytest.fixture
def admin_token(make_token) -> str:
    return make_token("ops", ["admin"])


# -- redirects after sign-in ----------------------------------------------------------------

# What browsers do to a Location before resolving it (WHATWG URL parser): strip leading and
# trailing C0 controls and spaces, drop tab, CR and LF anywhere, read "\" as "/" in http(s).
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))


def browser_reading(location: str) -> str:
    return re.sub(r"[\t\r\n]", "", location.strip(_C0_AND_SPACE)).replace("\\", "/")


def same_origin_path(location: str) -> bool:
    """A Location a browser resolves to a path on the same origin (no scheme, no host)."""
    seen = browser_reading(location)
    return seen.startswith("/") and not seen.startswith("//")


HOSTILE = ["/\t/evil.example", "/%09/evil.example", "//evil.example/", "/\\evil.example",
           "\\\\evil.example", "\\/evil.example", "/\r\n/evil.example", "https://evil.example",
           "javascript:alert(1)", " //evil.example", "\t//evil.example", "/\x00/evil.example",
           "/\r\nSet-Cookie: stolen=1", "http:/evil.example", "/\x0b/evil.example",
           "/jobs\n\rLocation: https://evil.example"]


class TestSignInRedirect:
    @pytest.mark.parametrize("target", HOSTILE)
    def test_hostile_next_ends_on_this_site(self, server, make_token, target):
        """Whatever `next` says, the browser lands on a path of this site, never a 500."""
        r = Dashboard(server.base).sign_in(make_token("ops", ["admin"]), next_url=target)
        assert r.status_code == 302, (target, r.status_code)
        assert same_origin_path(r.headers["Location"]), (target, r.headers["Location"])
        assert "stolen" not in r.headers.get("Set-Cookie", "")

    def test_the_login_link_with_a_tab_in_next(self, server, make_token):
        """The reported case: /login?next=/%09/evil.example went to //evil.example."""
        d = Dashboard(server.base)
        page = d.get("/login?next=/%09/evil.example").text
        sent = html.unescape(re.search(r'name="next" value="([^"]*)"', page).group(1))
        assert sent == "/\t/evil.example"
        r = d.post("/login", {"token": make_token("ops", ["admin"]), "next": sent},
                   allow_redirects=False)
        assert r.status_code == 302 and r.headers["Location"] == "/"

    def test_a_path_on_this_site_is_kept(self, server, make_token):
        r = Dashboard(server.base).sign_in(make_token("ops", ["admin"]),
                                           next_url="/jobs?state=dead&q=a%20b")
        assert r.headers["Location"] == "/jobs?state=dead&q=a%20b"

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(target=st.one_of(
        st.text(max_size=30),
        st.lists(st.sampled_from(["/", "/", "\\", "\t", "\r", "\n", "\x00", " ", "%09",
                                  "evil.example", "http:", "javascript:", "@", ".", ":", "?",
                                  "#", "\x0c", "\u3000", "é"]),
                 min_size=1, max_size=6).map("".join)))
    def test_property_every_next_lands_on_this_site(self, server, admin_token, target):
        """Hypothesis: for any `next`, the sign-in answers 302 to a same-origin path."""
        r = Dashboard(server.base).sign_in(admin_token, next_url=target)
        assert r.status_code == 302, (target, r.status_code)
        assert same_origin_path(r.headers["Location"]), (target, r.headers["Location"])


# -- CSV exports ----------------------------------------------------------------------------

FORMULAS = ["=HYPERLINK(\"https://evil.example\",\"x\")", "+1+1", "-2+3", "@SUM(A1)",
            "\t=1+1", "\r=1+1"]


def formula_batch(api: Api) -> int:
    items = [{"prompt": text, "metadata": {"note": text, text: "key"}} for text in FORMULAS]
    items.append({"prompt": "plain", "metadata": {"note": "fine", "n": -3}})
    r = api.post("/api/batches", json={"platform": "sim", "items": items})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def assert_no_formula_cells(text: str) -> None:
    """Every cell a spreadsheet would evaluate is a quoted text starting with a single quote;
    the others are left as they were."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    cells = [cell for row in rows for cell in row]
    risky = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert risky == ["-3"], cells  # the number
    for formula in FORMULAS:
        assert "'" + formula in cells
        quoted = '"\'' + formula.replace('"', '""')
        assert quoted in text, (quoted, text)
    assert "plain" in cells and "fine" in cells and "-3" in cells  # a number stays a number


class TestCsvExport:
    def test_api_download_neutralises_formulas(self, server, make_token):
        api = Api(server.base, make_token("alice"))
        batch_id = formula_batch(api)
        r = api.get(f"/api/batches/{batch_id}/results?format=csv")
        assert r.status_code == 200
        assert_no_formula_cells(r.text)

    def test_dashboard_download_neutralises_formulas(self, server, make_token):
        batch_id = formula_batch(Api(server.base, make_token("alice")))
        d = Dashboard(server.base)
        d.sign_in(make_token("ops", ["admin"]))
        r = d.get(f"/batches/{batch_id}/results.csv")
        assert r.status_code == 200
        assert_no_formula_cells(r.text)


# -- headers, cookies and bodies ------------------------------------------------------------

def signed_in(server, token: str) -> Dashboard:
    d = Dashboard(server.base)
    assert d.sign_in(token).status_code == 302
    return d


class TestHeaders:
    def test_every_answer_carries_the_security_headers(self, server, admin_token):
        d = signed_in(server, admin_token)
        answers = [d.get("/login"), d.get("/"), d.get("/jobs?partial=1"),
                   d.get("/static/dashboard.js"), Api(server.base, admin_token).get("/api/queues"),
                   Api(server.base, None).get("/api/queues"), d.get("/healthz")]
        for r in answers:
            h = r.headers
            assert h["X-Content-Type-Options"] == "nosniff", r.url
            assert h["X-Frame-Options"] == "DENY", r.url
            assert h["Referrer-Policy"] == "same-origin", r.url
            csp = h["Content-Security-Policy"]
            for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'",
                              "frame-ancestors 'none'", "object-src 'none'",
                              "base-uri 'none'", "form-action 'self'"):
                assert directive in csp, (r.url, csp)
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp

    def test_pages_have_no_inline_script_style_or_handlers(self, server, admin_token, client,
                                                           sql):
        """What the policy would block: <script> without src, <style>, style="...", on...=."""
        batch_id, _ = client.submit_batch([JobSpec("k", {}, queue="q")], queue="q")
        job_id = client.enqueue("k", queue="q")
        d = signed_in(server, admin_token)
        pages = ["/login", "/", "/?partial=1", "/jobs", f"/jobs/{job_id}", "/dead", "/batches",
                 "/workers", "/limits", "/jobs/bulk?action=retry"]
        for path in pages:
            text = d.page(path) if path != "/login" else d.get(path).text
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), path
            assert not re.search(r"<style[\s>]", text), path
            assert not re.search(r"\sstyle\s*=", text), path
            assert not re.search(r"\son[a-z]+\s*=", text), path
            assert "javascript:" not in text, path
        assert batch_id


class TestSessionCookie:
    def test_secure_over_https_behind_a_trusted_proxy(self, db_url, admin_token):
        s = Server(db_url, TRUSTED_PROXIES=1)
        try:
            d = Dashboard(s.base)
            d.http.headers["X-Forwarded-Proto"] = "https"
            r = d.get("/login")  # the CSRF token's session; sent back only over HTTPS now
            cookie = r.headers["Set-Cookie"]
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        finally:
            s.close()

    def test_forwarded_proto_is_ignored_without_a_trusted_proxy(self, server, admin_token):
        d = Dashboard(server.base)
        d.http.headers["X-Forwarded-Proto"] = "https"
        r = d.sign_in(admin_token)
        assert r.status_code == 302 and "Secure" not in r.headers["Set-Cookie"]
        assert "HttpOnly" in r.headers["Set-Cookie"]


def chunks(size: int, piece: int = 8192):
    """A body sent with Transfer-Encoding: chunked (requests does so for a generator)."""
    sent = 0
    while sent < size:
        n = min(piece, size - sent)
        sent += n
        yield b"x" * n


class TestChunkedBodies:
    def test_a_chunked_json_body_over_the_limit_is_413(self, db_url, config_file, admin_token):
        s = Server(db_url, JOBQUEUE_CONFIG=config_file, JSON_MAX_BYTES=64 * 1024)
        try:
            api = Api(s.base, admin_token)
            head = b'{"queue": "q", "kind": "k", "payload": "'

            def body():
                yield head
                yield from chunks(100 * 1024)
                yield b'"}'

            r = api.post("/api/jobs", data=body(), headers={"Content-Type": "application/json"})
            assert r.status_code == 413, (r.status_code, r.text[:300])
            assert r.json()["error"]["code"] == "too_large"

            def small():
                yield b'{"queue": "q", "kind": "k"}'

            r = api.post("/api/jobs", data=small(), headers={"Content-Type": "application/json"})
            assert r.status_code == 201, r.text
        finally:
            s.close()

    # werkzeug's multipart parser drops the spool file of a part it stops reading at the
    # limit without closing it (the garbage collector does): not this test's concern.
    @pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
    def test_a_chunked_upload_over_the_document_limit_is_413(self, db_url, config_file,
                                                             admin_token):
        s = Server(db_url, JOBQUEUE_CONFIG=config_file, DOCUMENT_MAX_BYTES=64 * 1024,
                   BATCH_MAX_BYTES=64 * 1024, JSON_MAX_BYTES=64 * 1024)
        try:
            api = Api(s.base, admin_token)
            boundary = "jqboundary"

            def body():
                yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"platform\"\r\n"
                       f"\r\nsim\r\n--{boundary}\r\nContent-Disposition: form-data; "
                       f"name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\n"
                       ).encode()
                yield from chunks(300 * 1024)  # under the 500 KB werkzeug keeps in memory
                yield f"\r\n--{boundary}--\r\n".encode()

            r = api.post("/api/documents", data=body(),
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            assert r.status_code == 413, (r.status_code, r.text[:300])
        finally:
            s.close()


# -- dashboard sessions ---------------------------------------------------------------------

def cookie_data(server, d: Dashboard) -> dict:
    serializer = server.app.session_interface.get_signing_serializer(server.app)
    return serializer.loads(d.http.cookies["session"])


class TestDashboardSessions:
    def test_the_cookie_carries_only_a_random_session_id(self, server, admin_token, sql):
        d = signed_in(server, admin_token)
        data = cookie_data(server, d)
        assert set(data) <= {"sid", "csrf", "_flashes"}, data
        assert hash_token(admin_token) not in json.dumps(data)
        (row,) = sql("SELECT * FROM jobqueue.web_sessions")
        assert row["owner"] == "ops" and row["revoked_at"] is None
        assert row["expires_at"] > row["created_at"] and row["last_seen_at"]
        assert row["secret_hash"] == hashlib.sha256(data["sid"].encode()).hexdigest()
        assert data["sid"] not in json.dumps(sql("SELECT * FROM jobqueue.web_sessions"),
                                             default=str)

    def test_database_read_access_gives_no_session(self, server, admin_token, sql):
        """What the database shows (token hashes, the signing secret if stored there) does
        not make a cookie the dashboard accepts."""
        signed_in(server, admin_token)
        (token,) = sql("SELECT token_hash FROM jobqueue.api_tokens")
        (session,) = sql("SELECT secret_hash FROM jobqueue.web_sessions")
        serializer = server.app.session_interface.get_signing_serializer(server.app)
        for forged in ({"token_hash": token["token_hash"]}, {"sid": session["secret_hash"]},
                       {"sid": token["token_hash"]}):
            thief = Dashboard(server.base)
            thief.http.cookies.set("session", serializer.dumps(forged))
            assert thief.get("/", allow_redirects=False).status_code == 302, forged

    def test_sign_out_ends_the_session_on_the_server(self, server, admin_token, sql):
        d = signed_in(server, admin_token)
        stolen = d.http.cookies["session"]
        d.get("/")
        assert d.post("/logout", allow_redirects=False).status_code == 302
        replay = Dashboard(server.base)
        replay.http.cookies.set("session", stolen)
        assert replay.get("/", allow_redirects=False).status_code == 302
        (row,) = sql("SELECT revoked_at FROM jobqueue.web_sessions")
        assert row["revoked_at"] is not None

    def test_owners_list_and_revoke_their_sessions(self, server, make_token, sql):
        ops = make_token("ops", ["admin"])
        first, second = signed_in(server, ops), signed_in(server, ops)
        api = Api(server.base, ops)
        listed = api.get("/api/sessions").json()["sessions"]
        assert len(listed) == 2 and {s["owner"] for s in listed} == {"ops"}
        assert all("secret" not in json.dumps(s) for s in listed)
        alice = Api(server.base, make_token("alice", ["read", "write"]))
        assert alice.get("/api/sessions").json()["sessions"] == []
        target = max(s["id"] for s in listed)
        assert alice.delete(f"/api/sessions/{target}").status_code == 404
        r = api.delete(f"/api/sessions/{target}")
        assert r.status_code == 200 and r.json()["revoked"] is True
        assert api.delete(f"/api/sessions/{target}").json()["revoked"] is False
        live = [d.get("/", allow_redirects=False).status_code for d in (first, second)]
        assert sorted(live) == [200, 302]

    def test_revoking_the_token_ends_its_sessions(self, server, admin_token, sql):
        d = signed_in(server, admin_token)
        assert d.get("/", allow_redirects=False).status_code == 200
        sql("UPDATE jobqueue.api_tokens SET revoked_at = now()")
        assert d.get("/", allow_redirects=False).status_code == 302

    def test_the_workers_maintenance_prunes_sessions_over_for_a_day(self, server, admin_token,
                                                                    sql, start_worker):
        """Expired or signed-out sessions stay a day (the owner's list shows them), then
        every worker's maintenance, whatever its queue, deletes them; live ones stay."""
        from jobqueue.tasks import Registry

        for _ in range(5):
            signed_in(server, admin_token)
        ids = [r["id"] for r in sql("SELECT id FROM jobqueue.web_sessions ORDER BY id")]
        sql("UPDATE jobqueue.web_sessions SET expires_at = now() - interval '25 hours' "
            "WHERE id = %s", (ids[0],))
        sql("UPDATE jobqueue.web_sessions SET revoked_at = now() - interval '25 hours' "
            "WHERE id = %s", (ids[1],))
        sql("UPDATE jobqueue.web_sessions SET expires_at = now() - interval '1 hour' "
            "WHERE id = %s", (ids[2],))
        sql("UPDATE jobqueue.web_sessions SET revoked_at = now() - interval '1 hour' "
            "WHERE id = %s", (ids[3],))
        start_worker(Registry(), queue="anything", maintenance_seconds=0.05)
        wait_until(lambda: len(sql("SELECT id FROM jobqueue.web_sessions")) == 3,
                   message="the expired sessions to be pruned")
        assert [r["id"] for r in sql("SELECT id FROM jobqueue.web_sessions ORDER BY id")] == \
            ids[2:]

    def test_the_session_prune_runs_only_as_the_maintenance_leader(self, sql):
        import asyncio

        import psycopg

        from jobqueue.worker import maintenance

        assert maintenance._prune_hooks["web_sessions"] is maintenance.prune_web_sessions
        token = sql("INSERT INTO jobqueue.api_tokens (token_hash, prefix, owner, scopes) "
                    "VALUES ('h', 'p', 'ops', '{admin}') RETURNING id")[0]["id"]
        sql("INSERT INTO jobqueue.web_sessions (secret_hash, token_id, owner, expires_at) "
            "VALUES ('s', %s, 'ops', now() - interval '2 days')", (token,))

        async def prune() -> int:
            async with await psycopg.AsyncConnection.connect(sql.url,
                                                             autocommit=True) as conn:
                return await maintenance.prune_web_sessions(conn)

        with psycopg.connect(sql.url) as leader:
            leader.execute("SELECT pg_advisory_xact_lock(hashtext('jobqueue.maintenance'))")
            assert asyncio.run(prune()) == 0
        assert asyncio.run(prune()) == 1


class TestSigningSecret:
    def test_the_app_refuses_a_database_secret_unless_in_development(self, db_url):
        with pytest.raises(RuntimeError, match="JOBQUEUE_SECRET_KEY"):
            create_app({"DATABASE_URL": db_url, "SECRET_KEY": None, "DEV": False})
        create_app({"DATABASE_URL": db_url, "SECRET_KEY": None, "DEV": True})
        create_app({"DATABASE_URL": db_url, "SECRET_KEY": "x" * 32, "DEV": False})

    def test_jobqueue_web_refuses_to_start_without_a_secret(self, db_url):
        env = {k: v for k, v in os.environ.items()
               if k not in ("JOBQUEUE_SECRET_KEY", "JOBQUEUE_DEV")}
        r = subprocess.run([sys.executable, "-m", "jobqueue", "web", "--port", "1"], cwd=ROOT,
                           env=env | {"DATABASE_URL": db_url}, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
        assert "JOBQUEUE_SECRET_KEY" in r.stderr and "JOBQUEUE_DEV" in r.stderr


# -- failed-authentication floods -----------------------------------------------------------

class TestAuthFailureLimit:
    def test_a_flood_of_bad_tokens_is_429_and_a_good_token_still_works(self, db_url,
                                                                         make_token):
        s = Server(db_url, AUTH_FAILURES_PER_MINUTE=20)
        try:
            bad = Api(s.base, "jq_" + "x" * 43)
            statuses = [bad.get("/api/queues") for _ in range(300)]
            codes = [r.status_code for r in statuses]
            assert codes[:20] == [401] * 20, codes[:25]
            assert codes[-200:] == [429] * 200, codes[-210:]
            refused = statuses[-1]
            assert int(refused.headers["Retry-After"]) >= 1
            assert refused.json()["error"]["code"] == "rate_limited"
            # The choice documented in the README: a valid token is never refused for the
            # failures of others behind the same address (a NAT, the platform's router).
            assert Api(s.base, make_token("alice")).get("/api/queues").status_code == 200
            # The dashboard's sign-in counts as well.
            d = Dashboard(s.base)
            assert d.sign_in("jq_" + "y" * 43).status_code == 429
        finally:
            s.close()

    def test_the_limit_is_per_address_and_shared_by_every_process(self, db_url):
        first = Server(db_url, AUTH_FAILURES_PER_MINUTE=5, TRUSTED_PROXIES=1)
        second = Server(db_url, AUTH_FAILURES_PER_MINUTE=5, TRUSTED_PROXIES=1)
        try:
            def bad(server, address):
                api = Api(server.base, "jq_" + "z" * 43)
                api.session.headers["X-Forwarded-For"] = address
                return api.get("/api/queues").status_code

            assert [bad(first, "203.0.113.7") for _ in range(5)] == [401] * 5
            assert bad(first, "203.0.113.7") == 429
            assert bad(second, "203.0.113.7") == 429  # the bucket lives in Postgres
            assert bad(second, "203.0.113.8") == 401  # another client is not affected
        finally:
            second.close()
            first.close()
