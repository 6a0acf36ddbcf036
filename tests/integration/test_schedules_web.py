"""Schedules over real HTTP on loopback: the API (save, list, read with runs, pause, resume,
run now, remove; owners apart; bad bodies 4xx naming the field, never 5xx) and the dashboard
pages and forms (admin session, CSRF)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.web import Api, Dashboard, Server


@pytest.fixture
def server(db_url, config_file):
    s = Server(db_url, JOBQUEUE_CONFIG=config_file, JSON_MAX_BYTES=64 * 1024)
    yield s
    s.close()


@pytest.fixture
def alice(server, make_token):
    return Api(server.base, make_token("alice"))


@pytest.fixture
def admin(server, make_token) -> Dashboard:
    d = Dashboard(server.base)
    assert d.sign_in(make_token("ops", ["admin"])).status_code == 302
    d.get("/")
    return d


DAILY = {"name": "daily", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "kind": "report",
         "payload": {"n": 1}}


class TestApi:
    def test_save_list_read_pause_run_and_remove(self, alice, sql):
        r = alice.post("/api/schedules", json=DAILY)
        assert r.status_code == 201, r.text
        saved = r.json()
        assert saved["owner"] == "alice" and len(saved["next_fires"]) == 5
        assert saved["next_fires"][0].endswith(("00:30:00+00:00", "01:30:00+00:00"))
        assert alice.post("/api/schedules", json=DAILY).status_code == 409
        assert alice.put("/api/schedules/daily", json=DAILY | {"name": None} and
                         {k: v for k, v in DAILY.items() if k != "name"}).status_code == 200
        assert [s["name"] for s in alice.get("/api/schedules").json()["schedules"]] == ["daily"]
        assert alice.post("/api/schedules/daily/pause").json()["paused"] is True
        assert alice.post("/api/schedules/daily/resume").json()["paused"] is False
        run = alice.post("/api/schedules/daily/run")
        assert run.status_code == 201 and run.json()["decision"] == "manual"
        job = sql("SELECT owner, kind, metadata FROM jobqueue.jobs WHERE id = %s",
                  (run.json()["job_id"],))[0]
        assert job["owner"] == "alice" and job["metadata"]["schedule"] == "daily"
        shown = alice.get("/api/schedules/daily").json()
        assert shown["last_decision"] == "manual" and shown["last_outcome"] == "waiting"
        assert [r["job_id"] for r in shown["runs"]] == [run.json()["job_id"]]
        assert alice.get("/api/schedules/daily/runs?limit=1").json()["runs"][0]["id"] == \
            run.json()["id"]
        assert alice.delete("/api/schedules/daily").status_code == 200
        assert alice.get("/api/schedules/daily").status_code == 404

    def test_owners_see_and_change_only_their_own(self, alice, server, make_token):
        bob = Api(server.base, make_token("bob"))
        assert alice.post("/api/schedules", json=DAILY).status_code == 201
        assert bob.get("/api/schedules").json()["schedules"] == []
        for method, path in (("get", "/api/schedules/daily"), ("post", "/api/schedules/daily/run"),
                             ("post", "/api/schedules/daily/pause"),
                             ("delete", "/api/schedules/daily")):
            assert getattr(bob, method)(path).status_code == 404, path
        assert bob.post("/api/schedules", json=DAILY).status_code == 409
        r = bob.post("/api/schedules", json=DAILY | {"name": "b", "owner": "alice"})
        assert r.status_code == 403 and r.json()["error"]["field"] == "owner"
        assert bob.get("/api/schedules/daily/runs").status_code == 404

    def test_a_batch_schedule_from_the_file_text(self, alice):
        body = {"name": "prompts", "cron": "@daily", "platform": "sim", "format": "csv",
                "batch": "brand\nacme\nglobex\n", "template": "What is {brand}?"}
        r = alice.post("/api/schedules", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["target"]["rows"] == 2
        run = alice.post("/api/schedules/prompts/run").json()
        assert run["batch_id"] and run["decision"] == "manual"
        bad = alice.post("/api/schedules", json=body | {"name": "p2", "batch": "nope\n\n"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "batch_file"

    def test_run_now_with_a_broken_platform_config_is_said_not_a_500(self, alice, admin,
                                                                     config_file):
        body = {"name": "prompts", "cron": "@daily", "platform": "sim", "format": "csv",
                "batch": "brand\nacme\n", "template": "What is {brand}?"}
        assert alice.post("/api/schedules", json=body).status_code == 201
        Path(config_file).write_text("[platforms.sim\n")  # not TOML any more
        r = admin.post("/schedules/prompts/run", {"back": "one"})
        assert r.status_code == 200 and "no usable platform config" in r.text
        r = alice.post("/api/schedules/prompts/run")
        assert r.status_code == 422 and r.json()["error"]["field"] == "platform"

    def test_campaign_schedule_names_are_not_for_the_taking(self, alice):
        """`campaign:NAME` is a campaign's own schedule: a user's schedule of that name would
        be read, run and replaced as another owner's campaign schedule."""
        r = alice.post("/api/schedules", json={"name": "campaign:crm", "cron": "@daily",
                                               "kind": "k"})
        assert r.status_code == 422 and r.json()["error"]["field"] == "name", r.text

    @pytest.mark.parametrize("body, status, field", [
        ({"name": "x", "cron": "61 * * * *", "kind": "k"}, 422, "cron"),
        ({"name": "x", "cron": "@daily", "kind": "k", "timezone": "Nowhere"}, 422, "timezone"),
        ({"name": "x", "cron": "@daily"}, 422, "kind"),
        ({"name": "x", "cron": "@daily", "kind": "k", "misfire": "often"}, 400, "misfire"),
        ({"name": "x", "cron": "@daily", "kind": "k", "max_lateness": 0}, 400, "max_lateness"),
        ({"name": "x", "cron": "@daily", "kind": "k", "wat": 1}, 400, "wat"),
        ({"name": "x y", "cron": "@daily", "kind": "k"}, 400, "name"),
        ({"name": "x", "cron": "@daily", "platform": "nope"}, 422, "platform"),
        ({"cron": "@daily", "kind": "k"}, 400, "name"),
    ])
    def test_bad_bodies_are_4xx_naming_the_field(self, alice, body, status, field):
        r = alice.post("/api/schedules", json=body)
        assert r.status_code == status, r.text
        assert r.json()["error"]["field"] == field

    @pytest.mark.parametrize("text", ["\ud800\n", "prompt\nhi\x00\n", '{"prompt": "a\\u0000"}'])
    def test_batch_text_postgres_cannot_store_is_refused(self, alice, text):
        r = alice.post("/api/schedules", json={"name": "b", "cron": "@daily",
                                               "platform": "sim", "batch": text})
        assert r.status_code in (400, 422), r.text

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.dictionaries(
        st.sampled_from(["name", "cron", "timezone", "kind", "queue", "payload", "misfire",
                         "max_lateness", "priority", "batch", "platform", "format",
                         "template", "metadata", "paused"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
                  st.sampled_from(["@daily", "sim", "csv", "Europe/Berlin", "{x}",
                                   "prompt\nhi\n", "k"]),
                  st.lists(st.integers(), max_size=3),
                  st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))))
    def test_any_body_is_answered_without_a_server_error(self, alice, body):
        r = alice.post("/api/schedules", data=json.dumps(body, allow_nan=True),
                       headers={"Content-Type": "application/json"})
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            assert r.json()["error"]["message"]


class TestDashboard:
    def test_the_list_shows_next_fires_last_run_and_state_and_its_forms_act(self, admin, alice):
        alice.post("/api/schedules", json=DAILY)
        html = admin.page("/schedules")
        assert "daily" in html and "30 2 * * *" in html and "never" in html
        assert "active" in html
        admin.post("/schedules/daily/pause")
        html = admin.page("/schedules")
        assert "Resume" in html and "paused" in html
        r = admin.post("/schedules/daily/run", {"back": "one"})
        assert "run 1 manual: job" in r.text
        page = admin.page("/schedules/daily")
        assert "manual" in page and "job " in page and "Paused." in page
        assert admin.post("/schedules/nope/run").status_code == 404
