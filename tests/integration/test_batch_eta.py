"""The batch ETA from the database: the limiter's budget as it reads it (platform_budgets:
requests per second of a platform's usable keys, and whether it is rate limited now), the
batch's history replayed (`recent`), and the same ETA from `batch wait` and the dashboard."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from jobqueue.batches import eta
from jobqueue.batches.eta import platform_budgets
from jobqueue.cli import cli
from jobqueue.db import store
from jobqueue.jobs import JobSpec
from tests.support.web import Dashboard, Server
from web.dashboard import _age as age


def bucket(sql, platform, model, key, rpm, *, level=100.0, disabled=None, factor=1.0):
    sql("""INSERT INTO jobqueue.rate_buckets
           (platform, model, key_id, rpm_configured, tpm_configured, rpm, tpm, req_level,
            tok_level, disabled_reason, rate_factor)
           VALUES (%(p)s, %(m)s, %(k)s, %(rpm)s, 100000, %(rpm)s, 100000, %(level)s,
                   %(level)s, %(d)s, %(f)s)""",
        {"p": platform, "m": model, "k": key, "rpm": rpm, "level": level, "d": disabled,
         "f": factor})


def test_budget_sums_usable_keys_once_each(client, sql):
    """Two usable keys at 600 RPM (one with a fallback model too) and a disabled one: 20/s;
    a key slowed by 429s (AIMD pace 0.5) counts at half."""
    bucket(sql, "p", "main", "A:1", 600)
    bucket(sql, "p", "fallback", "A:1", 300)
    bucket(sql, "p", "main", "B:2", 600)
    bucket(sql, "p", "main", "C:3", 600, disabled="insufficient_quota")
    bucket(sql, "q", "main", "A:1", 600, factor=0.5)
    with client.pool.connection() as conn:
        found = platform_budgets(conn, ["p", "q", "none"])
    assert found["p"] == (False, 20.0)
    assert found["q"] == (False, 5.0)
    assert found["none"] == (False, None)


def test_limited_when_no_key_has_headroom(client, sql):
    bucket(sql, "p", "main", "A:1", 60, level=-50.0)
    with client.pool.connection() as conn:
        assert platform_budgets(conn, ["p"])["p"] == (True, 1.0)


def finish(sql, job_id: int, seconds_ago: float) -> None:
    """Move a hot job to `finished` (succeeded) as the worker would, `seconds_ago`."""
    sql("""WITH gone AS (DELETE FROM jobqueue.jobs j WHERE id = %s RETURNING j AS job)
           INSERT INTO jobqueue.finished
           SELECT (jobqueue.finished_row(job, 'succeeded', NULL, '[]'::jsonb)).* FROM gone""",
        (job_id,))
    sql("UPDATE jobqueue.finished SET finished_at = now() - make_interval(secs => %s) "
        "WHERE id = %s", (seconds_ago, job_id))


def batch_of(client, sql, sizes: dict[str, int]) -> tuple[int, dict[str, list[int]]]:
    specs = [JobSpec("chat", {"prompt": f"{queue} {i}"}, queue=queue)
             for queue, n in sizes.items() for i in range(n)]
    batch_id, _ = client.submit_batch(specs, queue=next(iter(sizes)), name="eta")
    ids: dict[str, list[int]] = {}
    for r in sql("SELECT id, queue FROM jobqueue.jobs WHERE batch_id = %s ORDER BY id",
                 (batch_id,)):
        ids.setdefault(r["queue"], []).append(r["id"])
    return batch_id, ids


class TestRecent:
    """`eta.recent`: the ETA of the batch page and of `batch wait`, from the batch's history."""

    def test_the_rate_comes_from_the_batch_history(self, client, sql):
        """One job finished every 2 s over the last minute, after ten idle minutes: about
        0.5 jobs/s (the idle time before the first finish is left out), 40 left in ~80 s."""
        batch_id, ids = batch_of(client, sql, {"p": 70})
        for i, job_id in enumerate(ids["p"][:30]):
            finish(sql, job_id, 60 - 2 * i)
        with client.pool.connection() as conn:
            found = store.batch(conn, batch_id)
            estimate = eta.recent(conn, batch_id, found["platforms"], 1000.0)
        assert 0.4 <= estimate.rate() <= 0.6
        assert 65 <= estimate.eta() <= 100
        assert estimate.limited() == []

    def test_nothing_finished_no_eta_but_a_limited_platform_has_its_budget(self, client, sql):
        batch_id, _ = batch_of(client, sql, {"p": 3})
        with client.pool.connection() as conn:
            found = store.batch(conn, batch_id)
            assert eta.recent(conn, batch_id, found["platforms"], 0.0).eta() is None
            bucket(sql, "p", "main", "A:1", 60, level=-50.0)  # limited at 1 request/s
            estimate = eta.recent(conn, batch_id, found["platforms"], 0.0)
        assert estimate.eta() == 3.0 and estimate.limited() == ["p"]


class TestSameEtaEverywhere:
    def test_batch_wait_and_the_dashboard_give_the_same_eta(self, client, sql, db_url,
                                                            make_token, monkeypatch):
        """A fan-out: openai finishing about 6 jobs/min with 4 left, gemini limited at 2
        requests/min with 3 left. Both surfaces say 1m30s, gemini's time: the batch ends when
        its slowest platform does (the page used to divide all 7 left by gemini's budget)."""
        batch_id, ids = batch_of(client, sql, {"openai": 10, "gemini": 4})
        for i, job_id in enumerate(ids["openai"][:6]):
            finish(sql, job_id, 55 - 10 * i)
        finish(sql, ids["gemini"][0], 30)
        bucket(sql, "gemini", "gem", "K1", 1, level=-50.0)
        bucket(sql, "gemini", "gem", "K2", 1, level=-50.0)

        started = []

        recent = eta.recent

        def recording(*args, **kwargs):
            estimate = recent(*args, **kwargs)
            started.append(estimate.eta())
            return estimate

        monkeypatch.setattr(eta, "recent", recording)
        result = CliRunner().invoke(cli, ["batch", "wait", str(batch_id), "--timeout", "0"],
                                    env={"DATABASE_URL": db_url})
        assert result.exit_code == 1, result.output  # not finished: the wait timed out
        assert started == [pytest.approx(90.0)]

        server = Server(db_url)
        try:
            page = Dashboard(server.base)
            assert page.sign_in(make_token("ops", ["admin"])).status_code == 302
            html = page.page(f"/batches/{batch_id}")
        finally:
            server.close()
        shown = re.search(r'id="batch-eta">([^<]+)<', html).group(1)
        assert shown == age(started[0]) == "1m 30s"
