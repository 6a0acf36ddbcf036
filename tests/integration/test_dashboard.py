"""The dashboard over real HTTP on loopback: sign-in and CSRF on every page and action, each
page with data in it, the job list's filters and pages, bulk actions on "everything matching",
queue pause, and JSON shown escaped."""

from __future__ import annotations

import os
import re

import pytest
from psycopg.types.json import Jsonb

from jobqueue.db.queries import q
from jobqueue.jobs import JobSpec
from jobqueue.tasks import Permanent, Registry
from tests.support.helpers import wait_finished
from tests.support.web import Dashboard, Server


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


def finished_job(sql, queue="q", state="dead", kind="k", payload=None, owner=None,
                 message="boom", minutes_ago: float = 0) -> int:
    """A finished job written straight into `finished` (the trigger counts it)."""
    errors = [{"attempt": 1, "at": "2026-01-01T00:00:00+00:00", "type": "ValueError",
               "message": message, "traceback": "Traceback ...\nValueError: " + message}]
    (row,) = sql("""
        INSERT INTO jobqueue.finished
            (id, queue, kind, payload, priority, run_at, attempts, max_attempts, state, errors,
             owner, metadata, created_at, finished_at)
        VALUES (nextval('jobqueue.job_id_seq'), %s, %s, %s, 0, now(), 1, 1, %s, %s, %s, '{}',
                now(), now() - make_interval(mins => %s))
        RETURNING id""", (queue, kind, Jsonb(payload or {}), state,
                          Jsonb(errors if state == "dead" else []), owner, minutes_ago))
    return row["id"]


def ids_on(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'name="ids" value="(\d+)"', html)]


def flashes(html: str) -> list[str]:
    return [re.sub(r"\s+", " ", m) for m in re.findall(r'class="flash[^"]*"[^>]*>([^<]*)<', html)]


# -- sign-in and CSRF -----------------------------------------------------------------------


def dashboard_rules(app):
    """Every dashboard route as (method, path), parameters filled with a harmless value."""
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("dashboard.") or rule.endpoint == "dashboard.login":
            continue
        path = re.sub(r"<any\((\w+)[^)]*\):\w+>", r"\1", rule.rule)
        path = re.sub(r"<int:\w+>", "1", path)
        path = re.sub(r"<\w+>", "q", path)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, path


class TestSignIn:
    def test_every_page_and_action_needs_a_signed_in_admin(self, server):
        """Signed out, every dashboard route sends the browser to /login and back after."""
        anon = Dashboard(server.base)
        rules = list(dashboard_rules(server.app))
        pages = {"/", "/jobs", "/jobs/1", "/dead", "/batches", "/workers", "/limits"}
        assert pages <= {path for method, path in rules if method == "GET"}
        for method, path in rules:
            r = anon.http.request(method, server.base + path, allow_redirects=False, timeout=30)
            assert r.status_code == 302, (method, path, r.status_code)
            assert r.headers["Location"].startswith("/login?next="), (method, path)
        assert anon.get("/?partial=1", allow_redirects=False).status_code == 401

    def test_sign_in_returns_to_the_page_asked_for_and_only_on_this_site(self, server,
                                                                         make_token):
        token = make_token("ops", ["admin"])
        r = Dashboard(server.base).sign_in(token, next_url="/jobs?state=dead")
        assert r.headers["Location"] == "/jobs?state=dead"
        r = Dashboard(server.base).sign_in(token, next_url="//evil.example/")
        assert r.headers["Location"] == "/"

    def test_a_token_without_admin_scope_or_unknown_is_refused(self, server,
                                                               make_token):
        d = Dashboard(server.base)
        r = d.sign_in(make_token("alice", ["read", "write"]))
        assert r.status_code == 403 and "admin scope" in r.text
        assert d.get("/", allow_redirects=False).status_code == 302
        r = d.sign_in("jq_not_a_token")
        assert r.status_code == 401 and "unknown or revoked token" in r.text

    def test_sign_in_and_out_need_the_csrf_token(self, server, make_token):
        d = Dashboard(server.base)
        d.get("/login")
        r = d.post("/login", {"token": make_token("ops", ["admin"])}, csrf=False)
        assert r.status_code == 400
        assert d.get("/", allow_redirects=False).status_code == 302
        d.sign_in(make_token("ops2", ["admin"]))
        d.get("/")
        assert d.post("/logout", csrf=False).status_code == 400
        assert d.get("/", allow_redirects=False).status_code == 200
        assert d.post("/logout", allow_redirects=False).headers["Location"] == "/login"
        assert d.get("/", allow_redirects=False).status_code == 302

    def test_every_post_without_the_csrf_token_is_refused_and_changes_nothing(
            self, admin, server, client, sql):
        """A form posted from another site carries the cookie but not the token."""
        waiting = client.enqueue("k", queue="q")
        dead = finished_job(sql)
        posts = [path for method, path in dashboard_rules(server.app) if method == "POST"]
        assert len(posts) >= 5
        for path in [*posts, "/queues/q/pause", f"/jobs/{waiting}/cancel",
                     f"/jobs/{dead}/retry", f"/jobs/{dead}/delete"]:
            r = admin.post(path, {"action": "delete", "upto": "999999", "all": "1"},
                           csrf=False)
            assert r.status_code == 400, path
            assert "CSRF" in r.text
            wrong = admin.http.post(server.base + path, timeout=30,
                                    data={"csrf_token": "x" * 43, "action": "retry"})
            assert wrong.status_code == 400, path
        assert client.get(waiting).state == "waiting"
        assert client.get(dead).state == "dead"
        assert sql("SELECT * FROM jobqueue.queues") == []


# -- pages ----------------------------------------------------------------------------------


@pytest.fixture
def worked(client, start_worker):
    """Jobs run by a real worker on queue "mail": three succeed, two die; two more wait on
    "idle", which no worker serves."""

    def send(payload):
        return {"sent": payload["n"]}

    def bounce(payload):
        raise Permanent(f"mailbox {payload['n']} is full")

    tasks = Registry()
    tasks.register("send", send)
    tasks.register("bounce", bounce)
    start_worker(tasks, queue="mail")
    ok = [client.enqueue("send", {"n": i}, queue="mail") for i in range(3)]
    bad = [client.enqueue("bounce", {"n": i}, queue="mail", max_attempts=1) for i in range(2)]
    idle = [client.enqueue("later", {"n": i}, queue="idle") for i in range(2)]
    wait_finished(client, ok + bad)
    return {"ok": ok, "bad": bad, "idle": idle}


class TestPages:
    def test_overview_counts_states_per_queue_and_charts_the_last_hour(self, admin, worked):
        html = admin.page("/")
        totals = dict(re.findall(r'data-state="(\w+)">([\d,]+)<', html))
        assert totals == {"blocked": "0", "waiting": "2", "scheduled": "0", "retrying": "0",
                          "running": "0", "succeeded": "3", "dead": "2", "cancelled": "0"}
        assert "3 succeeded, 2 dead" in html  # the chart's total for the hour
        assert 1 <= len(re.findall(r'<rect [^>]*class="ok"', html)) <= 2  # a busy minute
        assert 1 <= len(re.findall(r'<rect [^>]*class="dead"', html)) <= 2  # (or two)
        assert re.search(r'href="/jobs\?queue=idle">idle</a>', html)
        assert "Pause" in html

    def test_the_chart_counts_each_minute_of_the_last_hour_once(self, server, sql,
                                                                 make_token):
        """Complete minutes are read once and kept; later refreshes add the newer ones."""
        for minutes_ago, state in [(5, "succeeded"), (5, "succeeded"), (5, "dead"),
                                   (30, "dead"), (90, "succeeded")]:
            finished_job(sql, state=state, minutes_ago=minutes_ago)
        d = Dashboard(server.base)  # its first page reads the hour, the second the cache
        d.sign_in(make_token("ops", ["admin"]))
        for _ in range(2):
            assert "2 succeeded, 2 dead" in d.page("/")
        finished_job(sql, state="succeeded")  # this minute: always read afresh
        assert "3 succeeded, 2 dead" in d.page("/?partial=1")

    def test_the_live_part_alone_for_refreshes(self, admin, worked):
        html = admin.page("/?partial=1")
        assert "<html" not in html and "<table>" in html
        assert 'data-state="succeeded">3<' in html

    def test_job_list_filters(self, admin, client, sql, worked):
        client.enqueue("report", {"title": "Quarterly numbers"}, queue="reports", owner="bob",
                       metadata={"customer": "ACME"})
        batch_id, _ = client.submit_batch([], queue="llm", name="empty")
        in_batch = client.enqueue("chat", {}, queue="llm", batch_id=batch_id)

        def listed(query):
            return set(ids_on(admin.page("/jobs" + query)))

        everything = listed("")
        assert len(everything) == 9
        assert listed("?queue=mail") == set(worked["ok"] + worked["bad"])
        assert listed("?state=dead") == set(worked["bad"])
        assert listed("?state=waiting&queue=idle") == set(worked["idle"])
        assert listed("?kind=send") == set(worked["ok"])
        assert listed("?owner=bob") == {max(everything - {in_batch})}
        assert listed(f"?batch={batch_id}") == {in_batch}
        assert listed("?q=quarterly") == listed("?q=acme") == {max(everything - {in_batch})}
        assert listed("?q=MAILBOX+1+is") == {worked["bad"][1]}  # text of the error
        assert listed("?q=100%25") == set()  # % is a character here, not a wildcard
        html = admin.page("/jobs?q=nothing+like+this")
        assert "No jobs match this filter" in html

    def test_job_list_pages_newest_first_over_both_tables(self, admin, client, sql):
        made = []
        for i in range(60):  # alternate tables: every other job finished
            made.append(finished_job(sql, state="succeeded") if i % 2 else
                        client.enqueue("k", {"i": i}, queue="q"))
        first = admin.page("/jobs")
        page1 = ids_on(first)
        assert page1 == sorted(made, reverse=True)[:50]
        older = re.search(r'href="(/jobs\?before=\d+)" rel="next"', first).group(1)
        page2 = ids_on(admin.page(older.replace("&amp;", "&")))
        assert page2 == sorted(made, reverse=True)[50:]
        assert 'rel="next"' not in admin.page(older)

    def test_a_filter_searches_a_bounded_window_and_says_so(self, admin, client, sql,
                                                            monkeypatch):
        from web import dashboard

        monkeypatch.setattr(dashboard, "SCAN", 5)
        old = finished_job(sql, queue="rare")
        for _ in range(7):
            client.enqueue("k", queue="common")
        html = admin.page("/jobs?queue=rare")
        assert ids_on(html) == []
        assert "Searched the 5 most recent jobs" in html
        older = re.search(r'href="([^"]+)" rel="next"', html).group(1).replace("&amp;", "&")
        assert ids_on(admin.page(older)) == [old]

    def test_job_page_shows_payload_result_attempts_and_timeline(self, admin, client, worked):
        html = admin.page(f"/jobs/{worked['ok'][0]}")
        assert 'id="job-state">succeeded<' in html
        assert "&#34;sent&#34;: 0" in html  # the result, pretty-printed and escaped
        assert "No failed attempts." in html
        for event in ("created", "attempt 1 started", "succeeded"):
            assert f"<strong>{event}</strong>" in html
        html = admin.page(f"/jobs/{worked['bad'][0]}")
        assert 'id="job-state">dead<' in html
        assert "Permanent: mailbox 0 is full" in html
        assert "Traceback (most recent call last)" in html
        assert "<strong>attempt 1 failed</strong>" in html
        assert f'action="/jobs/{worked["bad"][0]}/retry"' in html
        assert admin.get("/jobs/999999").status_code == 404

    def test_json_from_jobs_is_shown_escaped(self, admin, client):
        job_id = client.enqueue("k", {"html": "<script>alert(1)</script>"}, queue="q",
                                metadata={"note": "<img src=x onerror=alert(2)>"})
        for path in (f"/jobs/{job_id}", "/jobs", f"/jobs/{job_id}?partial=1"):
            html = admin.page(path)
            assert "<script>alert(1)" not in html and "<img src=x" not in html
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "&lt;img src=x onerror=alert(2)&gt;" in admin.page(f"/jobs/{job_id}")

    def test_dead_letters_list_retry_one_and_purge_all(self, admin, client, sql):
        a = [finished_job(sql, queue="a") for _ in range(3)]
        b = finished_job(sql, queue="b")
        html = admin.page("/dead")
        assert set(ids_on(html)) == {*a, b}
        assert "All 4 dead" in html
        assert set(ids_on(admin.page("/dead?queue=a"))) == set(a)
        admin.post("/dead/retry", {"ids": a[0], "queue": "a"})
        assert client.get(a[0]).state == "waiting"
        r = admin.post("/dead/purge", {"all": "1", "queue": "a"})
        assert "Purged 2 dead job(s)." in flashes(r.text)
        assert client.get(a[1]) is None and client.get(b).state == "dead"
        r = admin.post("/dead/retry", {"queue": "b"})
        assert "Select some jobs first." in flashes(r.text)
        assert client.get(b).state == "dead"
        r = admin.post("/dead/retry", {"all": "1"})  # every queue
        assert "Retried 1 job(s)." in flashes(r.text)
        assert client.get(b).state == "waiting"

    def test_batches_show_progress_and_download_results(self, admin, client, sql):
        batch_id, _ = client.submit_batch(
            [JobSpec("chat", {"prompt": f"q{i}"}, metadata={"row": i}) for i in range(4)],
            queue="llm", name="questions")
        sql("UPDATE jobqueue.jobs SET lease_owner = gen_random_uuid(), "
            "lease_expires_at = now() + interval '1 minute' WHERE id = "
            "(SELECT min(id) FROM jobqueue.jobs WHERE batch_id = %s)", (batch_id,))
        html = admin.page("/batches")
        assert "questions" in html and "0/4" in html
        assert 'class="seg seg-waiting" x="0.000" width="75.000"' in html
        assert 'class="seg seg-running" x="75.000" width="25.000"' in html
        r = admin.get(f"/batches/{batch_id}/results.jsonl")
        assert r.headers["Content-Type"] == "application/x-ndjson"
        assert len(r.text.splitlines()) == 4
        r = admin.get(f"/batches/{batch_id}/results.csv")
        assert r.text.splitlines()[0].startswith("row,id,state,prompt")
        assert admin.get("/batches/999/results.csv").status_code == 404

    def test_workers_show_heartbeat_and_work_in_flight(self, admin, client, start_worker,
                                                       worked):
        html = admin.page("/workers")
        assert f'<td class="num">{os.getpid()}</td>' in html
        assert ">mail</a>" in html and "ago" in html

    def test_limits_show_buckets_and_cache(self, admin, sql):
        sql("""INSERT INTO jobqueue.rate_buckets (platform, model, key_id, rpm_configured,
                   tpm_configured, rpm, tpm, req_level, tok_level, requests_total,
                   throttled_total, blocked_until)
               VALUES ('openai', 'gpt-x', 'OPENAI_KEY:ab12', 500, 90000, 400, 90000, 0, 0,
                       123, 7, now() + interval '30 seconds')""")
        sql("""INSERT INTO jobqueue.llm_cache (key, response, expires_at, hits)
               VALUES ('k1', '{}', now() + interval '1 hour', 3)""")
        html = admin.page("/limits")
        assert "gpt-x" in html and "OPENAI_KEY:ab12" in html
        assert "400 <span" in html and "of 500" in html  # provider lowered the limit
        assert ">123<" in html and ">7<" in html and "blocked" in html
        assert "75.0%" in html  # 3 hits, 1 stored call


# -- actions --------------------------------------------------------------------------------


class TestActions:
    def test_retry_everything_matching_a_filter_after_confirming_the_count(self, admin,
                                                                          client, sql):
        dead_a = [finished_job(sql, queue="a") for _ in range(5)]
        cancelled_a = finished_job(sql, queue="a", state="cancelled")
        dead_b = finished_job(sql, queue="b")
        html = admin.page("/jobs/bulk?action=retry&queue=a&state=dead")
        assert "5 job(s) match" in html
        assert re.search(r"Retry 5 job\(s\)", html)
        upto = int(re.search(r'name="upto" value="(\d+)"', html).group(1))
        late = finished_job(sql, queue="a")  # died after the operator looked: left alone
        r = admin.post("/jobs/bulk", {"action": "retry", "queue": "a", "state": "dead",
                                      "upto": upto})
        assert r.url.endswith("/jobs?queue=a&state=dead")
        assert "Retried 5 job(s)." in flashes(r.text)
        assert [client.get(i).state for i in dead_a] == ["waiting"] * 5
        assert client.get(late).state == "dead"
        assert client.get(cancelled_a).state == "cancelled"
        assert client.get(dead_b).state == "dead"
        assert client.get(dead_a[0]).errors[0]["message"] == "boom"  # history kept

    def test_bulk_on_everything_needs_the_confirmed_bound(self, admin, client, sql):
        dead = finished_job(sql)
        r = admin.post("/jobs/bulk", {"action": "retry", "state": "dead"})
        assert "Select some jobs first." in flashes(r.text)
        assert client.get(dead).state == "dead"

    def test_cancel_and_delete_selected_jobs(self, admin, client, sql):
        waiting = [client.enqueue("k", queue="q") for _ in range(3)]
        running = client.enqueue("k", queue="q")
        sql("UPDATE jobqueue.jobs SET lease_owner = gen_random_uuid(), "
            "lease_expires_at = now() + interval '1 minute' WHERE id = %s", (running,))
        done = finished_job(sql, state="succeeded")
        r = admin.post("/jobs/bulk", [("action", "cancel"), ("ids", waiting[0]),
                                      ("ids", waiting[1]), ("ids", running)])
        assert flashes(r.text) == [
            "Cancelled 2 job(s); asked the workers of 1 running job(s) to stop."]
        assert [client.get(i).state for i in waiting] == ["cancelled", "cancelled", "waiting"]
        assert client.get(running).cancel_requested
        r = admin.post("/jobs/bulk", [("action", "delete"), ("ids", waiting[0]),
                                      ("ids", waiting[2]), ("ids", done)])
        assert "Deleted 3 job(s)." in flashes(r.text)
        assert [client.get(i) for i in (waiting[0], waiting[2], done)] == [None] * 3
        counts = {r["state"]: r["count"] for r in sql(
            "SELECT state, count FROM jobqueue.finished_counts WHERE queue = 'q'")}
        assert counts == {"cancelled": 1, "succeeded": 0}

    def test_delete_everything_matching_leaves_running_jobs_alone(self, admin, client, sql):
        running = client.enqueue("k", queue="q")
        sql("UPDATE jobqueue.jobs SET lease_owner = gen_random_uuid(), "
            "lease_expires_at = now() + interval '1 minute' WHERE id = %s", (running,))
        waiting = client.enqueue("k", queue="q")
        dead = finished_job(sql, queue="q")
        html = admin.page("/jobs/bulk?action=delete&queue=q")
        assert "Delete 2 job(s)" in html
        upto = re.search(r'name="upto" value="(\d+)"', html).group(1)
        admin.post("/jobs/bulk", {"action": "delete", "queue": "q", "upto": upto})
        assert client.get(waiting) is None and client.get(dead) is None
        assert client.get(running).state == "running"

    def test_job_page_buttons_retry_cancel_and_delete(self, admin, client, sql):
        dead = finished_job(sql)
        r = admin.post(f"/jobs/{dead}/retry")
        assert f"Job {dead} queued again." in flashes(r.text)
        assert 'id="job-state">waiting<' in r.text
        r = admin.post(f"/jobs/{dead}/cancel")
        assert f"Job {dead} cancelled." in flashes(r.text)
        r = admin.post(f"/jobs/{dead}/delete")
        assert r.url.endswith("/jobs") and client.get(dead) is None

    def test_pause_and_resume_a_queue(self, admin, client, sql):
        client.enqueue("k", queue="emails")
        r = admin.post("/queues/emails/pause")
        assert "Queue emails paused." in flashes(r.text)
        assert sql("SELECT name, paused FROM jobqueue.queues") == [
            {"name": "emails", "paused": True}]
        assert 'action="/queues/emails/resume"' in r.text
        assert '<span class="tag"' in r.text
        r = admin.post("/queues/emails/resume")
        assert "Queue emails resumed." in flashes(r.text)
        assert sql("SELECT paused FROM jobqueue.queues") == [{"paused": False}]
        assert 'action="/queues/emails/pause"' in r.text
        r = admin.post("/queues/%20/pause")  # a blank name is said, not a 500
        assert r.status_code == 200 and "a name of 1 to" in " ".join(flashes(r.text))
        assert sql("SELECT count(*) AS n FROM jobqueue.queues")[0]["n"] == 1

    def test_set_caps_and_fairness_on_the_queues_page(self, admin, client, sql):
        client.enqueue("k", queue="lessons", owner="u1")
        page = admin.page("/queues")
        assert 'action="/queues/lessons/settings"' in page
        r = admin.post("/queues/lessons/settings", {"max_running": "30",
                                                    "max_running_per_owner": "3"})
        assert "Queue lessons: max running 30, per owner 3, fair." in flashes(r.text)
        assert sql("SELECT max_running, max_running_per_owner, fair FROM jobqueue.queues") == [
            {"max_running": 30, "max_running_per_owner": 3, "fair": True}]
        assert 'value="30"' in r.text and "checked" in r.text
        r = admin.post("/queues/lessons/settings", {"max_running": "0",
                                                    "max_running_per_owner": ""})
        assert "Queue lessons: max running: must be between 1" in flashes(r.text)[0]
        r = admin.post("/queues/lessons/settings", {"max_running": "",
                                                    "max_running_per_owner": ""})
        assert "Queue lessons: no caps, first come first served." in flashes(r.text)


def test_the_shared_filter_is_inlined_so_indexes_still_apply(sql):
    """jobqueue.dashboard_match (sql/0005) must stay an inlinable SQL function: planned with
    real values, its NULL conditions fold away and the dead-letter index serves state=dead."""
    params = {"ids": None, "upto": None, "queue": "q", "kind": None, "owner": None,
              "batch_id": None, "state": "dead", "text": None}
    sql("SET enable_seqscan = off")  # the tables are tiny: ask whether the index *can* apply
    plan = "\n".join(r["QUERY PLAN"] for r in sql("EXPLAIN " + q("jobs_match_counts"),
                                                  params))
    assert "dashboard_match" not in plan
    assert "finished_dead_idx" in plan
    assert "IS NULL" not in plan
