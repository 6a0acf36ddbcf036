"""What LLM work costs and the budgets that hold it, against the simulator and a real
Postgres: each result's cost, cache hits that cost nothing (their saving kept apart), sums per
batch and owner, and budgets that pause a batch within one call's cost of the limit, however
many calls run at once, and resume it when raised."""

from __future__ import annotations

import math

import psycopg
import pytest

from jobqueue import JobSpec
from jobqueue.llm import costs
from jobqueue.llm.prices import Price, PriceTable
from jobqueue.tasks import Registry
from tests.support.helpers import platform, wait_finished, wait_until

# Dear enough that a handful of short calls adds up to dollars.
SIM_PRICE = Price(input=1000.0, cached_input=500.0, output=2000.0)
PRICES = PriceTable({"sim-main": SIM_PRICE, "sim-small": Price(input=100.0, output=200.0)})
PROMPT = "Which CRM would you pick for a small team?"


def batch_of(client, count: int, owner: str = "alice", **payload) -> tuple[int, list[int]]:
    specs = [JobSpec("chat", {"prompt": f"{PROMPT} ({i})"} | payload, max_attempts=3)
             for i in range(count)]
    batch_id, _ = client.submit_batch(specs, queue="sim", name="t", owner=owner)
    ids = [j["id"] for j in client.batch_jobs(batch_id)]
    return batch_id, ids


class TestCostOfResults:
    def test_every_result_records_its_cost_from_the_price_table(self, client, sim,
                                                                platform_worker):
        platform_worker(platform(sim), prices=PRICES)
        _, ids = batch_of(client, 3)
        for job in wait_finished(client, ids):
            u = job.result["usage"]
            expected = (u["prompt_tokens"] * 1000 + u["completion_tokens"] * 2000) / 1e6
            assert job.result["cost_usd"] == pytest.approx(expected)
            assert job.result["cost_usd"] > 0

    def test_a_model_with_no_price_has_no_cost_never_a_guess(self, client, sim,
                                                             platform_worker):
        platform_worker(platform(sim), prices=PriceTable())
        batch_id, ids = batch_of(client, 2)
        jobs = wait_finished(client, ids)
        assert [j.result["cost_usd"] for j in jobs] == [None, None]
        figures = client.batch(batch_id)["costs"]
        assert (figures["calls"], figures["unpriced_calls"], figures["cost_usd"]) == (2, 2, 0)
        assert "no price" in figures["cost_note"]

    def test_a_cache_hit_costs_nothing_and_shows_what_it_saved(self, client, sim,
                                                               platform_worker):
        sim.configure(latency=0.2)
        platform_worker(platform(sim), prices=PRICES)
        specs = [JobSpec("chat", {"prompt": PROMPT, "temperature": 0}) for _ in range(5)]
        batch_id, _ = client.submit_batch(specs, queue="sim", owner="bob")
        jobs = wait_finished(client, [j["id"] for j in client.batch_jobs(batch_id)])
        paid = [j.result for j in jobs if not j.result["cached"]]
        hits = [j.result for j in jobs if j.result["cached"]]
        assert len(paid) == 1 and len(hits) == 4 and sim.stats()["totals"]["ok"] == 1
        for hit in hits:
            assert hit["usage"]["total_tokens"] == 0 and hit["cost_usd"] == 0
            assert hit["saved"] == {"usage": paid[0]["usage"], "cost_usd": paid[0]["cost_usd"]}
        figures = client.batch(batch_id)["costs"]
        # the batch's tokens are what the provider charged: one call's, not five
        assert figures["total_tokens"] == paid[0]["usage"]["total_tokens"]
        assert figures["cost_usd"] == pytest.approx(paid[0]["cost_usd"])
        assert (figures["calls"], figures["cache_hits"]) == (1, 4)
        assert figures["saved_usd"] == pytest.approx(4 * paid[0]["cost_usd"])

    def test_sums_per_batch_owner_and_platform(self, client, sim, platform_worker, db_url):
        platform_worker(platform(sim), prices=PRICES)
        _batch_a, ids_a = batch_of(client, 3, owner="alice")
        batch_b, ids_b = batch_of(client, 2, owner="bob")
        jobs = wait_finished(client, ids_a + ids_b)
        cost = {j.id: j.result["cost_usd"] for j in jobs}
        with psycopg.connect(db_url, autocommit=True) as conn:
            by_owner = {r["owner"]: r for r in costs.summary(conn, "owner")}
            by_platform = costs.summary(conn, "platform")
            by_batch = {r["batch"]: r for r in costs.summary(conn, "batch")}
        assert by_owner["alice"]["cost_usd"] == pytest.approx(sum(cost[i] for i in ids_a))
        assert by_owner["bob"]["calls"] == 2
        assert by_platform[0]["platform"] == "sim" and by_platform[0]["calls"] == 5
        assert by_batch[str(batch_b)]["cost_usd"] == pytest.approx(sum(cost[i] for i in ids_b))


class TestBudgets:
    def test_a_batch_stops_within_one_calls_cost_of_its_budget(self, client, sim,
                                                               platform_worker, db_url):
        """$0.50 for a batch of 120 jobs run 50 at a time: spend ends at most $0.50 and
        less than one call's estimate below it; the rest wait paused, attempts untouched."""
        sim.configure(latency=0.15)
        platform_worker(platform(sim), prices=PRICES, concurrency=50)
        batch_id, ids = batch_of(client, 120)
        with psycopg.connect(db_url, autocommit=True) as conn:
            costs.set_budget(conn, "batch", str(batch_id), "total", 0.50)

        def settled():
            b = client.batch(batch_id)
            return b["running"] == 0 and b["succeeded"] + b["costs"]["over_budget"] == 120

        wait_until(settled, timeout=60)
        b = client.batch(batch_id)
        spent = b["costs"]["cost_usd"]
        # one call's most possible cost: its prompt estimate plus max_tokens at the prices
        one_call = math.ceil(len(f"{PROMPT} (119)") / 4) * 1000 / 1e6 + 16 * 2000 / 1e6
        assert spent <= 0.50 + 1e-9
        assert spent > 0.50 - one_call
        assert 0 < b["succeeded"] < 120 and b["dead"] == 0
        waiting = [client.get(i) for i in ids]
        paused = [j for j in waiting if j.state not in ("succeeded",)]
        assert paused and all(j.attempts == 0 and not j.errors for j in paused)
        assert all(j.progress["paused"] == "over budget" for j in paused)
        assert "batch" in paused[0].progress["reason"]
        # Paused, they read as waiting (not `scheduled`), in the job and in the counts.
        assert {j.state for j in paused} == {"waiting"}
        assert b["waiting"] == len(paused) and b.get("scheduled", 0) == 0
        assert sim.stats()["totals"]["ok"] == b["succeeded"]

        # Raising the budget resumes them at once (not after the pause delay).
        with psycopg.connect(db_url, autocommit=True) as conn:
            result = costs.set_budget(conn, "batch", str(batch_id), "total", 100)
        assert result["resumed"] == len(paused)
        jobs = wait_finished(client, ids, timeout=60)
        assert all(j.state == "succeeded" for j in jobs)
        assert client.batch(batch_id)["costs"]["over_budget"] == 0

    def test_an_owner_budget_holds_across_batches_and_counts_past_spend(
            self, client, sim, platform_worker, db_url):
        platform_worker(platform(sim), prices=PRICES)
        _, first = batch_of(client, 2, owner="carol")
        done = wait_finished(client, first)
        spent = sum(j.result["cost_usd"] for j in done)
        with psycopg.connect(db_url, autocommit=True) as conn:
            (budget,) = [b for b in [costs.set_budget(conn, "owner", "carol", "day", spent)]]
            assert budget["spent_usd"] == pytest.approx(spent)
            assert budget["remaining_usd"] == pytest.approx(0, abs=1e-9)
        batch_id, ids = batch_of(client, 3, owner="carol")
        _other_batch, other = batch_of(client, 2, owner="dave")
        assert all(j.state == "succeeded" for j in wait_finished(client, other))
        wait_until(lambda: client.batch(batch_id)["costs"]["over_budget"] == 3)
        assert client.batch(batch_id)["costs"]["calls"] == 0
        with psycopg.connect(db_url, autocommit=True) as conn:
            removed = costs.remove_budget(conn, "owner", "carol")
        assert removed == {"removed": ["day"], "resumed": 3}
        assert all(j.state == "succeeded" for j in wait_finished(client, ids))

    def test_bad_budgets_are_refused_naming_the_field(self, db_url):
        with psycopg.connect(db_url, autocommit=True) as conn:
            for args, field in ((("team", "x", "day", 1), "scope"),
                                (("batch", "abc", "day", 1), "id"),
                                (("owner", "x", "week", 1), "period"),
                                (("owner", "x", "day", -1), "usd"),
                                (("owner", "x", "day", float("nan")), "usd")):
                with pytest.raises(ValueError, match=f"^{field}:"):
                    costs.set_budget(conn, *args)
            assert costs.list_budgets(conn) == []


class TestScopes:
    def test_the_fallback_share_and_its_price_per_batch(self, client, sim, platform_worker):
        sim.configure(model_limits={"sim-main": {"rpm": 6}})
        platform_worker(platform(sim, rpm=6, fallback_model="sim-small", fallback_rpm=6000,
                                 latency_budget=0.3), prices=PRICES)
        batch_id, ids = batch_of(client, 8, temperature=1)
        jobs = wait_finished(client, ids, timeout=30)
        fell_back = [j.result for j in jobs if j.result["fallback"]]
        assert fell_back, "no job used the fallback model: the test proves nothing"
        for r in fell_back:  # priced as the model that answered
            u = r["usage"]
            assert r["cost_usd"] == pytest.approx(
                (u["prompt_tokens"] * 100 + u["completion_tokens"] * 200) / 1e6)
        figures = client.batch(batch_id)["costs"]
        assert figures["fallback_calls"] == len(fell_back)
        assert figures["fallback_share"] == pytest.approx(len(fell_back) / 8, abs=1e-4)
        assert figures["cost_usd"] == pytest.approx(sum(j.result["cost_usd"] for j in jobs))

    def test_users_own_calls_are_charged_to_their_job_and_pause_at_its_budget(
            self, client, sim, platform_worker, db_url):
        reg = Registry()

        async def lesson(payload, ctx):
            llm = ctx.llm("sim")
            answer = await llm.chat.completions.create(
                messages=[{"role": "user", "content": payload["topic"]}], max_tokens=8,
                temperature=0)
            await llm.embeddings.create(input=[payload["topic"]])
            return {"tokens": answer.usage.total_tokens}

        reg.register("lesson", lesson)
        platform_worker(platform(sim), queue="lessons", tasks=reg, prices=PRICES)
        with psycopg.connect(db_url, autocommit=True) as conn:
            costs.set_budget(conn, "owner", "erin", "month", 0)
        specs = [JobSpec("lesson", {"topic": "same topic"}, queue="lessons") for _ in range(3)]
        batch_id, _ = client.submit_batch(specs, queue="lessons", owner="erin")
        ids = [j["id"] for j in client.batch_jobs(batch_id)]
        wait_until(lambda: client.batch(batch_id)["costs"]["over_budget"] == 3)
        assert sim.stats()["totals"]["ok"] == 0
        assert all(client.get(i).attempts == 0 for i in ids)
        with psycopg.connect(db_url, autocommit=True) as conn:
            costs.remove_budget(conn, "owner", "erin")
        jobs = wait_finished(client, ids)
        assert all(j.state == "succeeded" for j in jobs)
        # one chat call (the others were cache hits, with zero usage) and three embeddings
        assert sorted(j.result["tokens"] > 0 for j in jobs) == [False, False, True]
        figures = client.batch(batch_id)["costs"]
        # Calls exactly; cache hits at least 2 (an attempt run again on a busy machine hits
        # the cache again).
        assert figures["calls"] == 1 + 3 and figures["cache_hits"] >= 2
        assert figures["cost_usd"] > 0 and figures["unpriced_calls"] == 0
