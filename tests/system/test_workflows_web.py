"""Workflows through the HTTP API (a real server): depends_on on POST /api/jobs, refs and
on_complete on POST /api/batches, duplicates in a batch's counts and results; bad input is a
4xx naming the field, never a 5xx, and another owner's jobs cannot be waited for."""

from __future__ import annotations

import json

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
def alice(server, make_token):
    return Api(server.base, make_token("alice"))


def post_job(api: Api, **body):
    return api.post("/api/jobs", json={"queue": "q", "kind": "k"} | body)


class TestDependsOn:
    def test_a_job_waits_and_says_so(self, alice):
        parent = post_job(alice).json()["id"]
        r = post_job(alice, depends_on=[parent], on_parent_failure="run")
        assert r.status_code == 201 and r.json()["state"] == "blocked"
        assert alice.get(f"/api/jobs/{r.json()['id']}").json()["state"] == "blocked"
        assert alice.post(f"/api/jobs/{parent}/cancel").json()["outcome"] == "cancelled"
        assert alice.get(f"/api/jobs/{r.json()['id']}").json()["state"] == "waiting"

    def test_another_owners_job_is_unknown(self, server, alice, make_token):
        parent = post_job(alice).json()["id"]
        bob = Api(server.base, make_token("bob"))
        r = post_job(bob, depends_on=[parent])
        assert r.status_code == 400 and r.json()["error"]["field"] == "depends_on"
        assert f"no job {parent}" in r.json()["error"]["message"]

    def test_any_depends_on_is_a_4xx_or_accepted_never_a_5xx(self, server, make_token):
        api = Api(server.base, make_token("alice"))

        @settings(max_examples=60, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(depends_on=st.one_of(
            st.none(), st.integers(), st.text(max_size=5), st.lists(
                st.one_of(st.integers(min_value=-5, max_value=10**19), st.booleans(),
                          st.text(max_size=3), st.none()), max_size=4)),
            policy=st.one_of(st.none(), st.text(max_size=6), st.integers()))
        def check(depends_on, policy):
            r = post_job(api, depends_on=depends_on, on_parent_failure=policy)
            assert r.status_code < 500, r.text
            if r.status_code >= 400:
                field = r.json()["error"]["field"]
                assert field.startswith(("depends_on", "on_parent_failure")), r.text

        check()


class TestBatches:
    def test_refs_on_complete_and_duplicates(self, alice):
        items = [{"prompt": "a", "ref": "a", "idempotency_key": "ka"},
                 {"prompt": "b", "depends_on": ["a"]}]
        body = {"platform": "sim", "items": items, "on_complete": {
            "kind": "summarise", "queue": "cb", "payload": {"report": 1}}}
        first = alice.post("/api/batches", json=body)
        assert first.status_code == 201, first.text
        assert first.json()["duplicates"] == 0 and first.json()["on_complete_job"]
        again = alice.post("/api/batches", json={"platform": "sim", "items": items[:1]})
        assert again.json()["duplicates"] == 1
        shown = alice.get(f"/api/batches/{again.json()['id']}").json()
        assert shown["duplicates"] == 1 and shown["finished"] == 1 and shown["total"] == 1
        results = alice.get(f"/api/batches/{again.json()['id']}/results").json()["items"]
        assert [r["state"] for r in results] == ["duplicate"]
        counts = alice.get(f"/api/batches/{first.json()['id']}").json()
        assert (counts["waiting"], counts["blocked"]) == (1, 1)
        assert alice.get(f"/api/jobs/{first.json()['on_complete_job']}").json()[
            "state"] == "blocked"

    @pytest.mark.parametrize(("body", "field"), [
        ({"items": [{"prompt": "a", "depends_on": ["nope"]}]}, "items[0].depends_on[0]"),
        ({"items": [{"prompt": "a", "ref": "x"}, {"prompt": "b", "ref": "x"}]}, "items[1].ref"),
        ({"items": [{"prompt": "a", "on_parent_failure": "maybe"}]},
         "items[0].on_parent_failure"),
        ({"items": [{"prompt": "a"}], "on_complete": "summarise"}, "on_complete"),
        ({"items": [{"prompt": "a"}], "on_complete": {"queue": "cb"}}, "on_complete.kind"),
        ({"items": [{"prompt": "a"}], "on_complete": {"kind": "k", "colour": 1}},
         "on_complete.colour"),
    ])
    def test_bad_workflow_fields_are_refused_and_nothing_is_enqueued(self, alice, body, field,
                                                                     sql):
        r = alice.post("/api/batches", json={"platform": "sim"} | body)
        assert 400 <= r.status_code < 500, r.text
        assert r.json()["error"]["field"] == field, r.text
        assert sql("SELECT count(*) AS n FROM jobqueue.all_jobs") == [{"n": 0}]


def test_the_openapi_document_names_the_blocked_state(alice):
    doc = alice.get("/api/openapi.json").json()
    assert "blocked" in json.dumps(doc)
