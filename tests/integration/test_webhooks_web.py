"""The webhooks API and the dashboard's Webhooks page over real HTTP on loopback: the secret
answered once, owners kept apart, bad bodies answered 4xx naming the field (property-based),
deliveries listed, and redelivery from the API and from the dashboard (admin session and
CSRF)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobqueue import webhooks
from jobqueue.webhooks import subscriptions
from tests.support.web import Api, Dashboard, Server


@pytest.fixture(autouse=True)
def loopback_allowed(monkeypatch):
    monkeypatch.setenv("JOBQUEUE_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8")


@pytest.fixture
def server(db_url):
    s = Server(db_url)
    yield s
    s.close()


@pytest.fixture
def alice(server, make_token) -> Api:
    return Api(server.base, make_token("alice", ["read", "write"]))


@pytest.fixture
def ops(server, make_token) -> Api:
    return Api(server.base, make_token("ops", ["admin"]))


HOOK = "http://127.0.0.1:9/hook"


def finished_delivery(sql, subscription_id: int, state: str = "dead") -> int:
    """A delivery whose job has ended (none is queued for it)."""
    (row,) = sql("""INSERT INTO jobqueue.webhook_deliveries
                        (subscription_id, event_id, event_type, body, state, attempts,
                         response_code, last_error)
                    VALUES (%s, 'job.dead:1:x', 'job.dead', '{"id": "job.dead:1:x"}', %s, 10,
                            500, 'HTTP 500 Internal Server Error: <b>down</b>')
                    RETURNING id""", (subscription_id, state))
    return row["id"]


class TestApi:
    def test_create_answers_the_secret_once(self, alice):
        r = alice.post("/api/webhooks", json={"url": HOOK, "events": ["job.succeeded"]})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["secret"].startswith("whsec_") and created["owner"] == "alice"
        assert r.headers["Location"] == f"/api/webhooks/{created['id']}"
        listed = alice.get("/api/webhooks").json()["webhooks"]
        assert [w["id"] for w in listed] == [created["id"]]
        assert "secret" not in listed[0]
        assert "secret" not in alice.get(f"/api/webhooks/{created['id']}").json()

    def test_owners_see_and_change_only_their_own(self, server, alice, make_token, ops):
        mine = alice.post("/api/webhooks", json={"url": HOOK, "events": ["job.dead"]}).json()
        bob = Api(server.base, make_token("bob", ["read", "write"]))
        assert bob.get("/api/webhooks").json()["webhooks"] == []
        assert bob.get(f"/api/webhooks/{mine['id']}").status_code == 404
        assert bob.delete(f"/api/webhooks/{mine['id']}").status_code == 404
        assert bob.get(f"/api/webhooks/{mine['id']}/deliveries").status_code == 404
        assert [w["id"] for w in ops.get("/api/webhooks").json()["webhooks"]] == [mine["id"]]
        assert alice.delete(f"/api/webhooks/{mine['id']}").json() == {"id": mine["id"],
                                                                      "deleted": True}
        assert alice.get("/api/webhooks").json()["webhooks"] == []

    @pytest.mark.parametrize(("body", "status", "field"), [
        ({"url": HOOK}, 400, "events"),
        ({"url": HOOK, "events": []}, 400, "events"),
        ({"url": HOOK, "events": ["job.exploded"]}, 400, "events[0]"),  # as items[3] elsewhere
        ({"url": HOOK, "events": ["job.dead"], "max_attempts": 0}, 400, "max_attempts"),
        ({"url": HOOK, "events": ["job.dead"], "max_attempts": True}, 400, "max_attempts"),
        ({"url": HOOK, "events": ["job.dead"], "secret": "mine"}, 400, "secret"),
        ({"url": "ftp://example.com/", "events": ["job.dead"]}, 422, "url"),
        ({"url": "http://10.1.2.3/", "events": ["job.dead"]}, 422, "url"),
        ({"url": "http://169.254.169.254/", "events": ["job.dead"]}, 422, "url"),
        ({"url": HOOK, "events": ["alert.firing"]}, 422, "events"),
    ])
    def test_bad_bodies_name_the_field(self, alice, monkeypatch, body, status, field):
        monkeypatch.delenv("JOBQUEUE_WEBHOOK_ALLOW_PRIVATE")
        if body["url"] == HOOK:
            monkeypatch.setenv("JOBQUEUE_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8")
        r = alice.post("/api/webhooks", json=body)
        assert r.status_code == status, r.text
        assert r.json()["error"]["field"] == field

    def test_alert_events_are_for_admins(self, ops):
        r = ops.post("/api/webhooks", json={"url": HOOK, "events": ["alert.firing"],
                                            "format": "slack"})
        assert r.status_code == 201, r.text

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
            st.sampled_from(["url", "events", "format", "max_attempts", "description", "x"]),
            inner, max_size=5), max_leaves=12))
    def test_any_json_body_is_answered_without_a_5xx(self, alice, body):
        # NaN and Infinity too (json.dumps writes them; requests' json= refuses to)
        r = alice.post("/api/webhooks", data=json.dumps(body),
                       headers={"Content-Type": "application/json"})
        assert r.status_code in (201, 400, 415, 422), r.text
        if r.status_code != 201:
            assert r.json()["error"]["message"]

    def test_deliveries_and_redelivery(self, alice, client, sql):
        sub = alice.post("/api/webhooks", json={"url": HOOK, "events": ["job.dead"]}).json()
        delivery = finished_delivery(sql, sub["id"])
        listed = alice.get(f"/api/webhooks/{sub['id']}/deliveries").json()["deliveries"]
        assert [(d["id"], d["state"], d["response_code"]) for d in listed] == [
            (delivery, "dead", 500)]
        assert alice.get("/api/webhooks/deliveries?state=succeeded").json()["deliveries"] == []
        assert alice.get("/api/webhooks/deliveries?state=lost").status_code == 400
        assert alice.get("/api/webhooks/deliveries?limit=0").status_code == 400
        r = alice.post(f"/api/webhooks/deliveries/{delivery}/redeliver")
        assert (r.status_code, r.json()) == (202, {"id": delivery, "state": "pending"})
        assert alice.post(f"/api/webhooks/deliveries/{delivery}/redeliver").status_code == 409
        (row,) = sql("SELECT d.state, j.queue, j.kind, j.payload FROM "
                     "jobqueue.webhook_deliveries d JOIN jobqueue.jobs j ON j.id = d.job_id")
        assert row == {"state": "pending", "queue": "webhooks", "kind": "webhook.deliver",
                       "payload": {"delivery_id": delivery}}
        assert alice.post("/api/webhooks/deliveries/999/redeliver").status_code == 404


class TestDashboard:
    def test_the_page_shows_deliveries_and_redelivers_with_csrf(self, server, make_token,
                                                                 client, sql):
        with client.pool.connection() as conn:
            sub = subscriptions.create(conn, "alice", HOOK, ["job.dead"])
        delivery = finished_delivery(sql, sub["id"])
        admin = Dashboard(server.base)
        assert admin.sign_in(make_token("ops", ["admin"])).status_code == 302
        html = admin.page("/webhooks")
        assert HOOK in html and "job.dead:1:x" in html and ">500<" in html
        assert "&lt;b&gt;down&lt;/b&gt;" in html  # the receiver's answer stays text
        assert sub["secret"] not in html
        assert "dead" in admin.page("/webhooks?state=dead")
        path = f"/webhooks/deliveries/{delivery}/redeliver"
        assert admin.post(path, csrf=False).status_code == 400
        assert sql("SELECT state FROM jobqueue.webhook_deliveries")[0]["state"] == "dead"
        r = admin.post(path, allow_redirects=True)
        assert r.status_code == 200 and f"Delivery {delivery} queued again." in r.text
        assert sql("SELECT state FROM jobqueue.webhook_deliveries")[0]["state"] == "pending"
        assert "is still queued or running" in admin.post(path, allow_redirects=True).text

    def test_signed_out_the_page_sends_to_login(self, server):
        anon = Dashboard(server.base)
        r = anon.get("/webhooks", allow_redirects=False)
        assert r.status_code == 302 and "/login" in r.headers["Location"]


def test_emit_is_importable_from_the_package():
    assert callable(webhooks.emit) and callable(webhooks.emit_async)
