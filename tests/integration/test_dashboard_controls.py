"""The dashboard's controls and roles over real HTTP: the read-only role (every page, no
button, every POST 403), run-now of a scheduled job, quiet and stop of a worker (it finishes
what it runs), re-enabling a disabled API key."""

from __future__ import annotations

import re
import threading

import pytest
import requests

from jobqueue.tasks import Registry
from tests.integration.test_dashboard import dashboard_rules, finished_job
from tests.support.helpers import wait_until
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
    d.get("/jobs")
    return d


@pytest.fixture
def viewer(server, make_token) -> Dashboard:
    d = Dashboard(server.base)
    assert d.sign_in(make_token("auditor", ["read", "viewer"])).status_code == 302
    d.get("/jobs")
    return d


def post_forms(html: str) -> list[str]:
    """The actions of the page's POST forms, sign-out left out."""
    return [a for a in re.findall(r'<form method="post" action="([^"]*)"', html)
            if a != "/logout"] + re.findall(r'formaction="([^"]*)"', html)


class TestReadOnly:
    @pytest.fixture
    def data(self, client, sql):
        dead = finished_job(sql, state="dead")
        waiting = client.enqueue("k", queue="q")
        later = client.enqueue("k", queue="q", delay=3600)
        batch_id, _ = client.submit_batch([], queue="q", name="b")
        sql("""INSERT INTO jobqueue.rate_buckets (platform, model, key_id, rpm_configured,
                 tpm_configured, rpm, tpm, req_level, tok_level, disabled_reason)
               VALUES ('openai', 'm', 'KEY:ab12', 10, 1000, 10, 1000, 1, 1,
                       'insufficient_quota')""")
        return {"dead": dead, "waiting": waiting, "later": later, "batch": batch_id}

    def test_a_read_only_token_sees_every_page_without_a_button(self, viewer, admin, data):
        pages = ["/", "/queues", "/jobs", f"/jobs/{data['dead']}", f"/jobs/{data['later']}",
                 "/dead", "/batches", f"/batches/{data['batch']}", "/workers", "/limits",
                 "/charts", "/schedules", "/webhooks", "/costs",
                 "/jobs/bulk?action=retry&state=dead"]
        for path in pages:
            html = viewer.page(path)
            assert post_forms(html) == [], (path, post_forms(html))
            assert 'id="read-only"' in html
        # the same pages have their buttons for an admin
        assert post_forms(admin.page(f"/jobs/{data['dead']}"))
        assert post_forms(admin.page(f"/jobs/{data['later']}"))
        assert post_forms(admin.page("/limits"))
        assert post_forms(admin.page("/dead"))

    def test_every_post_of_a_read_only_session_is_403_and_changes_nothing(
            self, viewer, server, client, data):
        """With the session's own CSRF token, as a forged form would not even have."""
        for method, path in dashboard_rules(server.app):
            if method != "POST" or path == "/logout":
                continue
            r = viewer.post(path, {"ids": str(data["dead"]), "all": "1", "action": "retry"},
                            allow_redirects=False)
            assert r.status_code == 403, (path, r.status_code)
        for path in (f"/jobs/{data['dead']}/retry", f"/jobs/{data['waiting']}/cancel",
                     f"/jobs/{data['later']}/run-now", "/dead/retry", "/queues/q/pause",
                     f"/batches/{data['batch']}/cancel"):
            r = viewer.post(path, {"all": "1"}, allow_redirects=False)
            assert r.status_code == 403 and "read-only" in r.text
        assert client.get(data["dead"]).state == "dead"
        assert client.get(data["waiting"]).state == "waiting"
        assert client.get(data["later"]).state == "scheduled"

    def test_a_read_only_session_signs_out(self, viewer):
        assert viewer.post("/logout", allow_redirects=False).headers["Location"] == "/login"
        assert viewer.get("/", allow_redirects=False).status_code == 302

    def test_a_token_with_read_alone_cannot_sign_in(self, server, make_token):
        """An application's users hold read tokens for their own jobs: the dashboard, which
        shows every owner's, needs the viewer scope given on purpose."""
        r = Dashboard(server.base).sign_in(make_token("alice", ["read"]))
        assert r.status_code == 403 and "viewer" in r.text

    def test_viewer_adds_nothing_in_the_api(self, server, make_token, client):
        """A viewer token sees its own owner's jobs through the API, as read does."""
        mine = client.enqueue("k", owner="auditor")
        theirs = client.enqueue("k", owner="someone-else")
        token = make_token("auditor", ["read", "viewer"])
        headers = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{server.base}/api/jobs/{mine}", headers=headers).status_code == 200
        assert requests.get(f"{server.base}/api/jobs/{theirs}",
                            headers=headers).status_code == 404

    def test_read_and_write_without_admin_is_still_refused(self, server, make_token):
        r = Dashboard(server.base).sign_in(make_token("alice", ["read", "write"]))
        assert r.status_code == 403


class TestRunNow:
    def test_a_scheduled_job_runs_now_and_the_timeline_says_who(self, admin, client):
        later = client.enqueue("k", queue="q", delay=3600)
        html = admin.page(f"/jobs/{later}")
        assert "Run now" in html and 'id="runs-at"' in html
        r = admin.post(f"/jobs/{later}/run-now")
        assert "is due now" in r.text
        assert client.get(later).state == "waiting"
        assert "run now by ops" in admin.page(f"/jobs/{later}")

    def test_run_now_of_a_job_that_is_not_waiting_for_its_time(self, admin, client):
        due = client.enqueue("k", queue="q")
        r = admin.post(f"/jobs/{due}/run-now")
        assert "was not made due" in r.text
        r = admin.post("/jobs/999999/run-now")  # said, then the job's page: not found
        assert r.status_code == 404

    def test_the_worker_wakes_for_a_job_made_due(self, admin, client, start_worker):
        ran = threading.Event()
        tasks = Registry()
        tasks.register("k", lambda payload: ran.set())
        later = client.enqueue("k", queue="q", delay=3600)
        start_worker(tasks, queue="q", poll_seconds=60)
        admin.post(f"/jobs/{later}/run-now")
        assert ran.wait(10)


class TestWorkerControls:
    def start(self, start_worker, release: threading.Event, started: threading.Event):
        tasks = Registry()

        def hold(payload):
            started.set()
            assert release.wait(30)
            return {"ok": True}

        tasks.register("hold", hold)
        return start_worker(tasks, queue="w", concurrency=2, heartbeat_seconds=0.2)

    def test_stop_finishes_what_it_runs_and_exits(self, admin, client, start_worker, sql):
        release, started = threading.Event(), threading.Event()
        worker = self.start(start_worker, release, started)
        running = client.enqueue("hold", queue="w")
        assert started.wait(10)
        worker_id = str(worker.worker.id)
        # per-worker counters, from its heartbeat: 1 claimed, 0 finished, 3 connections
        wait_until(lambda: re.search(r"<td class=\"num\">1</td><td class=\"num\">0</td>\s*"
                                     r"<td class=\"num\">3</td>", admin.page("/workers")),
                   message="the Workers page shows claimed 1, finished 0, 3 connections")
        assert f"/workers/{worker_id}/stop" in admin.page("/workers")
        r = admin.post(f"/workers/{worker_id}/stop")
        assert "asked to stop" in r.text
        wait_until(lambda: worker.worker._stopping, message="the worker to read the stop")
        waiting = client.enqueue("hold", queue="w")
        assert worker.thread.is_alive()  # still running the held job
        release.set()
        worker.thread.join(10)
        assert not worker.thread.is_alive()
        assert client.get(running).state == "succeeded"
        assert client.get(waiting).state == "waiting"  # never claimed
        assert sql("SELECT count(*) AS n FROM jobqueue.workers")[0]["n"] == 0

    def test_quiet_claims_nothing_more_and_keeps_running(self, admin, client, start_worker):
        release, started = threading.Event(), threading.Event()
        worker = self.start(start_worker, release, started)
        first = client.enqueue("hold", queue="w")
        assert started.wait(10)
        admin.page("/workers")
        assert "asked to quiet" in admin.post(f"/workers/{worker.worker.id}/quiet").text
        wait_until(lambda: worker.worker._quiet, message="the worker to read the quiet")
        assert "quiet</span>" in admin.page("/workers")
        second = client.enqueue("hold", queue="w")
        release.set()
        wait_until(lambda: client.get(first).state == "succeeded", message="the held job")
        assert worker.thread.is_alive()
        assert client.get(second).state == "waiting"

    def test_bad_worker_ids(self, admin):
        assert admin.post("/workers/not-a-uuid/stop").status_code == 400
        r = admin.post("/workers/00000000-0000-0000-0000-000000000000/stop")
        assert r.status_code == 404


class TestKeys:
    def test_a_disabled_key_is_enabled_again(self, admin, sql):
        sql("""INSERT INTO jobqueue.rate_buckets (platform, model, key_id, rpm_configured,
                 tpm_configured, rpm, tpm, req_level, tok_level, disabled_reason)
               VALUES ('openai', 'm', 'KEY:ab12', 10, 1000, 10, 1000, 1, 1,
                       'insufficient_quota: You exceeded your current quota, please check')""")
        html = admin.page("/limits")
        assert ">disabled</span>" in html and "Enable" in html
        r = admin.post("/limits/keys/enable", {"platform": "openai", "key_id": "KEY:ab12"})
        assert "enabled" in r.text
        assert sql("SELECT disabled_reason FROM jobqueue.rate_buckets")[0]["disabled_reason"] \
            is None
        assert admin.post("/limits/keys/enable", {"platform": "openai", "key_id": "nope"}) \
            .status_code == 404
        r = admin.post("/limits/keys/enable", {"platform": "", "key_id": "x"})
        assert r.status_code == 400 and "platform:" in r.text
