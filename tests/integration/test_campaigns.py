"""AI-visibility campaigns against a real Postgres: the model (checks naming the field, save
with its schedule, remove), a run (one fan-out batch + an extract job per answer, a
schedule fire running it), extract into the rollup (once per answer), the report's numbers on
a hand-computed dataset, and a campaign budget pausing the campaign's jobs."""

from __future__ import annotations

from datetime import UTC, date, datetime

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from jobqueue.campaigns import extract, model, report, runs, store
from jobqueue.db import store as jobs_store
from jobqueue.llm import costs
from jobqueue.llm.platforms import Platform
from jobqueue.llm.prices import Price, PriceTable
from jobqueue.schedules import tick
from tests.support.helpers import platform, record_answer, wait_until

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def platforms_of(sim=None) -> dict[str, Platform]:
    base = sim.base_url if sim else "http://127.0.0.1:9/v1"
    return {name: Platform(name=name, base_url=base, model=m, api_key_env=("SIM_KEY_A",),
                           max_tokens=300, max_attempts=3)
            for name, m in (("openai", "sim-main"), ("gemini", "sim-other"))}


FIELDS = {"name": "crm", "platforms": ["openai", "gemini"], "samples": 2,
          "prompts": ["What is the best CRM?", {"prompt": "Which CRM do you recommend?",
                                                "metadata": {"topic": "startups"}}],
          "brands": [{"name": "Acme", "aliases": ["Acme CRM"]}],
          "competitors": ["Globex", {"name": "Initech", "aliases": ["Initech Cloud"]}]}


@pytest.fixture
def conn(db_url):
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        yield c


def save(conn, **changes) -> dict:
    spec = model.build(FIELDS | changes, platforms=platforms_of())
    assert store.save(conn, spec, NOW, replace=True) in ("created", "updated")
    return store.get(conn, spec.name)


class TestModel:
    def test_a_replace_limited_to_one_owner_leaves_another_owners_campaign_alone(self, conn):
        """The owner test is in the upsert itself: bob's replace of a name alice saved (as
        when alice's save lands between the API's check and bob's write) changes nothing."""
        save(conn, owner="alice", schedule={"cron": "0 6 * * *"})
        bobs = model.build(FIELDS | {"owner": "bob", "samples": 1}, platforms=platforms_of())
        assert store.save(conn, bobs, NOW, replace=True, only_owner="bob") is None
        kept = store.get(conn, "crm")
        assert kept["owner"] == "alice" and kept["samples"] == 2 and kept["cron"] == "0 6 * * *"
        assert store.save(conn, model.build(FIELDS | {"owner": "alice", "samples": 1,
                                                      "schedule": {"cron": "0 6 * * *"}},
                                            platforms=platforms_of()),
                          NOW, replace=True, only_owner="alice") == "updated"
        assert store.get(conn, "crm")["samples"] == 1
        assert not store.remove(conn, "crm", owner="bob")  # nor removed by another owner
        assert store.get(conn, "crm")["cron"] == "0 6 * * *"
        assert store.remove(conn, "crm", owner="alice") and store.get(conn, "crm") is None
        assert conn.execute("SELECT count(*) AS n FROM jobqueue.schedules").fetchone()["n"] == 0

    def test_a_campaign_is_saved_listed_and_removed_with_its_schedule(self, conn):
        """Saved with a cron, the campaign has a schedule `campaign:NAME` firing it;
        replaced without one, the schedule goes; removing it removes the rest."""
        found = save(conn, schedule={"cron": "0 6 * * *", "timezone": "Europe/Paris"})
        assert found["platforms"] == ["openai", "gemini"] and found["samples"] == 2
        assert [b["name"] for b in found["brands"]] == ["Acme", "Globex", "Initech"]
        assert [b["competitor"] for b in found["brands"]] == [False, True, True]
        assert found["prompts"][1] == {"messages": [{"role": "user", "content":
                                                     "Which CRM do you recommend?"}],
                                       "metadata": {"topic": "startups"}}
        assert found["cron"] == "0 6 * * *" and found["timezone"] == "Europe/Paris"
        sched = conn.execute("SELECT target, owner FROM jobqueue.schedules "
                             "WHERE name = 'campaign:crm'").fetchone()
        assert sched["target"] == {"type": "campaign", "campaign": "crm"}
        assert store.save(conn, model.build(FIELDS, platforms=platforms_of()), NOW) is None
        save(conn)  # no schedule now
        assert store.get(conn, "crm")["cron"] is None
        assert conn.execute("SELECT count(*) AS n FROM jobqueue.schedules").fetchone()["n"] == 0
        assert [r["name"] for r in store.listing(conn)] == ["crm"]
        assert store.remove(conn, "crm") and store.get(conn, "crm") is None
        assert not store.remove(conn, "crm")

    @pytest.mark.parametrize("changes, field", [
        ({"name": "bad name"}, "name"),
        ({"platforms": ["openai", "nope"]}, "platforms"),
        ({"platforms": []}, "platforms"),
        ({"samples": 0}, "samples"),
        ({"samples": True}, "samples"),
        ({"prompts": []}, "prompts"),
        ({"prompts": ["ok", ""]}, "prompts[1]"),
        ({"prompts": [{"prompt": "x", "extra": 1}]}, "prompts[0].extra"),
        ({"brands": []}, "brands"),
        ({"brands": [{"name": "Acme", "aliases": ["globex"]}]}, "competitors[0].name"),
        ({"brands": [{"name": "Acme", "aliases": ["ACME"]}]}, "brands[0].aliases[0]"),
        ({"competitors": [{"name": "X", "colour": "red"}]}, "competitors[0].colour"),
        ({"schedule": "not a cron"}, "schedule.cron"),
        ({"schedule": {"cron": "@daily", "timezone": "Mars/Olympus"}}, "schedule.timezone"),
        ({"extract": {"platform": "nope"}}, "extract.platform"),
        ({"colour": "red"}, "colour"),
    ])
    def test_bad_fields_are_refused_naming_the_field(self, changes, field):
        with pytest.raises(model.InvalidCampaign) as caught:
            model.build(FIELDS | changes, platforms=platforms_of())
        assert caught.value.field == field, str(caught.value)

    def test_a_prompt_file_is_read_and_stored(self, tmp_path):
        (tmp_path / "p.csv").write_text("product,team\nCRM,sales\nhelpdesk,support\n")
        fields = {k: v for k, v in FIELDS.items() if k != "prompts"} | {
            "prompt_file": "p.csv", "template": "Which {product} is best for {team}?"}
        spec = model.build(fields, base_dir=str(tmp_path), platforms=platforms_of())
        assert [p["messages"][0]["content"] for p in spec.prompts] == [
            "Which CRM is best for sales?", "Which helpdesk is best for support?"]
        assert spec.prompt_source == str(tmp_path / "p.csv")
        with pytest.raises(model.InvalidCampaign, match=r"^prompt_file: "):
            model.build(fields | {"template": "{missing}"}, base_dir=str(tmp_path),
                        platforms=platforms_of())


class TestRun:
    def test_a_run_submits_one_fanout_batch_and_an_extract_job_per_answer(self, conn):
        """2 prompts x 2 platforms x 2 samples: 8 chat jobs in one batch named after the
        campaign, each naming the campaign; 8 blocked extract jobs, each on its answer."""
        found = save(conn)
        run = runs.run(conn, found, NOW, platforms=platforms_of())
        assert run["jobs"] == 8 and run["extracts"] == 8
        batch = conn.execute("SELECT name, metadata FROM jobqueue.batches WHERE id = %s",
                             (run["batch_id"],)).fetchone()
        assert batch["name"] == "campaign crm @ 2026-03-10 12:00Z"
        assert batch["metadata"]["campaign"] == "crm"
        jobs = conn.execute("SELECT id, queue, payload, metadata FROM jobqueue.jobs "
                            "WHERE batch_id = %s ORDER BY id", (run["batch_id"],)).fetchall()
        assert [j["queue"] for j in jobs] == ["openai", "openai", "gemini", "gemini"] * 2
        assert all(j["metadata"]["campaign"] == "crm" for j in jobs)
        assert [j["payload"]["sample"] for j in jobs] == [1, 2] * 4
        assert jobs[4]["metadata"] | {"sample": 0} == {"topic": "startups", "campaign": "crm",
                                                       "prompt": 1, "sample": 0}
        blocked = conn.execute("SELECT kind, payload, metadata FROM jobqueue.blocked "
                               "ORDER BY id").fetchall()
        assert [b["payload"]["answer"] for b in blocked] == [j["id"] for j in jobs]
        assert {b["kind"] for b in blocked} == {"campaign.extract"}
        assert all(b["payload"]["campaign_id"] == found["id"] for b in blocked)
        assert [r["batch_id"] for r in store.runs(conn, "crm")] == [run["batch_id"]]

    def test_a_runs_extracts_count_as_ended_once_cancelled(self, conn):
        """What `jobqueue demo` waits on: the run's extract jobs. An answer that dies cancels
        its extract (which then writes no answer row): unfinished counts it as ended."""
        run = runs.run(conn, save(conn), NOW, platforms=platforms_of())
        ids = run["extract_ids"]
        assert len(ids) == 8 and jobs_store.unfinished(conn, ids) == 8
        answers = [r["id"] for r in conn.execute(
            "SELECT id FROM jobqueue.jobs WHERE batch_id = %s", (run["batch_id"],))]
        jobs_store.cancel(conn, jobs_store.JobFilter(ids=answers[:3]))
        assert jobs_store.unfinished(conn, ids) == 5
        jobs_store.cancel(conn, jobs_store.JobFilter(ids=answers[3:]))
        assert jobs_store.unfinished(conn, ids) == 0
        assert conn.execute("SELECT count(*) AS n FROM jobqueue.campaign_answers"
                            ).fetchone()["n"] == 0  # what the demo used to wait for

    def test_a_run_whose_platform_is_gone_is_refused_naming_platforms(self, conn):
        found = save(conn)
        with pytest.raises(model.InvalidCampaign) as caught:
            runs.run(conn, found, NOW, platforms={})
        assert caught.value.field == "platforms"
        assert conn.execute("SELECT count(*) AS n FROM jobqueue.batches").fetchone()["n"] == 0

    def test_a_schedule_fire_runs_the_campaign(self, conn, monkeypatch, tmp_path):
        """The campaign's schedule, when due, submits the run in the fire's transaction."""
        cfg = tmp_path / "jobqueue.toml"
        cfg.write_text('[platforms.openai]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
                       'api_key_env = "X"\n[platforms.gemini]\nbase_url = '
                       '"http://127.0.0.1:9/v1"\nmodel = "m"\napi_key_env = "X"\n')
        monkeypatch.setenv("JOBQUEUE_CONFIG", str(cfg))
        save(conn, schedule="0 6 * * *")
        fired = tick.tick(conn, datetime(2026, 3, 11, 6, 0, 5, tzinfo=UTC))
        assert [r["decision"] for r in fired] == ["enqueued"]
        batch = conn.execute("SELECT name, total FROM jobqueue.batches WHERE id = %s",
                             (fired[0]["batch_id"],)).fetchone()
        assert batch == {"name": "campaign crm @ 2026-03-11 06:00Z", "total": 8}


D1, D2, D3, D4 = (date(2026, 3, d) for d in (1, 2, 3, 4))


class TestReport:
    def test_figures_on_a_hand_computed_dataset(self, conn, db_url):
        """Period 3-4 March against 1-2 March, openai only (gemini has no answers).
        Current: 4 answers. A1 'Acme, then Globex' A2 'Globex then Acme' A3 'Globex' A4
        'nothing'. Acme: 2 mentions / 4 answers = 0.5 visibility, share of voice 2/(2+3) =
        0.4, positions 1 and 2 = 1.5. Globex: 3/4 = 0.75, 3/5 = 0.6, (2+1+1)/3 = 1.3333.
        Previous: 2 answers, Acme in one (position 1): visibility 0.5, sov 1.0, change 0 and
        -0.6."""
        c = save(conn)

        def record(job_id, platform, day, text):
            return record_answer(db_url, c, job_id, platform, day, text)

        assert record(1, "openai", D1, "Acme is excellent.")
        assert record(2, "openai", D2, "No idea.")
        assert record(3, "openai", D3, "Try Acme CRM (great) or Globex (slow).")
        assert record(4, "openai", D3, "GLOBEX is best; acme is poor. "
                                       "https://www.g2.com/x https://acme.io/a")
        assert record(5, "openai", D4, "globex, https://g2.com/y")
        assert record(6, "openai", D4, "Nothing to say.")
        assert not record(6, "openai", D4, "Globex again")  # once per answer
        r = report.build(conn, c, D3, D4)
        assert (r["from"], r["to"], r["previous"]) == ("2026-03-03", "2026-03-04", {
            "from": "2026-03-01", "to": "2026-03-02"})
        t = {(x["platform"], x["brand"]): x for x in r["totals"]}
        acme, globex, initech = t[("openai", "Acme")], t[("openai", "Globex")], \
            t[("openai", "Initech")]
        assert (acme["answers"], acme["mentions"]) == (4, 2)
        assert acme["visibility"] == 0.5 and acme["share_of_voice"] == 0.4
        assert acme["avg_position"] == 1.5
        assert acme["sentiment"] == 0.0  # each of its sentences: one good, one bad word
        assert globex["visibility"] == 0.75 and globex["share_of_voice"] == 0.6
        assert globex["avg_position"] == 1.3333
        assert initech["visibility"] == 0.0 and initech["share_of_voice"] == 0.0
        assert initech["avg_position"] is None
        assert acme["previous"]["visibility"] == 0.5 and acme["previous"]["share_of_voice"] == 1
        assert acme["change"]["visibility"] == 0.0 and acme["change"]["share_of_voice"] == -0.6
        assert acme["change"]["avg_position"] == 0.5
        assert globex["previous"]["visibility"] == 0 and globex["change"]["visibility"] == 0.75
        assert t[("", "Acme")]["visibility"] == 0.5  # all platforms: openai only here
        assert t[("gemini", "Acme")]["answers"] == 0
        days = {(d["day"], d["brand"]): d for d in r["daily"]}
        assert days[("2026-03-03", "Globex")]["visibility"] == 1.0
        assert days[("2026-03-04", "Globex")]["share_of_voice"] == 1.0
        assert r["domains"][0] == {"domain": "g2.com", "citations": 2,
                                   "platforms": {"openai": 2}}
        csv_text = report.to_csv(r)
        assert csv_text.splitlines()[0].startswith("period,day,platform,brand,answers")
        assert "2026-03-03..2026-03-04,,openai,Acme,4,2,0.5,0.4,1.5," in csv_text

    def test_the_sentiment_toward_a_brand_is_that_of_its_sentences(self):
        brands = [{"name": "Acme", "aliases": []}, {"name": "Globex", "aliases": []}]
        a = extract.analyse("Acme is excellent and reliable. Globex is slow. "
                            "Acme is not bad.", brands)
        m = {x.brand: x for x in a.mentions}
        assert m["Acme"].sentiment == 1.0 and m["Globex"].sentiment == -1.0
        assert (m["Acme"].position, m["Globex"].position) == (1, 2)

    def test_the_period_is_checked(self, conn):
        c = save(conn)
        with pytest.raises(ValueError, match=r"^from: "):
            report.build(conn, c, D4, D3)

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(start=st.none() | st.dates(), end=st.none() | st.dates())
    def test_any_days_give_a_report_or_a_value_error_naming_from_or_to(self, conn, start,
                                                                       end):
        """Days near date.min or date.max overflowed the period's arithmetic (a 500)."""
        c = store.get(conn, "crm") or save(conn)
        try:
            built = report.build(conn, c, start, end)
        except ValueError as exc:
            assert str(exc).split(":")[0] in ("from", "to"), exc
        else:
            assert built["from"] <= built["to"]


class TestBudget:
    def test_a_campaign_budget_pauses_its_jobs_and_raising_it_resumes_them(
            self, conn, sim, platform_worker, db_url):
        """Spend is charged to the campaign (llm_spend.campaign); at its budget the rest of
        its jobs wait paused over budget, attempts untouched; raising it resumes them."""
        sim.configure(brands=["Acme", "Globex"])
        found = save(conn, platforms=["openai"], samples=1,
             prompts=[f"Which CRM is best for team {i}?" for i in range(30)])
        price = PriceTable({"sim-main": Price(input=1000.0, output=2000.0)})
        with psycopg.connect(db_url, autocommit=True) as c2:
            costs.set_budget(c2, "campaign", "crm", "total", 0.5)
        run = runs.run(conn, found, NOW, platforms=platforms_of(sim))
        platform_worker(platform(sim, name="openai", max_tokens=60), prices=price,
                        concurrency=4)

        def settled():
            rows = conn.execute(
                "SELECT count(*) FILTER (WHERE state = 'succeeded') AS ok, "
                "count(*) FILTER (WHERE state IN ('waiting', 'scheduled', 'retrying') AND "
                "progress ->> 'paused' = 'over budget') AS paused "
                "FROM jobqueue.all_jobs WHERE batch_id = %s", (run["batch_id"],)).fetchone()
            return rows if rows["ok"] + rows["paused"] == 30 and rows["paused"] else None

        counts = wait_until(settled, timeout=60)
        assert 0 < counts["ok"] < 30
        spent = conn.execute("SELECT sum(cost_usd) AS usd FROM jobqueue.llm_spend "
                             "WHERE campaign = 'crm'").fetchone()["usd"]
        assert 0 < float(spent) <= 0.5
        with psycopg.connect(db_url, autocommit=True) as c2:
            result = costs.set_budget(c2, "campaign", "crm", "total", 100)
        assert result["resumed"] == counts["paused"]
        wait_until(lambda: conn.execute(
            "SELECT count(*) AS n FROM jobqueue.all_jobs WHERE batch_id = %s AND state = "
            "'succeeded'", (run["batch_id"],)).fetchone()["n"] == 30, timeout=60)


class TestExtractJobs:
    @pytest.mark.parametrize("garble, method", [(0.0, "llm"), (1.0, "rules")])
    def test_answers_are_analysed_by_the_llm_or_by_the_fallback(
            self, conn, sim, platform_worker, db_url, monkeypatch, garble, method):
        """With extract = {platform}, each extract job asks the LLM (JSON schema, charged
        to the campaign); an answer that is not valid JSON falls back to string matching.
        Either way the mentions are those the answer's text holds."""
        from jobqueue.tasks import Registry

        monkeypatch.setenv("DATABASE_URL", db_url)
        sim.configure(brands=["Acme", "Globex", "Initech"], invalid_json_rate=garble)
        found = save(conn, platforms=["openai"], samples=1, extract={"platform": "openai"},
             prompts=["Which CRM is best?", "Top CRM tools for startups?", "Say hi."])
        run = runs.run(conn, found, NOW, platforms=platforms_of(sim))
        p = platform(sim, name="openai", max_tokens=300)
        platform_worker(p)
        tasks = Registry()
        tasks.register("campaign.extract", extract.extract_task)
        platform_worker(p, tasks=tasks, queue="default")
        wait_until(lambda: conn.execute("SELECT count(*) AS n FROM jobqueue.campaign_answers"
                                        ).fetchone()["n"] == 3, timeout=60)
        assert {r["method"] for r in conn.execute(
            "SELECT method FROM jobqueue.campaign_answers")} == {method}
        brands = store.get(conn, "crm")["brands"]
        for answer in conn.execute("SELECT id, result ->> 'text' AS text FROM "
                                   "jobqueue.finished WHERE batch_id = %s",
                                   (run["batch_id"],)).fetchall():
            expected = {m.brand: m.position for m in extract.analyse(answer["text"],
                                                                     brands).mentions}
            stored = {r["brand"]: r["position"] for r in conn.execute(
                "SELECT brand, position FROM jobqueue.campaign_mentions WHERE job_id = %s",
                (answer["id"],))}
            assert stored == expected
        calls = conn.execute("SELECT sum(calls) AS n FROM jobqueue.llm_spend "
                             "WHERE campaign = 'crm'").fetchone()["n"]
        assert calls == 6  # 3 answers + 3 extract calls, all charged to the campaign
