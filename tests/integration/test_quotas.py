"""Per-owner quotas at enqueue (jobqueue/quotas.py): the Python API, batches whole and
partial, token budgets, and concurrent enqueuers that never exceed a quota."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobqueue import Client, JobSpec, QuotaExceeded, quotas
from jobqueue.db import store
from jobqueue.errors import ConfigError


def set_quota(client, key: str, jobs: str | None = None, tokens: str | None = None) -> None:
    scope, name = quotas.parse_key(key)
    quota = quotas.Quota(scope, name, jobs=quotas.parse_rate(jobs) if jobs else None,
                         tokens=quotas.parse_rate(tokens) if tokens else None)
    with client.pool.connection() as conn:
        quotas.store(conn, quota)


def count_jobs(sql, **where) -> int:
    cond = " AND ".join(f"{k} = %({k})s" for k in where) or "true"
    return sql(f"SELECT count(*) AS n FROM jobqueue.jobs WHERE {cond}", where)[0]["n"]


class TestPythonApi:
    def test_over_the_quota_raises_with_the_retry_time_and_enqueues_nothing(self, client, sql):
        """10/hour on kind lesson: ten pass, the eleventh raises QuotaExceeded naming the quota,
        the owner and when to retry (6 minutes: one job's refill), and is not enqueued."""
        set_quota(client, "kind:lesson", "10/hour")
        for _ in range(10):
            client.enqueue("lesson", {}, owner="u1")
        with pytest.raises(QuotaExceeded) as caught:
            client.enqueue("lesson", {}, owner="u1")
        exc = caught.value
        assert (exc.quota, exc.owner, exc.budget, exc.limit) == ("kind:lesson", "u1", "jobs", 10)
        assert 355 <= exc.retry_after <= 361
        assert abs((exc.retry_at - datetime.now(UTC)).total_seconds() - exc.retry_after) < 5
        assert exc.remaining < 1 and "kind:lesson" in str(exc) and "retry in" in str(exc)
        assert count_jobs(sql, kind="lesson") == 10

    def test_create_reports_the_standing_of_a_job_that_waits(self, client):
        """A job that waits (depends_on) is charged like any other, and Client.create says
        where its owner stands after the charge, as for a plain job (the web API's X-Quota
        headers come from it)."""
        set_quota(client, "kind:lesson", "10/hour")
        parent = client.enqueue("other", owner="u1")
        plain = client.create(JobSpec("lesson", owner="u1"))
        waiting = client.create(JobSpec("lesson", owner="u1", depends_on=[parent]))
        assert plain.quota is not None and waiting.quota is not None
        assert waiting.quota.quota == "kind:lesson"
        assert waiting.quota.remaining == pytest.approx(plain.quota.remaining - 1, abs=0.01)

    def test_quotas_are_per_owner_and_per_kind(self, client, sql):
        """Another owner, another kind, and jobs without an owner are not charged."""
        set_quota(client, "kind:lesson", "2/hour")
        client.enqueue_many([JobSpec("lesson", owner="a"), JobSpec("lesson", owner="a")])
        client.enqueue("lesson", owner="b")
        client.enqueue("upload", owner="a")
        client.enqueue_payloads("lesson", [{}] * 5)  # no owner: no quota
        with pytest.raises(QuotaExceeded):
            client.enqueue("lesson", owner="a")
        assert count_jobs(sql, kind="lesson") == 8

    def test_bulk_payloads_are_charged_whole_or_loaded_whole(self, client, sql):
        """enqueue_payloads at COPY size (store.COPY_FROM and over): with an owner the batch
        is charged to its quota and refused whole when over it (partial takes what fits);
        without one it skips the quota and loads every row, ids in payload order."""
        n = store.COPY_FROM + 500
        set_quota(client, "kind:bulk", f"{n - 1}/hour")
        with pytest.raises(QuotaExceeded):
            client.enqueue_payloads("bulk", [{"i": i} for i in range(n)], owner="o")
        assert count_jobs(sql, kind="bulk") == 0
        taken = client.enqueue_payloads("bulk", [{"i": i} for i in range(n)], owner="o",
                                        partial=True)
        assert len(taken) == n - 1
        ids = client.enqueue_payloads("bulk", [{"i": i} for i in range(n)])
        rows = sql("SELECT id, payload, owner FROM jobqueue.jobs WHERE id = ANY(%(ids)s)",
                   {"ids": ids})
        by_id = {r["id"]: r for r in rows}
        assert [by_id[i]["payload"]["i"] for i in ids] == list(range(n))
        assert all(r["owner"] is None for r in rows) and ids == sorted(ids)
        assert count_jobs(sql, kind="bulk") == 2 * n - 1

    def test_queue_quota_counts_every_kind_on_the_queue(self, client):
        set_quota(client, "queue:uploads", "3/min")
        client.enqueue("a", queue="uploads", owner="o")
        client.enqueue_payloads("b", [{}, {}], queue="uploads", owner="o")
        with pytest.raises(QuotaExceeded) as caught:
            client.enqueue("c", queue="uploads", owner="o")
        assert caught.value.quota == "queue:uploads"
        assert 19 <= caught.value.retry_after <= 21  # 3/min refills one every 20 s

    def test_enqueue_many_whole_or_partial(self, client, sql):
        """Over the quota, enqueue_many refuses everything; with partial it takes the first
        jobs that fit and returns only their ids."""
        set_quota(client, "kind:k", "5/hour")
        specs = [JobSpec("k", {"i": i}, owner="o") for i in range(8)]
        with pytest.raises(QuotaExceeded) as caught:
            client.enqueue_many(specs)
        assert "more than the whole quota" in str(caught.value)
        assert count_jobs(sql, kind="k") == 0
        ids = client.enqueue_many(specs, partial=True)
        assert [client.get(i).payload["i"] for i in ids] == [0, 1, 2, 3, 4]
        with pytest.raises(QuotaExceeded):
            client.enqueue_many(specs, partial=True)  # not even one fits now

    def test_refill_lets_work_through_again(self, client, sql):
        """The bucket refills continuously: after its period it is full again."""
        set_quota(client, "kind:k", "2/1s")
        client.enqueue_payloads("k", [{}, {}], owner="o")
        with pytest.raises(QuotaExceeded):
            client.enqueue("k", owner="o")
        sql("UPDATE jobqueue.quota_usage SET updated_at = updated_at - interval '1 second'")
        client.enqueue_payloads("k", [{}, {}], owner="o")

    def test_changing_and_removing_a_quota_applies_at_once(self, client):
        set_quota(client, "kind:k", "1/hour")
        client.enqueue("k", owner="o")
        with pytest.raises(QuotaExceeded):
            client.enqueue("k", owner="o")
        with client.pool.connection() as conn:
            assert quotas.remove(conn, "kind", "k")
            assert not quotas.remove(conn, "kind", "k")
        client.enqueue("k", owner="o")

    def test_token_budget_charges_the_estimate(self, client):
        """A token budget counts each chat job's estimate: prompt chars / 4 + max_tokens."""
        set_quota(client, "queue:llm", tokens="1000/hour")
        prompt = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 300}
        assert quotas.estimate_tokens(prompt) == 400
        client.enqueue("chat", prompt, queue="llm", owner="o")
        client.enqueue("chat", prompt, queue="llm", owner="o")
        with pytest.raises(QuotaExceeded) as caught:
            client.enqueue("chat", prompt, queue="llm", owner="o")
        assert caught.value.budget == "tokens" and caught.value.limit == 1000
        assert 0 <= caught.value.remaining <= 201

    def test_a_debit_after_enqueue_puts_the_owner_in_debt(self, client):
        """A document's estimate, known once extracted, is charged then; the owner's next
        enqueue waits until the debt is refilled."""
        set_quota(client, "kind:document", jobs="100/hour", tokens="1000/hour")
        client.enqueue("document", {"document_id": 1}, owner="o")
        statement, params = quotas.debit(owner="o", queue="default", kind="document",
                                         tokens=5000)
        with client.pool.connection() as conn:
            conn.execute(statement, params)
            standing = quotas.usage(conn, "o")
        tokens = next(s for s in standing if s["budget"] == "tokens")
        assert tokens["remaining"] == 0 and tokens["reset_seconds"] > 3600 * 4
        with pytest.raises(QuotaExceeded) as caught:
            client.enqueue("document", {"document_id": 2}, owner="o")
        assert caught.value.budget == "tokens"


class TestBatches:
    def test_a_batch_over_quota_is_refused_whole(self, client, sql):
        set_quota(client, "queue:sim", "10/hour")
        specs = [JobSpec("chat", {"messages": []}) for _ in range(12)]
        with pytest.raises(QuotaExceeded):
            client.submit_batch(specs, queue="sim", owner="o")
        assert count_jobs(sql, queue="sim") == 0
        assert sql("SELECT count(*) AS n FROM jobqueue.batches")[0]["n"] == 0
        assert sql("SELECT count(*) AS n FROM jobqueue.quota_usage WHERE jobs_level < 10"
                   )[0]["n"] == 0  # nothing charged

    def test_a_partial_batch_takes_what_fits(self, client, sql):
        set_quota(client, "queue:sim", "10/hour")
        client.enqueue("chat", queue="sim", owner="o")
        specs = [JobSpec("chat", {"i": i}) for i in range(12)]
        submitted = client.submit_batch(specs, queue="sim", owner="o", partial=True)
        batch_id, total = submitted
        assert (total, submitted.refused) == (9, 3)
        assert submitted.exceeded is not None and submitted.exceeded.retry_after > 0
        assert client.batch(batch_id)["total"] == 9
        assert count_jobs(sql, batch_id=batch_id) == 9

    def test_partial_spans_chunks(self, client, sql, monkeypatch):
        """A batch larger than one insert chunk: the quota ends inside the second chunk."""
        monkeypatch.setattr("jobqueue.client.CHUNK", 4)
        set_quota(client, "queue:sim", "6/hour")
        submitted = client.submit_batch([JobSpec("chat") for _ in range(11)], queue="sim",
                                        owner="o", partial=True)
        assert (submitted.total, submitted.refused) == (6, 5)
        assert count_jobs(sql, queue="sim") == 6


def _enqueue_one(url: str, barrier, results) -> None:
    with Client(url, max_size=1) as client:
        barrier.wait()
        try:
            client.enqueue("lesson", {}, owner="crowd")
            results.put("ok")
        except QuotaExceeded:
            results.put("refused")


class TestConcurrency:
    def test_threads_enqueuing_at_once_never_exceed_the_quota(self, db_url, client, sql):
        """32 threads, each with its own connection, enqueue at the same moment against a
        quota of 10/hour: exactly 10 jobs exist."""
        set_quota(client, "kind:lesson", "10/hour")
        barrier, outcomes = threading.Barrier(32), []
        lock = threading.Lock()

        def go():
            with Client(db_url, max_size=1) as own:
                barrier.wait()
                try:
                    own.enqueue("lesson", {}, owner="crowd")
                    outcome = "ok"
                except QuotaExceeded:
                    outcome = "refused"
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=go) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count("ok") == 10 and outcomes.count("refused") == 22
        assert count_jobs(sql, kind="lesson") == 10

    def test_processes_enqueuing_at_once_never_exceed_the_quota(self, db_url, client, sql):
        set_quota(client, "kind:lesson", "5/hour")
        ctx = multiprocessing.get_context("spawn")
        barrier, results = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_enqueue_one, args=(db_url, barrier, results))
                 for _ in range(8)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
        assert outcomes.count("ok") == 5
        assert count_jobs(sql, kind="lesson") == 5


class TestConfig:
    def test_toml_quotas_parse_and_apply(self, client):
        found = quotas.parse({"quotas": {
            "kind": {"lesson": "10/min"},
            "queue": {"openai": {"jobs": "1000/hour", "tokens": "200000/hour"}}}})
        assert [q.to_dict() for q in found] == [
            {"scope": "kind", "name": "lesson", "jobs": "10/min", "tokens": None},
            {"scope": "queue", "name": "openai", "jobs": "1000/hour",
             "tokens": "200000/hour"}]
        set_quota(client, "kind:manual", "1/min")
        with client.pool.connection() as conn:
            quotas.apply_config(conn, found)
            quotas.apply_config(conn, found[:1])  # openai left the file: its row goes
            listed = quotas.listed(conn)
        assert [(r["scope"], r["name"], r["source"]) for r in listed] == [
            ("kind", "lesson", "config"), ("kind", "manual", "api")]

    @pytest.mark.parametrize("bad, says", [
        ({"quotas": []}, "quotas: must be a table"),
        ({"quotas": {"owner": {}}}, "quotas.owner: unknown"),
        ({"quotas": {"kind": {"x": "ten a minute"}}}, "quotas.kind.x: jobs: must look like"),
        ({"quotas": {"kind": {"x": {"jobs": "1/min", "burst": 3}}}}, "burst: unknown"),
        ({"quotas": {"kind": {"x": {}}}}, "give a jobs budget"),
        ({"quotas": {"kind": {"x": "0/min"}}}, "positive"),
    ])
    def test_bad_config_names_the_place(self, bad, says):
        with pytest.raises(ConfigError, match=says):
            quotas.parse(bad, "jobqueue.toml")

    @given(st.text(max_size=30))
    def test_parse_rate_never_crashes(self, text):
        """Any text is a Rate or a ValueError naming the field, never another exception."""
        try:
            rate = quotas.parse_rate(text, "jobs")
        except ValueError as exc:
            assert str(exc).startswith("jobs:")
        else:
            assert rate.amount >= 1 and rate.seconds > 0

    @given(st.from_regex(r"\A\d{1,60}/(\d{1,60}(\.\d{1,60})?)?s\Z"))
    def test_any_digits_give_a_rate_a_real_column_holds_or_a_value_error(self, text):
        """Periods of 40 nines overflowed the `real` column (a 500), 400 nines became
        infinity (every enqueue of the queue then divided by zero), 1e-51 s underflowed."""
        try:
            rate = quotas.parse_rate(text, "jobs")
        except ValueError as exc:
            assert str(exc).startswith("jobs:")
        else:
            assert 1 <= rate.amount <= 2**31 - 1
            assert quotas.MIN_PERIOD_SECONDS <= rate.seconds <= quotas.MAX_PERIOD_SECONDS

    @pytest.mark.parametrize("text", ["1/" + "9" * 40 + "s", "1/" + "9" * 400 + "s",
                                      "1/0." + "0" * 50 + "1s", "1/0.0001s", "1/367day",
                                      "9" * 5000 + "/min"])
    def test_periods_and_amounts_past_the_columns_are_refused(self, text):
        with pytest.raises(ValueError, match=r"^jobs: needs a"):
            quotas.parse_rate(text, "jobs")

    @pytest.mark.parametrize("text, amount, seconds", [
        ("10/min", 10, 60), ("5/s", 5, 1), ("1000/hour", 1000, 3600), ("7/day", 7, 86400),
        ("20/30s", 20, 30), ("3 / minutes", 3, 60), ("2/1.5h", 2, 5400)])
    def test_parse_rate(self, text, amount, seconds):
        assert quotas.parse_rate(text) == quotas.Rate(amount, seconds)
