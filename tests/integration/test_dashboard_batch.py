"""The batch page over real HTTP: progress by state and platform, rate and ETA, tokens, cost
and fallback share, the answers table (search, pages, bounds), and its actions."""

from __future__ import annotations

import re

import pytest
from psycopg.types.json import Jsonb

from jobqueue.jobs import JobSpec
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


def finish(sql, job_id: int, state: str, result=None, minutes_ago: int = 0) -> None:
    """Move a hot job to `finished` as the worker would, `minutes_ago`."""
    error = Jsonb([] if state != "dead" else [{"attempt": 1, "type": "RateLimited",
                                               "message": "429", "at": "2026-01-01T00:00:00Z"}])
    sql("""WITH gone AS (DELETE FROM jobqueue.jobs j WHERE id = %s RETURNING j AS job)
           INSERT INTO jobqueue.finished
           SELECT (jobqueue.finished_row(job, %s, %s, %s)).* FROM gone""",
        (job_id, state, Jsonb(result) if result is not None else None, error))
    sql("UPDATE jobqueue.finished SET finished_at = now() - make_interval(mins => %s) "
        "WHERE id = %s", (minutes_ago, job_id))


def chat(prompt: str, queue: str) -> JobSpec:
    return JobSpec("chat", {"messages": [{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": prompt}]}, queue=queue)


@pytest.fixture
def fanout(client, sql):
    """A batch of 6 on two platforms: on openai 2 answered (one by the fallback model) and
    1 dead; on gemini 1 answered, 2 waiting. Spend recorded for 3 calls."""
    specs = [chat(f"what is {w}?", q) for q in ("openai", "gemini")
             for w in ("alpha", "beta", "gamma")]
    batch_id, _ = client.submit_batch(specs, queue="openai", name="visibility")
    ids = [r["id"] for r in sql("SELECT id FROM jobqueue.jobs WHERE batch_id = %s ORDER BY id",
                                (batch_id,))]
    finish(sql, ids[0], "succeeded", {"text": "ALPHA is a letter", "model": "gpt-main"}, 1)
    finish(sql, ids[1], "succeeded", {"text": "beta <b>answer</b>", "model": "gpt-small",
                                      "fallback": True}, 1)
    finish(sql, ids[2], "dead")
    finish(sql, ids[3], "succeeded", {"text": "gemini on alpha", "model": "gem"}, 1)
    sql("""INSERT INTO jobqueue.llm_spend (day, platform, model, batch_id, calls, fallback_calls,
             prompt_tokens, completion_tokens, cost_usd)
           VALUES (current_date, 'openai', 'gpt-main', %(b)s, 2, 1, 100, 50, 0.25),
                  (current_date, 'gemini', 'gem', %(b)s, 1, 0, 40, 10, 0.05)""", {"b": batch_id})
    return batch_id, ids


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


class TestBatchPage:
    def test_the_batches_list_links_to_the_batch_page(self, admin, fanout):
        batch_id, _ = fanout
        assert f'href="/batches/{batch_id}"' in admin.page("/batches")

    def test_progress_by_state_and_platform(self, admin, fanout):
        batch_id, _ = fanout
        html = admin.page(f"/batches/{batch_id}")
        text = text_of(html)
        assert "4 of 6 done (67%)" in text
        platforms = text_of(re.search(r'id="batch-platforms".*?</table>', html, re.S).group(0))
        assert re.search(r"openai .*3/3 0 0 0 2 1", platforms), platforms
        assert re.search(r"gemini .*1/3 2 0 0 1 0", platforms), platforms

    def test_rate_eta_tokens_cost_and_fallback_share(self, admin, fanout):
        batch_id, _ = fanout
        text = text_of(admin.page(f"/batches/{batch_id}"))
        # 3 finished a minute ago, 1 now: the smoothed rate is about 3 jobs/min (less when
        # the page is read a few seconds later on a busy machine: the window has moved on)
        rate = float(re.search(r"Rate ([\d.]+) jobs/min", text).group(1))
        assert 1.5 <= rate <= 10, text
        eta = re.search(r"ETA (\S+)", text).group(1)
        assert eta.endswith("s") and eta != "unknown"
        assert "Tokens 200 (140 in, 60 out, 3 calls)" in text
        assert "Cost $0.3000" in text
        assert "Fallback share 33.3% (1 of 3 answers by a fallback model)" in text

    def test_a_rate_limited_platform_paces_the_eta_by_its_budget(self, admin, fanout, sql):
        """Both keys of gemini blocked: the ETA comes from its requests-per-minute budget."""
        batch_id, _ = fanout
        sql("""INSERT INTO jobqueue.rate_buckets (platform, model, key_id, rpm_configured,
                 tpm_configured, rpm, tpm, req_level, tok_level, blocked_until)
               VALUES ('gemini', 'gem', 'K1', 1, 1000, 1, 1000, 0, 0, now() + interval '1 hour'),
                      ('gemini', 'gem', 'K2', 1, 1000, 1, 1000, 0, 0, now() + interval '1 hour')""")
        text = text_of(admin.page(f"/batches/{batch_id}"))
        assert "paced by the rate limit of gemini" in text
        assert "Rate 2.0 jobs/min" in text
        assert "ETA 1m 00s" in text  # 2 left at 2/min

    def test_answers_show_the_prompt_and_the_answer_escaped(self, admin, fanout):
        batch_id, _ = fanout
        html = admin.page(f"/batches/{batch_id}")
        answers = re.search(r'id="answers".*?</table>', html, re.S).group(0)
        assert "what is alpha?" in answers and "be brief" not in answers
        assert "ALPHA is a letter" in answers
        assert "beta &lt;b&gt;answer&lt;/b&gt;" in answers and "<b>answer" not in answers
        assert "fallback</span>" in answers
        assert "RateLimited: 429" in answers
        assert answers.count("/jobs/") == 6

    def test_answers_are_searchable_and_paged(self, admin, fanout, server, monkeypatch):
        batch_id, ids = fanout
        html = admin.page(f"/batches/{batch_id}?q=alpha")
        answers = re.search(r'id="answers".*?</table>', html, re.S).group(0)
        assert set(map(int, re.findall(r"/jobs/(\d+)", answers))) == {ids[0], ids[3]}
        html = admin.page(f"/batches/{batch_id}?q=%25")  # a literal %, in no prompt
        assert "No answers match" in html
        from jobqueue.batches import progress
        monkeypatch.setattr(progress.answers, "__defaults__", (0, None, 4, 5000))
        html = admin.page(f"/batches/{batch_id}")
        nxt = re.search(r'href="(/batches/\d+\?after=\d+)" rel="next"', html).group(1)
        assert nxt.endswith(f"after={ids[3]}")
        second = admin.page(nxt)
        answers = re.search(r'id="answers".*?</table>', second, re.S).group(0)
        assert set(map(int, re.findall(r"/jobs/(\d+)", answers))) == set(ids[4:])

    def test_a_search_examines_a_bounded_window_and_offers_the_rest(self, fanout, client):
        batch_id, ids = fanout
        from jobqueue.batches import progress
        with client.pool.connection() as conn:
            page = progress.answers(conn, batch_id, 0, "gemini on", limit=25, scan=2)
            assert page["rows"] == [] and page["scanned"] == 2 and page["next"] == ids[1]
            page = progress.answers(conn, batch_id, page["next"], "gemini on", scan=2)
            assert [r["id"] for r in page["rows"]] == [ids[3]]

    @pytest.mark.parametrize("query", ["?after=-1", "?after=x", "?after=99999999999999999999",
                                       "?q=" + "x" * 201, "?q=a%00b"])
    def test_bad_parameters_are_400_naming_the_field(self, admin, fanout, query):
        batch_id, _ = fanout
        r = admin.get(f"/batches/{batch_id}{query}")
        assert r.status_code == 400
        assert ("after:" in r.text) or ("q:" in r.text)

    def test_an_unknown_batch_is_404(self, admin):
        assert admin.get("/batches/424242").status_code == 404

    def test_retry_all_dead_and_cancel(self, admin, fanout, client):
        batch_id, ids = fanout
        admin.page(f"/batches/{batch_id}")
        r = admin.post(f"/batches/{batch_id}/retry-dead")
        assert "retried 1 dead job(s)" in r.text
        assert client.get(ids[2]).state == "waiting"
        r = admin.post(f"/batches/{batch_id}/cancel")
        assert "cancelled 3 job(s)" in r.text
        assert {client.get(i).state for i in (ids[2], ids[4], ids[5])} == {"cancelled"}
        assert client.get(ids[0]).state == "succeeded"

    def test_actions_need_the_csrf_token(self, admin, fanout, client):
        batch_id, ids = fanout
        assert admin.post(f"/batches/{batch_id}/retry-dead", csrf=False).status_code == 400
        assert client.get(ids[2]).state == "dead"

    def test_download_links(self, admin, fanout):
        batch_id, _ = fanout
        html = admin.page(f"/batches/{batch_id}")
        assert f"/batches/{batch_id}/results.csv" in html
        r = admin.get(f"/batches/{batch_id}/results.csv")
        assert r.status_code == 200 and "ALPHA is a letter" in r.text
