"""Campaigns over real HTTP on loopback: the API (save, list, read, run, report as JSON and
CSV, remove; owners apart; bad bodies and queries 4xx naming the field, never 5xx) and the
dashboard pages (list, report with inline SVG charts and no external resources)."""

from __future__ import annotations

from datetime import date

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from jobqueue.campaigns import store
from tests.support.helpers import record_answer
from tests.support.web import Api, Dashboard, Server


@pytest.fixture
def config(sim, tmp_path):
    path = tmp_path / "jobqueue.toml"
    path.write_text("".join(
        f'[platforms.{name}]\nbase_url = "{sim.base_url}"\nmodel = "{model}"\n'
        'api_key_env = "SIM_KEY_A"\nmax_tokens = 300\ntimeout = 5\n'
        for name, model in (("openai", "sim-main"), ("gemini", "sim-other"))))
    return str(path)


@pytest.fixture
def server(db_url, config):
    s = Server(db_url, JOBQUEUE_CONFIG=config, JSON_MAX_BYTES=64 * 1024)
    yield s
    s.close()


@pytest.fixture
def alice(server, make_token):
    return Api(server.base, make_token("alice"))


@pytest.fixture
def bob(server, make_token):
    return Api(server.base, make_token("bob"))


@pytest.fixture
def admin(server, make_token) -> Dashboard:
    d = Dashboard(server.base)
    assert d.sign_in(make_token("ops", ["admin"])).status_code == 302
    d.get("/")
    return d


CRM = {"name": "crm", "platforms": ["openai", "gemini"], "samples": 1,
       "prompts": ["What is the best CRM?"],
       "brands": [{"name": "Acme", "aliases": ["Acme CRM"]}], "competitors": ["Globex"]}


def add_answers(db_url, campaign_id: int):
    """Three analysed answers on 2 March (two on openai, one on gemini)."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        campaign = store.get(conn, campaign_id=campaign_id)
    for job_id, platform, text in ((1, "openai", "Acme is great, Globex too."),
                                   (2, "openai", "Globex. https://g2.com/a"),
                                   (3, "gemini", "Nothing.")):
        record_answer(db_url, campaign, job_id, platform, date(2026, 3, 2), text)


class TestApi:
    def test_save_list_read_run_report_and_remove(self, alice, bob, db_url, sql):
        r = alice.post("/api/campaigns", json=CRM)
        assert r.status_code == 201, r.text
        saved = r.json()
        assert saved["owner"] == "alice" and saved["platforms"] == ["openai", "gemini"]
        assert alice.post("/api/campaigns", json=CRM).status_code == 409
        assert alice.put("/api/campaigns/crm", json={k: v for k, v in CRM.items()
                                                     if k != "name"} | {"samples": 2}
                         ).status_code == 200
        assert [c["name"] for c in alice.get("/api/campaigns").json()["campaigns"]] == ["crm"]
        assert bob.get("/api/campaigns").json()["campaigns"] == []
        assert bob.get("/api/campaigns/crm").status_code == 404
        run = alice.post("/api/campaigns/crm/run")
        assert run.status_code == 201, run.text
        jobs = sql("SELECT owner, metadata FROM jobqueue.jobs WHERE batch_id = %s",
                   (run.json()["batch_id"],))
        assert len(jobs) == 4 and {j["owner"] for j in jobs} == {"alice"}
        shown = alice.get("/api/campaigns/crm").json()
        assert shown["samples"] == 2 and [x["batch_id"] for x in shown["runs"]] == [
            run.json()["batch_id"]]

        add_answers(db_url, saved["id"])
        rep = alice.get("/api/campaigns/crm/report?from=2026-03-01&to=2026-03-02")
        assert rep.status_code == 200, rep.text
        t = {(x["platform"], x["brand"]): x for x in rep.json()["totals"]}
        assert t[("openai", "Acme")]["visibility"] == 0.5
        assert t[("openai", "Globex")]["share_of_voice"] == pytest.approx(2 / 3, abs=1e-4)
        assert t[("", "Acme")]["visibility"] == pytest.approx(1 / 3, abs=1e-4)
        assert rep.json()["domains"][0]["domain"] == "g2.com"
        by_id = alice.get(f"/api/campaigns/{saved['id']}/report?from=2026-03-01&to=2026-03-02")
        assert by_id.status_code == 200 and by_id.json() == rep.json()  # <name> or <id>
        csv = alice.get("/api/campaigns/crm/report?from=2026-03-01&to=2026-03-02&format=csv")
        assert csv.headers["Content-Type"].startswith("text/csv")
        assert "2026-03-01..2026-03-02,,openai,Acme,2,1,0.5," in csv.text

        assert bob.delete("/api/campaigns/crm").status_code == 404
        assert alice.delete("/api/campaigns/crm").json() == {"name": "crm", "removed": True}
        assert alice.get("/api/campaigns/crm").status_code == 404

    @pytest.mark.parametrize("changes, field, status", [
        ({"platforms": ["nope"]}, "platforms", 422),
        ({"brands": []}, "brands", 422),
        ({"schedule": "every day"}, "schedule.cron", 422),
        ({"samples": 0}, "samples", 400),
        ({"name": "no spaces"}, "name", 400),
        ({"colour": "red"}, "colour", 400),
        ({"owner": "bob"}, "owner", 403),
    ])
    def test_bad_bodies_are_refused_naming_the_field(self, alice, changes, field, status):
        r = alice.post("/api/campaigns", json=CRM | changes)
        assert r.status_code == status, r.text
        assert r.json()["error"]["field"] == field, r.text

    @pytest.mark.parametrize("query, field", [
        ("from=2026-13-01", "from"), ("to=yesterday", "to"),
        ("from=2026-03-05&to=2026-03-01", "from"), ("format=xml", "format"),
        ("from=9999-12-31", "from"), ("to=0001-01-01", "to"),
        ("from=0001-01-01&to=0001-01-02", "from")])
    def test_bad_report_queries_are_400_naming_the_field(self, alice, query, field):
        assert alice.post("/api/campaigns", json=CRM).status_code == 201
        r = alice.get(f"/api/campaigns/crm/report?{query}")
        assert r.status_code == 400, r.text
        assert r.json()["error"]["field"] == field, r.text

    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=st.dictionaries(st.sampled_from([*CRM, "schedule", "extract", "x"]),
                                st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                          st.lists(st.text(max_size=5), max_size=3),
                                          st.dictionaries(st.text(max_size=5),
                                                          st.text(max_size=5), max_size=2)),
                                max_size=6))
    def test_hostile_bodies_are_never_a_5xx(self, alice, body):
        r = alice.post("/api/campaigns", json=CRM | body)
        assert r.status_code < 500, r.text


class TestDashboard:
    def test_list_and_report_pages_with_inline_charts(self, admin, alice, db_url):
        saved = alice.post("/api/campaigns", json=CRM).json()
        add_answers(db_url, saved["id"])
        page = admin.get("/campaigns")
        assert page.status_code == 200 and 'href="/campaigns/crm"' in page.text
        page = admin.get("/campaigns/crm?from=2026-03-01&to=2026-03-02")
        assert page.status_code == 200, page.text
        assert "<svg" in page.text and "<polyline" in page.text and "<rect" in page.text
        assert "50.0%" in page.text  # Acme's visibility on openai
        assert "g2.com" in page.text
        assert "http://" not in page.text.replace("http://www.w3.org", "") \
            or "cdn" not in page.text.lower()
        assert admin.get("/campaigns/nope").status_code == 404
        assert admin.get("/campaigns/crm?from=bad").status_code == 400
        for query in ("from=9999-12-31", "to=0001-01-01", "from=0001-01-01&to=0001-01-02"):
            assert admin.get(f"/campaigns/crm?{query}").status_code == 400, query
        # Names no campaign can have: a NUL (Postgres refuses it), '²' (isdigit, not an int).
        for name in ("%00", "a%00b", "%C2%B2"):
            assert admin.get(f"/campaigns/{name}").status_code == 404, name

    def test_names_no_campaign_can_have_are_404_in_the_api(self, alice):
        for name in ("%00", "a%00b", "%C2%B2", "%C2%B2%C2%B2"):
            r = alice.get(f"/api/campaigns/{name}")
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", name


    def test_a_nul_in_any_name_of_a_path_is_404_not_500(self, alice, admin):
        """The router refuses a NUL in every <name> and <path:...> (web.TextConverter):
        Postgres cannot take one, and a schedule's name carried it there as a 500."""
        api = [("get", "/api/schedules/a%00b"), ("get", "/api/schedules/a%00b/runs"),
               ("post", "/api/schedules/a%00b/run"), ("delete", "/api/schedules/a%00b"),
               ("get", "/api/queues/a%00b/settings"), ("post", "/api/queues/a%00b/pause"),
               ("delete", "/api/quotas/queue/a%00b"), ("get", "/api/campaigns/a%00b")]
        for method, path in api:
            r = getattr(alice, method)(path)
            assert r.status_code == 404, (path, r.status_code)
        for path in ("/schedules/a%00b", "/campaigns/a%00b"):
            assert admin.get(path).status_code == 404, path


class TestScheduled:
    def test_a_scheduled_campaign_runs_from_its_schedule_in_the_api_and_dashboard(
            self, alice, admin, sql):
        """Its schedule `campaign:NAME` is listed with the others; run now (API or
        campaigns/run) records a manual run whose batch is the campaign's."""
        r = alice.post("/api/campaigns", json=CRM | {"schedule": {"cron": "0 6 * * *",
                                                                   "timezone": "UTC"}})
        assert r.status_code == 201 and r.json()["cron"] == "0 6 * * *"
        listed = alice.get("/api/schedules").json()["schedules"]
        assert [s["name"] for s in listed] == ["campaign:crm"]
        run = alice.post("/api/schedules/campaign:crm/run")
        assert run.status_code == 201 and run.json()["decision"] == "manual", run.text
        again = alice.post("/api/campaigns/crm/run")
        assert again.status_code == 201 and again.json()["run_id"] > run.json()["id"]
        names = [b["name"] for b in sql("SELECT name FROM jobqueue.batches ORDER BY id")]
        assert len(names) == 2 and all(n.startswith("campaign crm @ ") for n in names)
        page = admin.get("/schedules/campaign:crm")
        assert page.status_code == 200 and "a run of campaign" in page.text
        assert admin.get("/schedules").status_code == 200
