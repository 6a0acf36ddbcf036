"""The job list's columns, order and count, and the job timeline's record of manual actions
(written with the action, by the API and the dashboard alike), over real HTTP."""

from __future__ import annotations

import re

import pytest
from psycopg.types.json import Jsonb

from jobqueue.jobs import JobSpec
from tests.support.web import Api, Dashboard, Server
from web import dashboard_jobs


@pytest.fixture
def server(db_url):
    s = Server(db_url)
    yield s
    s.close()


@pytest.fixture
def admin(server, make_token) -> Dashboard:
    d = Dashboard(server.base)
    assert d.sign_in(make_token("ops", ["admin"])).status_code == 302
    d.get("/")
    return d


def rows_of(html: str) -> list[str]:
    body = re.search(r"<tbody>(.*?)</tbody>", html, re.S).group(1)
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r)).strip()
            for r in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def ids_in_order(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'name="ids" value="(\d+)"', html)]


class TestColumns:
    def test_priority_is_named_and_llm_rows_show_the_prompt(self, admin, client):
        high = client.enqueue("chat", {"messages": [{"role": "system", "content": "sys"},
                                                    {"role": "user", "content": "hello there"}]},
                              queue="llm", priority="high")
        odd = client.enqueue("mail", {"to": "a@example.com"}, queue="mail", priority=3)
        low = client.enqueue("chat", {"prompt": "just a prompt"}, queue="llm", priority="low")
        html = admin.page("/jobs")
        rows = dict(zip(ids_in_order(html), rows_of(html), strict=True))
        assert " high " in rows[high] and "hello there" in rows[high]
        assert '"messages"' not in rows[high] and "sys" not in rows[high]
        assert " 3 " in rows[odd] and "a@example.com" in rows[odd]
        assert " low " in rows[low] and "just a prompt" in rows[low]
        assert " normal " not in rows[odd]

    def test_queue_wait_run_time_and_runs_at(self, admin, client, sql):
        later = client.enqueue("k", queue="q", delay=3600)
        done = client.enqueue("k", queue="q")
        sql("""WITH gone AS (DELETE FROM jobqueue.jobs j WHERE id = %s RETURNING j AS job)
               INSERT INTO jobqueue.finished
               SELECT (jobqueue.finished_row(job, 'succeeded', '{}', '[]')).* FROM gone""",
            (done,))
        sql("""UPDATE jobqueue.finished SET run_at = created_at,
                   started_at = created_at + interval '42 seconds',
                   finished_at = created_at + interval '42 seconds' + interval '3 minutes 5 seconds'
               WHERE id = %s""", (done,))
        html = admin.page("/jobs")
        rows = dict(zip(ids_in_order(html), rows_of(html), strict=True))
        assert "42s 3m 05s" in rows[done]
        assert re.search(r"in (59m \d\ds|1h 00m)", rows[later]), rows[later]


class TestSortAndCount:
    def test_sorted_by_a_column_in_both_directions(self, admin, client):
        ids = [client.enqueue("k", queue="q", priority=p) for p in (5, -10, 0, 7)]
        html = admin.page("/jobs?sort=priority")
        assert ids_in_order(html) == [ids[1], ids[2], ids[0], ids[3]]
        html = admin.page("/jobs?sort=priority&dir=desc")
        assert ids_in_order(html) == [ids[3], ids[0], ids[2], ids[1]]
        assert 'aria-sort="descending"' in html

    def test_sorted_pages(self, admin, client, monkeypatch):
        import web.dashboard as dashboard
        monkeypatch.setattr(dashboard, "PAGE", 2)
        ids = [client.enqueue("k", queue="q", priority=p) for p in (1, 2, 3, 4, 5)]
        first = admin.page("/jobs?sort=priority&dir=asc")
        assert ids_in_order(first) == ids[:2]
        nxt = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
        assert ids_in_order(admin.page(nxt)) == ids[2:4]

    @pytest.mark.parametrize("query,field", [
        ("sort=id;drop", "sort"), ("sort=created&dir=up", "dir"),
        ("sort=created&page=x", "page"), ("sort=created&page=100", "page")])
    def test_bad_sort_parameters_are_400_naming_the_field(self, admin, query, field):
        r = admin.get(f"/jobs?{query}")
        assert r.status_code == 400 and f"{field}:" in r.text

    def test_the_count_is_exact_for_queue_and_state_and_small_matches(self, admin, client):
        for i in range(3):
            client.enqueue("k", queue="a", payload={"n": i})
        client.enqueue("other", queue="b")
        assert "4 jobs" in admin.page("/jobs")
        assert "3 jobs" in admin.page("/jobs?queue=a")
        assert "1 job<" in admin.page("/jobs?queue=b&state=waiting")
        assert "1 job<" in admin.page("/jobs?kind=other")
        assert "1 job<" in admin.page("/jobs?q=%22n%22:%201")  # text search: the window
        batch_id, _ = client.submit_batch([JobSpec("k", {"i": i}) for i in range(5)], queue="a")
        assert "5 jobs" in admin.page(f"/jobs?batch={batch_id}")

    def test_the_count_is_an_estimate_beyond_the_window_and_says_so(self, admin, client,
                                                                     monkeypatch):
        import web.dashboard as dashboard
        monkeypatch.setattr(dashboard, "SCAN", 10)
        for i in range(30):
            client.enqueue("even" if i % 2 == 0 else "odd", queue="a")
        html = admin.page("/jobs?kind=even")
        assert "about 15 jobs (estimated from the newest 10 jobs)" in html
        monkeypatch.setattr(dashboard_jobs, "EXACT_UP_TO", 3)
        monkeypatch.setattr(dashboard, "PAGE", 2)  # a full page: the window is counted
        assert "more than 3 jobs (among the newest 10 jobs" in admin.page("/jobs?kind=even")
        batch_id, _ = client.submit_batch([JobSpec("k", {"i": i}) for i in range(5)], queue="a")
        assert "more than 3 jobs (in this batch" in admin.page(f"/jobs?batch={batch_id}")


class TestTimeline:
    def test_manual_actions_are_recorded_with_who_and_read_in_order(
            self, admin, client, server, make_token, sql):
        job_id = client.enqueue("k", queue="q", max_attempts=1)
        errors = [{"attempt": 1, "at": "2026-01-01T00:00:01+00:00", "type": "E", "message": "x"}]
        sql("""WITH gone AS (DELETE FROM jobqueue.jobs j WHERE id = %s RETURNING j AS job)
               INSERT INTO jobqueue.finished
               SELECT (jobqueue.finished_row(job, 'dead', NULL, %s)).* FROM gone""",
            (job_id, Jsonb(errors)))
        sql("UPDATE jobqueue.finished SET created_at = '2026-01-01T00:00:00Z', "
            "run_at = '2026-01-01T00:00:00Z', started_at = '2026-01-01T00:00:00.5Z', "
            "finished_at = '2026-01-01T00:00:01Z' WHERE id = %s", (job_id,))
        admin.page(f"/jobs/{job_id}")
        r = admin.post(f"/jobs/{job_id}/retry")
        assert "queued again" in r.text
        api = Api(server.base, make_token("robot", ["admin"]))
        assert api.post(f"/api/jobs/{job_id}/cancel").status_code == 200
        html = admin.page(f"/jobs/{job_id}")
        timeline = re.search(r'id="timeline">(.*?)</ol>', html, re.S).group(1)
        items = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", li)).strip()
                 for li in re.findall(r"<li>(.*?)</li>", timeline, re.S)]
        whats = [re.sub(r"^\S+ \S+ \+[\d.]+s ", "", i) for i in items]
        assert whats[0] == "created"
        assert whats.index("attempt 1 failed E: x") < whats.index("retried by ops via dashboard")
        assert whats.index("retried by ops via dashboard") < \
            whats.index("cancel asked by robot via api")
        stamps = [i.split(" +")[0] for i in items]
        assert stamps == sorted(stamps)

    def test_a_cancel_of_everything_matching_is_recorded_on_each_job(self, admin, client, sql):
        """A bulk cancel chosen by filter (not by ticked jobs) names each job it reached."""
        ids = [client.enqueue("k", queue="bulkq") for _ in range(3)]
        other = client.enqueue("k", queue="elsewhere")
        html = admin.page("/jobs/bulk?action=cancel&queue=bulkq")
        upto = int(re.search(r'name="upto" value="(\d+)"', html).group(1))
        admin.post("/jobs/bulk", {"action": "cancel", "queue": "bulkq", "upto": upto})
        rows = sql("SELECT job_id, action, actor, via FROM jobqueue.job_actions ORDER BY job_id")
        assert [(r["job_id"], r["action"], r["actor"], r["via"]) for r in rows] == [
            (i, "cancel", "ops", "dashboard") for i in ids]
        assert client.get(other).state == "waiting"

    def test_the_timeline_reads_in_order_after_a_retry(self):
        """After a manual retry the attempts start from 1 again: the retry sits between them
        and the later attempts are named as the next run."""
        from datetime import UTC, datetime, timedelta

        from web.dashboard import _timeline

        t0 = datetime(2026, 1, 1, tzinfo=UTC)

        class Job:
            created_at = run_at = t0
            started_at = t0 + timedelta(minutes=10)
            attempts, state, finished_at = 1, "running", None
            errors = [{"attempt": 1, "at": (t0 + timedelta(seconds=1)).isoformat(),
                       "type": "E", "message": "a"},
                      {"attempt": 2, "at": (t0 + timedelta(seconds=5)).isoformat(),
                       "type": "E", "message": "b"}]

        actions = [{"action": "retry", "actor": "ops", "via": "dashboard", "detail": None,
                    "at": t0 + timedelta(minutes=9)}]
        whats = [e["what"] for e in _timeline(Job(), actions)]
        assert whats == ["created", "attempt 1 failed", "attempt 2 failed", "retried by ops",
                         "attempt 1 started (run 2)"]


def make_dead(sql, job_id: int) -> None:
    sql("""WITH gone AS (DELETE FROM jobqueue.jobs j WHERE id = %s RETURNING j AS job)
           INSERT INTO jobqueue.finished
           SELECT (jobqueue.finished_row(job, 'dead', NULL, '[]')).* FROM gone""", (job_id,))


def make_running(sql, job_id: int) -> None:
    sql("UPDATE jobqueue.jobs SET lease_owner = gen_random_uuid(), "
        "lease_expires_at = now() + interval '1 minute' WHERE id = %s", (job_id,))


def actions(sql) -> list[tuple]:
    rows = sql("SELECT job_id, action, actor, via, detail FROM jobqueue.job_actions "
               "ORDER BY job_id, id")
    return [(r["job_id"], r["action"], r["actor"], r["via"], r["detail"]) for r in rows]


def jobs_as_they_are(sql) -> list[dict]:
    return sql("SELECT id, state, run_at, cancel_requested FROM jobqueue.all_jobs ORDER BY id")


@pytest.fixture
def jobs(client, sql) -> dict:
    """One job in each state a manual action starts from, and a batch with a dead job."""
    found = {"waiting": client.enqueue("k", queue="q"), "running": client.enqueue("k", queue="q"),
             "dead": client.enqueue("k", queue="q"),
             "later": client.enqueue("k", queue="q", delay=3600)}
    make_running(sql, found["running"])
    make_dead(sql, found["dead"])
    found["batch"], _ = client.submit_batch([JobSpec("k", {"i": i}) for i in range(2)],
                                            queue="b")
    found["batch_dead"], found["batch_waiting"] = [
        r["id"] for r in sql("SELECT id FROM jobqueue.jobs WHERE batch_id = %s ORDER BY id",
                             (found["batch"],))]
    make_dead(sql, found["batch_dead"])
    return found


# Every manual action on jobs, through the API or the dashboard: the action it records, and
# (surface, path, form) from the jobs above.
ACTIONS = {
    "api cancel": ("cancel", lambda j: ("api", f"/api/jobs/{j['waiting']}/cancel", None)),
    "api cancel running": ("cancel",
                           lambda j: ("api", f"/api/jobs/{j['running']}/cancel", None)),
    "api retry": ("retry", lambda j: ("api", f"/api/jobs/{j['dead']}/retry", None)),
    "job cancel": ("cancel", lambda j: ("dashboard", f"/jobs/{j['waiting']}/cancel", {})),
    "job retry": ("retry", lambda j: ("dashboard", f"/jobs/{j['dead']}/retry", {})),
    "job delete": ("delete", lambda j: ("dashboard", f"/jobs/{j['dead']}/delete", {})),
    "job run now": ("run-now", lambda j: ("dashboard", f"/jobs/{j['later']}/run-now", {})),
    "bulk cancel": ("cancel", lambda j: ("dashboard", "/jobs/bulk", [
        ("action", "cancel"), ("ids", j["waiting"]), ("ids", j["running"])])),
    "bulk retry": ("retry", lambda j: ("dashboard", "/jobs/bulk", [
        ("action", "retry"), ("ids", j["dead"])])),
    "bulk delete": ("delete", lambda j: ("dashboard", "/jobs/bulk", [
        ("action", "delete"), ("ids", j["waiting"]), ("ids", j["dead"])])),
    "dead retry": ("retry", lambda j: ("dashboard", "/dead/retry", {"all": "1"})),
    "dead purge": ("delete", lambda j: ("dashboard", "/dead/purge", {"all": "1"})),
    "batch cancel": ("cancel", lambda j: ("dashboard", f"/batches/{j['batch']}/cancel", {})),
    "batch retry dead": ("retry",
                         lambda j: ("dashboard", f"/batches/{j['batch']}/retry-dead", {})),
}


class TestRecordedWithTheAction:
    """A manual action and its record in jobqueue.job_actions commit together: the record is
    there exactly when the action took effect, on each job it reached."""

    def act(self, server, make_token, owner: str, surface: str, path: str, form):
        if surface == "api":
            return Api(server.base, make_token(owner, ["admin"])).post(path)
        d = Dashboard(server.base)
        assert d.sign_in(make_token(owner, ["admin"])).status_code == 302
        d.get("/jobs")
        return d.post(path, form)

    @pytest.mark.parametrize("name", ACTIONS)
    def test_an_action_whose_record_fails_is_not_done(self, name, server, make_token, jobs,
                                                      sql):
        """The record's insert fails (a constraint refuses this actor): the action fails with
        it, and no job changed."""
        sql("ALTER TABLE jobqueue.job_actions "
            "ADD CONSTRAINT refused_actor CHECK (actor <> 'refused')")
        before = jobs_as_they_are(sql)
        r = self.act(server, make_token, "refused", *ACTIONS[name][1](jobs))
        assert r.status_code == 500, (r.status_code, r.text[:300])
        assert jobs_as_they_are(sql) == before
        assert actions(sql) == []

    @pytest.mark.parametrize("name", ACTIONS)
    def test_a_done_action_is_recorded_on_each_job_it_reached(self, name, server, make_token,
                                                              jobs, sql):
        action, request = ACTIONS[name]
        surface, path, form = request(jobs)
        before = {r["id"]: r for r in jobs_as_they_are(sql)}
        r = self.act(server, make_token, "ops", surface, path, form)
        assert r.status_code == 200, (r.status_code, r.text[:300])
        after = {r["id"]: r for r in jobs_as_they_are(sql)}
        reached = sorted(i for i in before if before[i] != after.get(i))
        assert reached
        # the detail: test_a_batch_action_is_recorded_with_the_batch
        assert [r[:4] for r in actions(sql)] == [(i, action, "ops", surface) for i in reached]

    def test_an_action_that_reached_no_job_is_not_recorded(self, admin, server, make_token,
                                                           jobs, client, sql):
        """Refused (409), not applicable, or nothing to do: nothing happened, nothing is
        recorded."""
        api = Api(server.base, make_token("robot", ["admin"]))
        done = client.enqueue("k", queue="q")
        make_dead(sql, done)
        sql("UPDATE jobqueue.finished SET state = 'succeeded' WHERE id = %s", (done,))
        assert api.post(f"/api/jobs/{done}/cancel").status_code == 409
        assert api.post(f"/api/jobs/{jobs['waiting']}/retry").status_code == 409
        assert "was not retried" in admin.post(f"/jobs/{jobs['waiting']}/retry").text
        assert "had already finished" in admin.post(f"/jobs/{done}/cancel").text
        assert "was not made due" in admin.post(f"/jobs/{jobs['waiting']}/run-now").text
        # a running job belongs to its worker: the dashboard does not delete it
        assert "Deleted 0 job(s)." in admin.post(f"/jobs/{jobs['running']}/delete").text
        assert client.get(jobs["running"]).state == "running"
        assert actions(sql) == []

    def test_the_api_and_the_dashboard_write_the_same_record(self, admin, server, make_token,
                                                             client, sql):
        """One helper for both surfaces: the same row, but for who and through which."""
        by_api, by_dashboard = client.enqueue("k", queue="q"), client.enqueue("k", queue="q")
        api = Api(server.base, make_token("robot", ["admin"]))
        assert api.post(f"/api/jobs/{by_api}/cancel").json()["outcome"] == "cancelled"
        admin.post(f"/jobs/{by_dashboard}/cancel")
        assert api.post(f"/api/jobs/{by_api}/retry").status_code == 200
        admin.post(f"/jobs/{by_dashboard}/retry")
        assert actions(sql) == [(by_api, "cancel", "robot", "api", None),
                                (by_api, "retry", "robot", "api", None),
                                (by_dashboard, "cancel", "ops", "dashboard", None),
                                (by_dashboard, "retry", "ops", "dashboard", None)]

    def test_a_batch_action_is_recorded_with_the_batch(self, admin, jobs, sql):
        admin.post(f"/batches/{jobs['batch']}/retry-dead")
        admin.post(f"/batches/{jobs['batch']}/cancel")
        b = jobs["batch"]
        assert actions(sql) == [
            (jobs["batch_dead"], "retry", "ops", "dashboard", f"batch {b}: retry all dead"),
            (jobs["batch_dead"], "cancel", "ops", "dashboard", f"batch {b}: cancel"),
            (jobs["batch_waiting"], "cancel", "ops", "dashboard", f"batch {b}: cancel")]
