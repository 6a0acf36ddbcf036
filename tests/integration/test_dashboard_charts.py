"""The dashboard's charts over real HTTP: axes and units, 1 h / 24 h windows, narrowed to a
queue or kind, and totals equal to the tables' counts, also after retries."""

from __future__ import annotations

import re

import pytest
from psycopg.types.json import Jsonb

from tests.integration.test_dashboard import finished_job
from tests.support.web import Dashboard, Server
from web.dashboard_charts import nice_ceiling


@pytest.fixture
def server(db_url):
    s = Server(db_url)
    yield s
    s.close()


@pytest.fixture
def admin(server, make_token) -> Dashboard:
    d = Dashboard(server.base)
    assert d.sign_in(make_token("ops", ["admin"])).status_code == 302
    d.get("/jobs")  # not a chart: the tests write finished rows into past minutes, which
    return d        # jobs never do, so no chart may have kept those minutes before


def totals(html: str) -> tuple[int, int]:
    found = re.search(r"([\d,]+) succeeded, ([\d,]+) dead", html)
    return int(found.group(1).replace(",", "")), int(found.group(2).replace(",", ""))


def table_counts(sql, since: str) -> tuple[int, int]:
    (row,) = sql(f"""SELECT count(*) FILTER (WHERE state = 'succeeded') AS ok,
                            count(*) FILTER (WHERE state = 'dead') AS dead
                     FROM jobqueue.finished
                     WHERE finished_at >= {since}""")
    return row["ok"], row["dead"]


HOUR = "date_trunc('minute', now()) - interval '59 minutes'"


class TestTotals:
    def test_a_job_retried_and_dead_again_counts_once(self, admin, client, sql):
        """The minute a job first died is kept by the app; the retry takes the job out of
        it and its second death counts in the current minute, once."""
        for minutes_ago, state in [(5, "succeeded"), (5, "dead"), (12, "dead"), (3, "dead")]:
            finished_job(sql, state=state, minutes_ago=minutes_ago)
        again = finished_job(sql, state="dead", minutes_ago=20)
        assert totals(admin.page("/")) == (1, 4) == table_counts(sql, HOUR)
        assert totals(admin.page("/charts")) == (1, 4)  # minutes kept from here on
        assert client.retry(again)
        assert totals(admin.page("/?partial=1")) == (1, 3) == table_counts(sql, HOUR)
        sql("""WITH gone AS (DELETE FROM jobqueue.jobs j WHERE id = %s RETURNING j AS job)
               INSERT INTO jobqueue.finished
               SELECT (jobqueue.finished_row(job, 'dead', NULL, '[]')).* FROM gone""", (again,))
        assert totals(admin.page("/?partial=1")) == (1, 4) == table_counts(sql, HOUR)
        assert totals(admin.page("/charts?partial=1")) == (1, 4)
        overview = dict(re.findall(r'data-state="(\w+)">([\d,]+)<', admin.page("/")))
        assert overview["dead"] == "4" and overview["succeeded"] == "1"

    def test_a_deleted_job_leaves_the_chart(self, admin, client, sql):
        gone = finished_job(sql, state="dead", minutes_ago=7)
        assert totals(admin.page("/charts")) == (0, 1)
        sql("DELETE FROM jobqueue.finished WHERE id = %s", (gone,))
        assert totals(admin.page("/charts?partial=1")) == (0, 0)

    def test_the_24_hour_window_and_a_queue_or_kind(self, admin, sql):
        finished_job(sql, queue="a", kind="x", state="succeeded", minutes_ago=3 * 60)
        finished_job(sql, queue="a", kind="y", state="dead", minutes_ago=1)
        finished_job(sql, queue="b", kind="x", state="succeeded", minutes_ago=2)
        finished_job(sql, queue="b", kind="x", state="succeeded", minutes_ago=25 * 60)
        assert totals(admin.page("/charts")) == (1, 1)
        assert totals(admin.page("/charts?window=24h")) == (2, 1) == \
            table_counts(sql, "now() - interval '24 hours' + interval '10 minutes'")
        assert totals(admin.page("/charts?window=24h&queue=a")) == (1, 1)
        assert totals(admin.page("/charts?window=24h&kind=x")) == (2, 0)
        groups = admin.page("/charts?window=24h&by=kind")
        table = re.sub(r"<[^>]+>|\s+", " ", re.search(r'id="chart-groups".*?</table>', groups,
                                                      re.S).group(0))
        assert re.search(r"x\s+2\s+0", table) and re.search(r"y\s+1\s+1", table)


class TestDrawing:
    def test_axes_units_and_time(self, admin, sql):
        for _ in range(7):
            finished_job(sql, state="succeeded", minutes_ago=2)
        html = admin.page("/charts")
        chart = re.search(r'<svg class="chart" id="chart-throughput".*?</svg>', html, re.S)[0]
        assert ">jobs/min<" in chart
        ticks = re.findall(r'class="tick">([^<]+)<', chart)
        assert ticks[:3] == ["0", "5", "10"]  # 7 jobs in a minute: the axis tops at 10
        assert re.search(r"\d\d:\d\d", " ".join(ticks[3:])) and "UTC" in ticks
        assert len(re.findall(r'class="ok"', chart)) == 1
        for name, unit in [("latency", "seconds"), ("tokens", "tokens/min"),
                           ("cost", "USD/min")]:
            assert re.search(rf'id="chart-{name}".*?>{re.escape(unit)}<', html, re.S)

    def test_tokens_and_cost_come_from_the_answers(self, admin, sql):
        for tokens, cost in [(120, 0.002), (80, 0.001)]:
            job = finished_job(sql, state="succeeded", minutes_ago=1)
            sql("UPDATE jobqueue.finished SET result = %s WHERE id = %s",
                (Jsonb({"text": "a", "usage": {"total_tokens": tokens}, "cost_usd": cost}), job))
        html = admin.page("/charts")
        assert "200 in the window" in html and "$0.0030 in the window" in html

    @pytest.mark.parametrize("query,field", [("window=2h", "window"), ("by=owner", "by"),
                                             ("queue=" + "x" * 300, "queue")])
    def test_bad_parameters_are_400(self, admin, query, field):
        r = admin.get(f"/charts?{query}")
        assert r.status_code == 400 and f"{field}:" in r.text

    def test_round_axis_tops(self):
        assert [nice_ceiling(v) for v in (0, 0.3, 1, 7, 11, 23, 240, 999)] == \
            [1, 0.5, 1, 10, 20, 25, 250, 1000]
