"""The job list's columns, order and count, and the job timeline's record of manual actions,
over real HTTP."""

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
