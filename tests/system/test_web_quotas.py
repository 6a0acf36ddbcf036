"""Quotas and rate limits over real HTTP: 429 with Retry-After and the quota's X-RateLimit-*
headers, X-Quota-* on accepted work, batches refused whole or admitted in part, /api/quotas,
and reads (GET, ?wait, SSE) that a spent write budget or quota never blocks."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.web import Api, Server


@pytest.fixture
def server(db_url, config_file):
    s = Server(db_url, JOBQUEUE_CONFIG=config_file)
    yield s
    s.close()


@pytest.fixture
def admin(server, make_token):
    return Api(server.base, make_token("root", ["admin"]))


@pytest.fixture
def alice(server, make_token):
    return Api(server.base, make_token("alice"))


def put_quota(admin, scope, name, **budgets):
    r = admin.put(f"/api/quotas/{scope}/{name}", json=budgets)
    assert r.status_code == 200, r.text
    return r.json()


class TestJobQuota:
    def test_over_quota_is_429_with_the_quotas_headers(self, admin, alice, sql):
        put_quota(admin, "kind", "lesson", jobs="3/min")
        seen = []
        for _ in range(3):
            r = alice.post("/api/jobs", json={"queue": "q", "kind": "lesson"})
            assert r.status_code == 201, r.text
            seen.append(int(r.headers["X-Quota-Remaining"]))
            assert r.headers["X-Quota"] == "kind:lesson" and r.headers["X-Quota-Limit"] == "3"
        assert seen == [2, 1, 0]
        r = alice.post("/api/jobs", json={"queue": "q", "kind": "lesson"})
        assert r.status_code == 429
        error = r.json()["error"]
        assert error["code"] == "quota_exceeded" and error["quota"] == "kind:lesson"
        assert 19 <= int(r.headers["Retry-After"]) <= 21  # one job refills in 20 s
        assert r.headers["X-RateLimit-Limit"] == "3"
        assert r.headers["X-RateLimit-Remaining"] == "0"
        assert 55 <= int(r.headers["X-RateLimit-Reset"]) <= 60
        assert r.headers["X-RateLimit-Policy"] == "3;w=60"
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs")[0]["n"] == 3

    def test_a_spent_quota_never_blocks_reads(self, admin, alice):
        """GET, ?wait and SSE still answer for the owner whose quota is spent."""
        put_quota(admin, "kind", "lesson", jobs="1/hour")
        job_id = alice.post("/api/jobs", json={"queue": "q", "kind": "lesson"}).json()["id"]
        assert alice.post("/api/jobs", json={"queue": "q", "kind": "lesson"}).status_code == 429
        assert alice.get(f"/api/jobs/{job_id}").json()["state"] == "waiting"
        assert alice.get(f"/api/jobs/{job_id}?wait=0.1").status_code == 200
        with alice.session.get(f"{alice.base}/api/jobs/{job_id}/events", stream=True,
                               timeout=10) as events:
            assert events.status_code == 200
            assert next(events.iter_lines()).startswith(b"event: state")
        usage = alice.get("/api/quotas").json()["usage"]
        assert usage == [{"quota": "kind:lesson", "budget": "jobs", "limit": 1,
                          "per": "1/hour", "remaining": 0, "reset_seconds": usage[0][
                              "reset_seconds"]}]
        assert 3590 <= usage[0]["reset_seconds"] <= 3600


class TestWriteBucket:
    def test_a_client_over_its_write_rate_can_still_get_and_poll(self, server, sql):
        """A token with 2 writes a minute: the third POST is 429, and GET, ?wait and SSE
        still answer, charged to the read bucket."""
        from jobqueue import tokens

        with __import__("psycopg").connect(sql.url, autocommit=True,
                                           row_factory=__import__("psycopg").rows.dict_row) as c:
            token, _ = tokens.create(c, "bob", ["read", "write"], rate_limit=100,
                                     write_rate_limit=2)
        bob = Api(server.base, token)
        ids = [bob.post("/api/jobs", json={"queue": "q", "kind": "k"}) for _ in range(2)]
        assert [r.status_code for r in ids] == [201, 201]
        assert ids[1].headers["X-RateLimit-Limit"] == "2"
        refused = bob.post("/api/jobs", json={"queue": "q", "kind": "k"})
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        assert "write" in refused.json()["error"]["message"]
        job_id = ids[0].json()["id"]
        for _ in range(5):
            r = bob.get(f"/api/jobs/{job_id}?wait=0.01")
            assert r.status_code == 200 and r.headers["X-RateLimit-Limit"] == "100"
        with bob.session.get(f"{bob.base}/api/jobs/{job_id}/events", stream=True,
                             timeout=10) as events:
            assert events.status_code == 200


class TestBatchQuota:
    ITEMS = [{"prompt": f"p{i}"} for i in range(5)]

    def test_a_batch_over_quota_is_refused_whole(self, admin, alice, sql):
        put_quota(admin, "queue", "sim", jobs="3/hour")
        r = alice.post("/api/batches", json={"platform": "sim", "items": self.ITEMS})
        assert r.status_code == 429 and r.headers["X-RateLimit-Limit"] == "3"
        assert "partial" in r.json()["error"]["message"]
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs")[0]["n"] == 0

    def test_partial_admits_up_to_the_quota(self, admin, alice, sql):
        put_quota(admin, "queue", "sim", jobs="3/hour")
        r = alice.post("/api/batches?partial=true", json={"platform": "sim", "items": self.ITEMS})
        assert r.status_code == 201, r.text
        body = r.json()
        assert (body["total"], body["refused"]) == (3, 2) and body["retry_after"] > 1000
        assert r.headers["X-Quota-Remaining"] == "0"
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs")[0]["n"] == 3
        r = alice.post("/api/batches?partial=true", json={"platform": "sim", "items": self.ITEMS})
        assert r.status_code == 429  # not even one fits: refused, as a whole batch is

    def test_partial_must_be_a_boolean(self, alice):
        r = alice.post("/api/batches?partial=maybe", json={"platform": "sim", "items": self.ITEMS})
        assert r.status_code == 400 and r.json()["error"]["field"] == "partial"


class TestQuotaRoutes:
    def test_admin_sets_lists_and_removes(self, admin, alice):
        assert put_quota(admin, "queue", "sim", jobs="10/min", tokens="5000/hour") == {
            "scope": "queue", "name": "sim", "jobs": "10/min", "tokens": "5000/hour",
            "source": "api"}
        listed = alice.get("/api/quotas").json()["quotas"]
        assert [(x["name"], x["jobs"]) for x in listed] == [("sim", "10/min")]
        assert alice.put("/api/quotas/queue/sim", json={"jobs": "1/min"}).status_code == 403
        assert admin.delete("/api/quotas/queue/sim").json()["removed"]
        assert admin.delete("/api/quotas/queue/sim").status_code == 404
        assert admin.put("/api/quotas/owner/x", json={"jobs": "1/min"}).status_code == 404

    @pytest.mark.parametrize("body, field", [
        ({"jobs": "ten"}, "jobs"), ({"jobs": 10}, "jobs"), ({}, "jobs"),
        ({"jobs": "1/min", "burst": 2}, "burst"), ([1], "body"), ("x", "body")])
    def test_bad_bodies_are_400_naming_the_field(self, admin, body, field):
        r = admin.put("/api/quotas/kind/x", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["field"] == field

    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=st.dictionaries(st.sampled_from(["jobs", "tokens", "x"]),
                                st.one_of(st.text(max_size=12), st.integers(), st.none())))
    def test_any_body_is_a_2xx_or_a_4xx(self, admin, body):
        r = admin.put("/api/quotas/kind/fuzz", json=body)
        assert r.status_code in (200, 400), r.text

    def test_openapi_describes_the_quota_routes(self, alice):
        paths = alice.get("/api/openapi.json").json()["paths"]
        assert set(paths["/quotas/{scope}/{name}"]) == {"put", "delete"}
        doc = alice.get("/api/openapi.json").json()
        body = paths["/quotas/{scope}/{name}"]["put"]["requestBody"]
        ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert set(doc["components"]["schemas"][ref]["properties"]) == {"jobs", "tokens"}
