"""Costs and budgets over real HTTP: a batch's figures in its JSON, `/api/costs` per owner
(owners see their own), budgets set and removed through the API with their permissions and
bad input as 4xx naming the field, and the cost counters in /metrics."""

from __future__ import annotations

import pytest

from jobqueue.llm.prices import Price, PriceTable
from tests.support.helpers import platform, wait_finished
from tests.support.web import Api, Dashboard, Server

PRICES = PriceTable({"sim-main": Price(input=1000.0, output=2000.0)})


@pytest.fixture
def server(db_url, config_file):
    s = Server(db_url, JOBQUEUE_CONFIG=config_file)
    yield s
    s.close()


@pytest.fixture
def alice(server, make_token):
    return Api(server.base, make_token("alice"))


@pytest.fixture
def admin(server, make_token):
    return Api(server.base, make_token("root", scopes=("read", "write", "admin")))


def run_batch(api, client, count=2) -> int:
    r = api.post("/api/batches", json={"platform": "sim", "items": [
        {"prompt": f"question {i}"} for i in range(count)]})
    assert r.status_code == 201, r.text
    batch_id = r.json()["id"]
    wait_finished(client, [j["id"] for j in client.batch_jobs(batch_id)])
    return batch_id


def test_batch_json_and_costs_endpoint(server, alice, make_token, client, sim,
                                       platform_worker):
    platform_worker(platform(sim), prices=PRICES)
    batch_id = run_batch(alice, client)
    bob = Api(server.base, make_token("bob"))
    run_batch(bob, client, count=1)
    figures = alice.get(f"/api/batches/{batch_id}").json()["costs"]
    assert figures["calls"] == 2 and figures["cost_usd"] > 0
    assert figures["fallback_share"] == 0.0 and figures["over_budget"] == 0
    mine = alice.get("/api/costs?by=owner").json()
    assert [r["owner"] for r in mine["rows"]] == ["alice"]  # never bob's
    assert mine["rows"][0]["cost_usd"] == pytest.approx(figures["cost_usd"])
    by_batch = alice.get("/api/costs?by=batch&days=1").json()["rows"]
    assert [r["batch"] for r in by_batch] == [str(batch_id)]
    for query, field in (("by=week", "by"), ("days=0", "days"), ("days=x", "days")):
        r = alice.get(f"/api/costs?{query}")
        assert r.status_code == 400 and r.json()["error"]["field"] == field, r.text


def test_metrics_count_cost_tokens_and_calls(server, alice, admin, client, sim,
                                             platform_worker):
    platform_worker(platform(sim), prices=PRICES)
    batch_id = run_batch(alice, client)
    cost = alice.get(f"/api/batches/{batch_id}").json()["costs"]["cost_usd"]
    text = admin.get("/metrics").text
    line = next(x for x in text.splitlines()
                if x.startswith('jobqueue_llm_cost_usd_total{model="sim-main",platform="sim"}'))
    assert float(line.split()[-1]) == pytest.approx(cost)
    assert 'jobqueue_llm_calls_total{answered_by="main",model="sim-main",platform="sim"} 2.0' \
        in text
    assert 'jobqueue_llm_billed_tokens_total{kind="completion"' in text


def test_budgets_through_the_api(server, alice, admin, make_token, client, sim,
                                 platform_worker):
    platform_worker(platform(sim), prices=PRICES)
    batch_id = run_batch(alice, client, count=1)
    # a batch's owner may cap their batch; an owner budget is an admin's
    r = alice.put(f"/api/budgets/batch/{batch_id}/total", json={"usd": 0.25})
    assert r.status_code == 200, r.text
    assert (r.json()["limit_usd"], r.json()["resumed"]) == (0.25, 0)
    assert r.json()["spent_usd"] > 0
    assert alice.put("/api/budgets/owner/alice/day", json={"usd": 9}).status_code == 403
    bob = Api(server.base, make_token("bob"))
    assert bob.put(f"/api/budgets/batch/{batch_id}/total", json={"usd": 9}).status_code == 404
    assert bob.get("/api/budgets").json()["budgets"] == []
    assert admin.put("/api/budgets/owner/alice/month", json={"usd": 5}).status_code == 200
    listed = alice.get("/api/budgets").json()["budgets"]
    assert {(b["scope"], b["period"]) for b in listed} == {("batch", "total"),
                                                          ("owner", "month")}
    for path, body, field in (("/api/budgets/owner/alice/week", {"usd": 1}, "period"),
                              ("/api/budgets/team/x/day", {"usd": 1}, "scope"),
                              ("/api/budgets/owner/alice/day", {"usd": "1"}, "usd"),
                              ("/api/budgets/owner/alice/day", {"usd": -2}, "usd"),
                              ("/api/budgets/owner/alice/day", {}, "usd"),
                              ("/api/budgets/owner/alice/day", {"usd": 1, "x": 2}, "x")):
        r = admin.put(path, json=body)
        assert r.status_code == 400 and r.json()["error"]["field"] == field, (path, r.text)
    assert admin.delete("/api/budgets/owner/alice").json() == {"removed": ["month"],
                                                               "resumed": 0}
    assert admin.delete("/api/budgets/owner/alice").status_code == 404
    # Batch ids no batch can have ('²' passes str.isdigit; past bigint; past int()'s digits):
    # a PUT is 400 naming the id, a DELETE 404 (an owner's: as someone else's batch), never
    # 500; and nothing stored that would break the listing for everyone.
    for odd in ("%C2%B2", "9223372036854775808", "9" * 5000, "0", "-1"):
        for api in (admin, alice):
            r = api.put(f"/api/budgets/batch/{odd}/day", json={"usd": 1})
            assert r.status_code == 400 and r.json()["error"]["field"] == "id", (odd, r.text)
        assert alice.delete(f"/api/budgets/batch/{odd}/day").status_code == 404
        assert admin.delete(f"/api/budgets/batch/{odd}/day").status_code == 404
    assert alice.get("/api/budgets").status_code == 200
    r = admin.get("/api/quotas?owner=%00")
    assert r.status_code == 400 and r.json()["error"]["field"] == "owner", r.text


def test_dashboard_costs_page_and_batch_figures(server, alice, admin, make_token, client, sim,
                                                platform_worker):
    platform_worker(platform(sim), prices=PRICES)
    batch_id = run_batch(alice, client)
    cost = alice.get(f"/api/batches/{batch_id}").json()["costs"]["cost_usd"]
    admin.put(f"/api/budgets/batch/{batch_id}/total", json={"usd": cost})  # used up
    board = Dashboard(server.base)
    assert board.sign_in(make_token("ops", ["admin"])).status_code == 302
    page = board.page("/costs")
    money = f"${cost:.4f}"
    assert "Per owner" in page and ">alice<" in page and money in page
    assert "over budget: jobs paused" in page
    batches = board.page("/batches")
    assert money in batches and "tok" in batches
