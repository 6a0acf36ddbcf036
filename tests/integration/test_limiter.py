"""The shared LLM limiter under contention (issue 13.5), against the simulator and a real
Postgres: a key blocked by a 429 restarts empty and slower (AIMD), equal keys share the
calls, the provider's headers are believed upward (minus what is in flight), the fallback
answers only when the provider limits the main model, a provider that counts every model
against the key is recognised from its 429s, and a contended run stays near the limit."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from structlog.testing import capture_logs

from jobqueue import db
from jobqueue.llm.ratelimit import Grant, Limiter, names_another_limit
from jobqueue.webhooks import subscriptions
from tests.support.helpers import KEYS, platform, run_cli, wait_finished, wait_until


@contextlib.contextmanager
def capture_logs_of(event: str):
    """The log entries of one event emitted inside the block."""
    found: list[dict] = []
    with capture_logs() as logs:
        yield found
    found.extend(e for e in logs if e["event"] == event)


def run(coro):
    return asyncio.run(coro)


async def _limiter(db_url, plat, env=KEYS):
    pool = AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False,
                               kwargs=db.connect_kwargs())
    await pool.open()
    limiter = Limiter(plat, plat.keys(env), pool)
    await limiter.ensure()
    return limiter, pool


def chat_jobs(client, count: int, **payload) -> list[int]:
    from jobqueue import JobSpec
    payload = {"prompt": "Which CRM would you pick for a small team?"} | payload
    return client.enqueue_many([JobSpec("chat", payload, queue="sim", max_attempts=3)
                                for _ in range(count)])


class TestBuckets:
    def test_a_blocked_key_restarts_empty_and_slower(self, db_url, sim, sql):
        plat = platform(sim, rpm=600, burst_seconds=1.0)  # 10 a second, 7 once slowed

        async def scenario():
            limiter, pool = await _limiter(db_url, plat)
            try:
                sql("UPDATE jobqueue.rate_buckets SET req_level = 10, updated_at = now()")
                grant = await limiter.acquire(10, plat.model)
                await limiter.block(grant, 1.0)
                left = sql("SELECT extract(epoch FROM blocked_until - now())::float8 AS s "
                           "FROM jobqueue.rate_buckets")[0]["s"]
                await asyncio.sleep(left + 0.02)  # just past the block: 0.14 refilled since
                return await limiter._reserve(plat.model, 10)
            finally:
                await pool.close()

        key_id, wait, _limited = run(scenario())
        # Before: refill counted from the start of the block gave a full bucket at its end.
        assert key_id is None and wait > 0, "the key came back from its block with budget"
        row = sql("SELECT rate_factor, in_flight_requests, provider_limited_until "
                  "FROM jobqueue.rate_buckets")[0]
        assert row["rate_factor"] == pytest.approx(0.7)
        assert row["in_flight_requests"] == 0  # the refused call is no longer in flight

    def test_equal_keys_share_the_calls(self, db_url, sim, sql):
        plat = platform(sim, api_key_env=("SIM_KEY_A", "SIM_KEY_B"), rpm=6000)

        async def scenario():
            limiter, pool = await _limiter(db_url, plat)
            try:
                picked = Counter()
                for _ in range(40):
                    sql("UPDATE jobqueue.rate_buckets SET req_level = 100, tok_level = 1e6, "
                        "updated_at = now()")
                    grant = await limiter.acquire(10, plat.model)
                    picked[grant.key.env] += 1
                return picked
            finally:
                await pool.close()

        picked = run(scenario())
        assert min(picked["SIM_KEY_A"], picked["SIM_KEY_B"]) >= 5, picked

    def test_the_providers_headers_are_believed_upward_minus_what_is_in_flight(
            self, db_url, sim, sql):
        plat = platform(sim, rpm=600, burst_seconds=1.0)

        async def scenario():
            limiter, pool = await _limiter(db_url, plat)
            try:
                sql("UPDATE jobqueue.rate_buckets SET req_level = 3, updated_at = now()")
                first = await limiter.acquire(10, plat.model)
                await limiter.acquire(10, plat.model)  # still in flight when the first settles
                await limiter.settle(first, 10, {"x-ratelimit-remaining-requests": "500",
                                                 "x-ratelimit-limit-requests": "600"})
            finally:
                await pool.close()

        run(scenario())
        row = sql("SELECT req_level, in_flight_requests FROM jobqueue.rate_buckets")[0]
        # 500 left at the provider, one of ours still on its way there.
        assert row["req_level"] == pytest.approx(499)
        assert row["in_flight_requests"] == 1


class TestScope:
    @pytest.mark.parametrize("message, wider", [
        ("Rate limit reached for sim-main in organization org-x on requests per min", False),
        ("Rate limit reached for sim-small in organization org-x on requests per min", True),
        ("Rate limit reached in organization org-x on requests per min (RPM)", True),
        ("upstream hiccup", False),
    ])
    def test_a_429_naming_no_model_or_another_shows_a_key_wide_limit(self, message, wider):
        assert names_another_limit(message, "sim-main") is wider

    def test_a_key_scoped_provider_is_learned_and_shared_by_every_model(self, db_url, sim, sql):
        sim.configure(limit_scope="key")
        plat = platform(sim, rpm=600, fallback_model="sim-small")

        async def scenario():
            limiter, pool = await _limiter(db_url, plat)
            try:
                key = plat.keys(KEYS)[0]
                grant = Grant(key, plat.model, 10, 0.0, plat.model)
                await limiter.block(grant, 0.01, "Rate limit reached in organization org-sim "
                                                 "on requests per min (RPM): Limit 600")
                return limiter.scope, limiter.bucket("sim-small")
            finally:
                await pool.close()

        scope, bucket = run(scenario())
        assert (scope, bucket) == ("key", "*")
        assert sql("SELECT scope FROM jobqueue.rate_scopes")[0]["scope"] == "key"
        assert sql("SELECT count(*) AS n FROM jobqueue.rate_buckets WHERE model = '*'")[0]["n"]

    def test_a_configured_key_scope_gives_the_fallback_no_budget_of_its_own(
            self, client, sim, platform_worker, sql):
        sim.configure(limit_scope="key", keys={"sk-sim-a": {"rpm": 600}})
        platform_worker(platform(sim, rpm=600, fallback_model="sim-small", latency_budget=0.1,
                                 limit_scope="key"))
        jobs = wait_finished(client, chat_jobs(client, 20, temperature=1), timeout=30)
        assert all(j.state == "succeeded" and not j.result["fallback"] for j in jobs)
        models = {r["model"] for r in sql("SELECT DISTINCT model FROM jobqueue.rate_buckets")}
        assert models == {"*"}


class TestFallback:
    def test_no_fallback_when_only_our_own_backlog_waits(self, client, sim, platform_worker):
        """The provider has plenty left; our configured pace is what makes jobs wait."""
        platform_worker(platform(sim, rpm=120, burst_seconds=0.5, fallback_model="sim-small",
                                 latency_budget=0.1))
        jobs = wait_finished(client, chat_jobs(client, 12, temperature=1), timeout=30)
        assert all(j.state == "succeeded" for j in jobs)
        assert [j.result["model"] for j in jobs] == ["sim-main"] * 12, \
            "the fallback answered although the provider never limited the main model"

    def test_a_job_can_forbid_the_fallback(self, client, sim, platform_worker):
        sim.configure(model_limits={"sim-main": {"rpm": 6}})
        platform_worker(platform(sim, rpm=6, fallback_model="sim-small", fallback_rpm=6000,
                                 latency_budget=0.3, burst_seconds=60))
        allowed = chat_jobs(client, 10, temperature=1)
        forbidden = chat_jobs(client, 1, temperature=1, fallback=False)
        jobs = wait_finished(client, allowed + forbidden, timeout=60)
        assert any(j.result["fallback"] for j in jobs[:-1])
        assert jobs[-1].result["model"] == "sim-main"


class TestContention:
    def test_two_workers_with_a_fallback_on_a_key_scoped_provider_stay_near_the_limit(
            self, client, sim, platform_worker):
        """The livelock's ingredients at small scale: a provider that counts both models
        against the key and counts refused requests, a fallback configured per model (so its
        scope must be learned), and two workers contending."""
        sim.configure(limit_scope="key", refused_spend=True,
                      keys={"sk-sim-a": {"rpm": 600, "tpm": 1_000_000}})
        plat = platform(sim, rpm=600, tpm=1_000_000, fallback_model="sim-small",
                        latency_budget=0.2, burst_seconds=1.0)
        for _ in range(2):
            platform_worker(plat, concurrency=64)
        jobs = wait_finished(client, chat_jobs(client, 300, temperature=1), timeout=90)
        assert all(j.state == "succeeded" for j in jobs)
        totals = sim.stats()["totals"]
        refused = totals["rejected_429"] / (totals["rejected_429"] + totals["accepted"])
        assert refused < 0.05, totals


class TestCacheUnderBacklog:
    def test_identical_calls_waiting_behind_a_tight_limit_make_one_call(
            self, client, sim, platform_worker):
        """The in-flight entry outlives its pending time while its call waits for budget
        (before: it lapsed after twice the call timeout and the other worker called too), and
        a re-run is answered from the cache."""
        plat = platform(sim, rpm=60, burst_seconds=2.0, timeout=0.5)  # pending entry: 1 s
        for _ in range(2):  # two caches: as two processes
            platform_worker(plat, concurrency=200)
        prompt = {"prompt": "The same question, asked by everyone.", "temperature": 0}
        ahead = chat_jobs(client, 3, temperature=1)  # the budget goes to these first
        same = chat_jobs(client, 1000, **prompt)
        jobs = wait_finished(client, ahead + same, timeout=90)
        assert all(j.state == "succeeded" for j in jobs)
        assert sim.stats()["totals"]["ok"] == 3 + 1, "an identical call was made twice"
        rerun = wait_finished(client, chat_jobs(client, 40, **prompt), timeout=30)
        assert all(j.result["cached"] for j in rerun)
        assert sim.stats()["totals"]["ok"] == 4


class TestKeysThatFail:
    def test_a_rejected_key_is_disabled_alone_and_the_others_serve(
            self, client, sim, platform_worker, sql):
        env = dict(KEYS, SIM_KEY_B="sk-wrong")  # B is not a key the provider knows
        plat = platform(sim, api_key_env=("SIM_KEY_A", "SIM_KEY_B"))
        with capture_logs_of("llm_key_disabled") as logs:
            platform_worker(plat, environ=env)
            jobs = wait_finished(client, chat_jobs(client, 30, temperature=1), timeout=30)
        assert all(j.state == "succeeded" and j.result["key"].startswith("SIM_KEY_A:")
                   for j in jobs)
        assert all(j.attempts == 1 for j in jobs), "a job spent an attempt on the wrong key"
        rows = {r["key_id"].split(":")[0]: r["disabled_reason"]
                for r in sql("SELECT key_id, disabled_reason FROM jobqueue.rate_buckets")}
        assert rows["SIM_KEY_A"] is None
        assert rows["SIM_KEY_B"].startswith("the provider rejected the key (401)")
        assert logs and "top up" not in str(logs)

    def test_with_no_usable_key_jobs_wait_untouched_until_a_key_is_enabled(
            self, client, sim, platform_worker, sql, db_url, monkeypatch):
        monkeypatch.setenv("JOBQUEUE_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8")
        env = dict(KEYS, SIM_KEY_A="sk-wrong")
        plat = platform(sim)
        with psycopg.connect(db_url, autocommit=True) as conn:  # where the alert goes
            subscriptions.create(conn, "ops", "http://127.0.0.1:9/hook",
                                 ["alert.firing", "alert.resolved"], admin=True)
        platform_worker(plat, environ=env)
        ids = chat_jobs(client, 20, temperature=1)
        wait_until(lambda: sql("SELECT count(*) AS n FROM jobqueue.rate_buckets "
                               "WHERE disabled_reason IS NOT NULL")[0]["n"] > 0,
                   message="the wrong key disabled")
        # Jobs already claimed come back unspent; nothing more is claimed.
        wait_until(lambda: sql("SELECT count(*) AS n FROM jobqueue.jobs "
                               "WHERE queue = 'sim' AND lease_owner IS NULL")[0]["n"] == 20,
                   message="every job waiting again")
        claims_before = sim.stats()["totals"]["requests"]
        time.sleep(3)  # two gate periods: nothing may be claimed or called meanwhile
        rows = sql("SELECT attempts, lease_owner FROM jobqueue.jobs WHERE queue = 'sim'")
        assert len(rows) == 20 and all(r["attempts"] == 0 and r["lease_owner"] is None
                                       for r in rows)
        assert sim.stats()["totals"]["requests"] == claims_before
        alerts = sql("SELECT event_type, body FROM jobqueue.webhook_deliveries")
        assert [a["event_type"] for a in alerts] == ["alert.firing"], alerts
        assert alerts[0]["body"]["data"]["rule"] == "platform_no_usable_key"
        # The provider accepts the key now (it was topped up, say): enabling it is enough.
        sim.configure(keys={"sk-wrong": None})
        result = run_cli("keys", "enable", "SIM_KEY_A", url=db_url)
        assert result.returncode == 0 and "enabled SIM_KEY_A:" in result.stdout
        jobs = wait_finished(client, ids, timeout=30)
        assert all(j.state == "succeeded" and j.attempts == 1 for j in jobs)
        assert sorted(a["event_type"] for a in sql(
            "SELECT event_type FROM jobqueue.webhook_deliveries")) == \
            ["alert.firing", "alert.resolved"]

    def test_a_chat_without_a_prompt_is_refused_at_enqueue(self, db_url, sim, tmp_path, sql):
        config = tmp_path / "jobqueue.toml"
        config.write_text(f'[platforms.sim]\nbase_url = "{sim.base_url}"\nmodel = "m"\n'
                          'api_key_env = "SIM_KEY_A"\n')
        result = run_cli("enqueue", "--platform", "sim", url=db_url,
                         env={"JOBQUEUE_CONFIG": str(config)})
        assert result.returncode == 2
        assert "payload: give exactly one of prompt or messages (--prompt gives one)" \
            in result.stderr and "Traceback" not in result.stderr
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs")[0]["n"] == 0
