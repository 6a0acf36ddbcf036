"""One job in each of the eight states, and every surface reporting each the same way.

A job's state is derived in one place (jobqueue.job_state, sql/migrations/0007_job_state.sql)
and every read goes through jobqueue/db/store.py. These tests put real jobs in every state
through real transitions (a worker, enqueue, cancel) and ask every surface: Client.get, the
CLI (`jobs show`, `status --json`, `batch export`), the web API (one job, queues, batch counts
and results), the dashboard's job list filtered by state and its overview counts, and
/metrics. A surface that derives a state its own way fails here.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter

import pytest

from jobqueue import JobSpec, Permanent, Retry
from jobqueue.db.queries import q, sql_dir
from jobqueue.jobs import HOT_STATES, STATES
from jobqueue.tasks import Registry
from tests.integration.test_dashboard import Dashboard, ids_on
from tests.support.helpers import run_cli, wait_until
from tests.support.web import Api, Server

WORK, IDLE = "work", "idle"


@pytest.fixture
def seven(client, start_worker, sql) -> dict:
    """{"batch": id, "jobs": {job id: (queue, expected state)}}: one job per state, all in
    one batch. A worker on "work" runs four of them (one succeeds, one dies, one asks to be
    retried in an hour, one keeps running); "idle", which no worker serves, holds a waiting
    job, one scheduled in an hour, one cancelled while it waited, and one blocked: it
    depends on the job that keeps running."""

    async def hold(payload):
        await asyncio.sleep(3600)

    def later(payload):
        raise Retry("come back in an hour", delay=3600)

    def fail(payload):
        raise Permanent("cannot be done")

    tasks = Registry()
    for name, func in {"ok": lambda payload: {"answer": 42}, "fail": fail, "later": later,
                       "hold": hold}.items():
        tasks.register(name, func)
    batch_id, _ = client.submit_batch([], queue=WORK, name="seven")
    ok, dead, retrying, running, waiting, scheduled, cancelled, blocked = client.enqueue_many([
        JobSpec("ok", {"prompt": "succeeds"}, queue=WORK, batch_id=batch_id),
        JobSpec("fail", {"prompt": "dies"}, queue=WORK, batch_id=batch_id, max_attempts=3),
        JobSpec("later", {"prompt": "retries"}, queue=WORK, batch_id=batch_id),
        JobSpec("hold", {"prompt": "runs"}, queue=WORK, batch_id=batch_id, ref="runs"),
        JobSpec("ok", {"prompt": "waits"}, queue=IDLE, batch_id=batch_id),
        JobSpec("ok", {"prompt": "is scheduled"}, queue=IDLE, batch_id=batch_id, delay=3600),
        JobSpec("ok", {"prompt": "is cancelled"}, queue=IDLE, batch_id=batch_id),
        JobSpec("ok", {"prompt": "is blocked"}, queue=IDLE, batch_id=batch_id,
                depends_on=["runs"]),
    ])
    assert client.cancel(cancelled) == "cancelled"
    start_worker(tasks, queue=WORK)

    def settled() -> bool:  # read the tables directly: the surfaces are what is under test
        hot = {r["id"]: r for r in sql(
            "SELECT id, lease_owner, errors FROM jobqueue.jobs WHERE id = ANY(%s)",
            ([retrying, running],))}
        done = sql("SELECT count(*) AS n FROM jobqueue.finished WHERE id = ANY(%s)",
                   ([ok, dead],))[0]["n"]
        return (done == 2 and len(hot) == 2 and hot[running]["lease_owner"] is not None
                and hot[retrying]["lease_owner"] is None and hot[retrying]["errors"] != [])

    wait_until(settled, message="the worker's jobs to settle")
    jobs = {ok: (WORK, "succeeded"), dead: (WORK, "dead"), retrying: (WORK, "retrying"),
            running: (WORK, "running"), waiting: (IDLE, "waiting"),
            scheduled: (IDLE, "scheduled"), cancelled: (IDLE, "cancelled"),
            blocked: (IDLE, "blocked")}
    assert sorted(state for _, state in jobs.values()) == sorted(STATES)
    return {"batch": batch_id, "jobs": jobs}


def expected_counts(jobs: dict) -> dict[str, dict[str, int]]:
    """{queue: {state: count}} with every state present (zeros included)."""
    counts = Counter(jobs.values())
    return {queue: {state: counts[(queue, state)] for state in STATES}
            for queue in (WORK, IDLE)}


def states_of(jobs: dict) -> dict[int, str]:
    return {job_id: state for job_id, (_, state) in jobs.items()}


@pytest.fixture
def web(db_url):
    server = Server(db_url)
    yield server
    server.close()


class TestEverySurfaceAgrees:
    def test_client_get(self, client, seven):
        """Client.get, and Job.finished, which follows from the state."""
        for job_id, (_, state) in seven["jobs"].items():
            job = client.get(job_id)
            assert job.state == state, job_id
            assert job.finished is (state not in HOT_STATES)

    def test_cli_jobs_show_status_and_batch_export(self, db_url, seven):
        """`jobqueue jobs show ID`, `jobqueue status --json` and `jobqueue batch export`, each
        in a process of its own."""
        for job_id, (_, state) in seven["jobs"].items():
            shown = run_cli("jobs", "show", str(job_id), "--json", url=db_url)
            assert shown.returncode == 0, shown.stderr
            assert json.loads(shown.stdout)["state"] == state, job_id
            readable = run_cli("jobs", "show", str(job_id), url=db_url).stdout
            assert readable.startswith(f"job {job_id}: ") and f", {state}, attempt" in readable
        listed = run_cli("jobs", "list", "--json", "--limit", "100", url=db_url)
        assert {r["id"]: r["state"] for r in json.loads(listed.stdout)} == {
            job_id: state for job_id, (_, state) in seven["jobs"].items()}
        status = run_cli("status", "--json", url=db_url)
        assert status.returncode == 0, status.stderr
        queues = {r["queue"]: {s: r[s] for s in STATES} for r in json.loads(status.stdout)[
            "queues"]}
        assert queues == expected_counts(seven["jobs"])
        export = run_cli("batch", "export", str(seven["batch"]), url=db_url)
        assert export.returncode == 0, export.stderr
        exported = [json.loads(line) for line in export.stdout.splitlines()]
        assert {r["id"]: r["state"] for r in exported} == states_of(seven["jobs"])

    def test_web_api(self, web, make_token, seven):
        """GET /api/jobs/<id>, /api/queues, /api/batches/<id> (counts), its results page and
        its JSONL download."""
        api = Api(web.base, make_token("ops", ["read", "admin"]))
        for job_id, (_, state) in seven["jobs"].items():
            r = api.get(f"/api/jobs/{job_id}")
            assert r.status_code == 200 and r.json()["state"] == state, job_id
        queues = {r["queue"]: {s: r[s] for s in STATES}
                  for r in api.get("/api/queues").json()["queues"]}
        assert queues == expected_counts(seven["jobs"])
        batch = api.get(f"/api/batches/{seven['batch']}").json()
        assert {s: batch[s] for s in STATES} == dict.fromkeys(STATES, 1)
        assert batch["finished"] == 3
        page = api.get(f"/api/batches/{seven['batch']}/results").json()["items"]
        assert {r["id"]: r["state"] for r in page} == states_of(seven["jobs"])
        download = api.get(f"/api/batches/{seven['batch']}/results?format=jsonl")
        assert {(r := json.loads(line))["id"]: r["state"]
                for line in download.text.splitlines()} == states_of(seven["jobs"])

    def test_dashboard(self, web, make_token, seven):
        """The job list filtered by each state lists exactly that state's job; the overview's
        totals and per-queue counts; the batch page's bar."""
        admin = Dashboard(web.base)
        assert admin.sign_in(make_token("ops", ["admin"])).status_code == 302
        for state in STATES:
            listed = ids_on(admin.page(f"/jobs?state={state}"))
            assert listed == [job_id for job_id, (_, s) in seven["jobs"].items()
                              if s == state], state
        overview = admin.page("/")
        totals = dict(re.findall(r'data-state="(\w+)">([\d,]+)<', overview))
        assert totals == dict.fromkeys(STATES, "1")
        batches = admin.page("/batches")
        for state in STATES:
            assert f'class="seg seg-{state}"' in batches or f"state-{state}" in batches, state

    def test_metrics(self, web, make_token, seven):
        """/metrics: jobqueue_jobs by queue and state, and finished by outcome."""
        api = Api(web.base, make_token("ops", ["read", "admin"]))
        text = api.get("/metrics").text
        found = {(queue, state): int(float(n)) for queue, state, n in re.findall(
            r'^jobqueue_jobs\{queue="(\w+)",state="(\w+)"\} (\S+)$', text, re.MULTILINE)}
        reported = {queue: {state: found.get((queue, state), 0) for state in STATES}
                    for queue in (WORK, IDLE)}
        assert reported == expected_counts(seven["jobs"])
        assert {k for k, n in found.items() if n} <= {(WORK, s) for s in STATES} | {
            (IDLE, s) for s in STATES}


class TestStateDefinition:
    def test_retrying_becomes_waiting_when_its_backoff_is_over(self, client, seven, sql):
        """`retrying` is a failed job waiting out its backoff; once due it is runnable, and
        runnable jobs are `waiting` (the whole backlog the claim takes from)."""
        retrying = next(i for i, (_, s) in seven["jobs"].items() if s == "retrying")
        # The fixture's worker serves "work": paused, it cannot claim the job once it is due
        # (on a busy machine it did, between the update and the read).
        sql("INSERT INTO jobqueue.queues (name, paused) VALUES ('work', true) "
            "ON CONFLICT (name) DO UPDATE SET paused = true")
        sql("UPDATE jobqueue.jobs SET run_at = now() - interval '1 second' WHERE id = %s",
            (retrying,))
        assert client.get(retrying).state == "waiting"

    def test_a_revived_job_is_waiting_not_retrying(self, client, sql):
        """Revival keeps the error history but resets attempts: a fresh start."""
        worker = "00000000-0000-0000-0000-0000000000cc"
        job_id = client.enqueue("k", queue="q", max_attempts=1)
        (claimed,) = sql(q("claim"), {"queue": "q", "limit": 1, "worker": worker,
                                      "lease_seconds": 30})
        sql(q("finish_jobs"), {"id": [job_id], "execution": [claimed["execution_id"]],
                               "state": ["dead"], "result": [None],
                               "error": ['{"type": "E"}'], "worker": worker})
        assert client.get(job_id).state == "dead"
        assert client.retry(job_id)
        job = client.get(job_id)
        assert job.state == "waiting" and job.errors and job.attempts == 0

    def test_no_query_derives_a_hot_state_itself(self):
        """Every query takes a hot job's state from jobqueue.job_state (or the view that calls
        it): none spells the CASE out again."""
        for path in (sql_dir() / "queries").glob("*.sql"):
            text = path.read_text()
            assert not re.search(r"THEN\s+'(running|waiting|scheduled|retrying)'", text), path


class TestTheMoveToFinished:
    def test_finish_jobs_writes_what_finished_row_writes(self, client, sql):
        """finish_jobs spells the move's columns out (the hot path); it must write exactly
        the row jobqueue.finished_row (every other move) builds from the same job."""
        worker = "00000000-0000-0000-0000-0000000000aa"
        job_id = client.enqueue("k", {"p": 1}, queue="q", priority=3, max_attempts=4,
                                timeout=9.5, owner="olga", metadata={"m": 1},
                                idempotency_key="key-1")
        sql("UPDATE jobqueue.jobs SET errors = '[{\"attempt\": 0}]', progress = '{\"x\": 1}' "
            "WHERE id = %s", (job_id,))
        (claimed,) = sql(q("claim"), {"queue": "q", "limit": 1, "worker": worker,
                                      "lease_seconds": 30})
        predicted = sql("""
            SELECT (jobqueue.finished_row(j, 'dead', '{"r": 2}'::jsonb,
                                          jsonb_build_array('{"e": 3}'::jsonb))).*
            FROM jobqueue.jobs j WHERE id = %s""", (job_id,))[0]
        assert sql(q("finish_jobs"), {
            "id": [job_id], "execution": [claimed["execution_id"]], "state": ["dead"],
            "result": ['{"r": 2}'], "error": ['{"e": 3}'], "worker": worker}) == [
                {"id": job_id}]
        (written,) = sql("SELECT * FROM jobqueue.finished WHERE id = %s", (job_id,))
        assert written.pop("finished_at") and predicted.pop("finished_at")
        assert written == predicted
        assert written["execution_id"] is not None and written["errors"] == [
            {"attempt": 0}, {"e": 3}]

    def test_finish_jobs_writes_every_column_of_finished(self, sql):
        """A column added to `finished` must be added to finish_jobs too (finished_row would
        fail loudly; the hand-written list would silently leave it empty)."""
        insert = re.search(r"INSERT INTO jobqueue\.finished\s*\(([^)]*)\)", q("finish_jobs"))
        written = {c.strip() for c in insert.group(1).split(",")}
        columns = {r["column_name"] for r in sql(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'jobqueue' AND table_name = 'finished'")}
        assert columns - written == {"finished_at"}  # the table's default: now()

    def test_cancel_and_rescue_carry_the_execution_id(self, client, sql):
        """Every move carries execution_id (0006): a job cancelled while waiting for its
        retry keeps the id of the execution that failed, a rescued dead job its last one."""
        worker = "00000000-0000-0000-0000-0000000000bb"
        retried, expired = client.enqueue("k", queue="q"), client.enqueue(
            "k", queue="q", max_attempts=1)
        claimed = {r["id"]: r["execution_id"] for r in sql(q("claim"), {
            "queue": "q", "limit": 2, "worker": worker, "lease_seconds": 30})}
        sql(q("retry_jobs"), {"id": [retried], "execution": [claimed[retried]],
                              "delay": [3600.0], "error": ['{"type": "E"}'],
                              "worker": worker})
        assert client.get(retried).state == "retrying"
        assert client.cancel(retried) == "cancelled"
        sql("UPDATE jobqueue.jobs SET lease_expires_at = now() - interval '1 second' "
            "WHERE id = %s", (expired,))
        assert len(sql(q("rescue_dead"))) == 1
        rows = {r["id"]: r for r in sql(
            "SELECT id, state, execution_id::text, errors FROM jobqueue.finished")}
        assert rows[retried]["state"] == "cancelled"
        assert rows[retried]["execution_id"] == claimed[retried]
        assert rows[expired]["state"] == "dead"
        assert rows[expired]["execution_id"] == claimed[expired]
        assert rows[expired]["errors"][-1]["type"] == "LeaseExpired"


def test_the_state_list_is_the_one_the_database_uses(sql):
    """jobqueue.jobs.STATES names exactly what jobqueue.job_state and `finished` can hold."""
    hot = {r["s"] for r in sql("""
        SELECT DISTINCT jobqueue.job_state(o, now() + d * interval '1 hour', a, e, p) AS s
        FROM unnest(ARRAY[NULL, gen_random_uuid()]) AS o, unnest(ARRAY[-1, 1]) AS d,
             unnest(ARRAY[0, 1]) AS a, unnest(ARRAY['[]', '[{}]']::jsonb[]) AS e,
             unnest(ARRAY[NULL, '{"paused": "over budget"}']::jsonb[]) AS p""")}
    check = sql("SELECT pg_get_constraintdef(oid) AS c FROM pg_constraint "
                "WHERE conrelid = 'jobqueue.finished'::regclass AND contype = 'c'")[0]["c"]
    assert hot == set(HOT_STATES) - {"blocked"}  # blocked jobs are rows of jobqueue.blocked
    assert set(re.findall(r"'(\w+)'", check)) == set(STATES) - set(HOT_STATES)


class TestPausedMarker:
    """Only the budget's marker ({"paused": "over budget"}, jobqueue/llm/spend.py) makes a job
    that is not due read `waiting` (0029); a retry drops it; a queue whose waiting jobs are
    all paused reports no negative age."""

    def _row(self, sql, progress, attempts=0, errors="[]"):
        return sql("INSERT INTO jobqueue.jobs (queue, kind, payload, run_at, attempts, errors, "
                   "progress) VALUES ('p', 'k', '{}', now() + interval '30 seconds', "
                   "%(attempts)s, %(errors)s::jsonb, %(progress)s::jsonb) RETURNING id",
                   {"attempts": attempts, "errors": errors, "progress": progress})[0]["id"]

    def test_only_the_budget_marker_reads_waiting(self, client, sql):
        paused = self._row(sql, '{"paused": "over budget", "reason": "r"}')
        own_word = self._row(sql, '"paused"', attempts=1, errors='[{"type": "E"}]')
        own_key = self._row(sql, '{"paused": "by me"}')
        assert client.get(paused).state == "waiting"
        assert client.get(own_word).state == "retrying"
        assert client.get(own_key).state == "scheduled"
        status = {r["queue"]: r for r in sql(q("queue_status"))}["p"]
        assert status["waiting"] == 1 and status["oldest_waiting_seconds"] is None
        assert status["latency_seconds"] == 0

    def test_a_retry_drops_the_marker(self, client, sql):
        worker = "00000000-0000-0000-0000-000000000001"
        self._row(sql, '{"paused": "over budget", "reason": "r", "mine": 1}')
        sql("UPDATE jobqueue.jobs SET run_at = now()")
        (claimed,) = sql(q("claim"), {"queue": "p", "limit": 1, "worker": worker,
                                      "lease_seconds": 30})
        retried = sql(q("retry_jobs"), {"id": [claimed["id"]],
                                        "execution": [claimed["execution_id"]],
                                        "delay": [60.0], "error": ['{"type": "E"}'],
                                        "worker": worker})
        assert retried == [{"id": claimed["id"]}]
        job = client.get(claimed["id"])
        assert job.state == "retrying" and job.progress == {"reason": "r", "mine": 1}

    @pytest.mark.parametrize("back", ["rescue", "shutdown", "lost reply"])
    def test_a_rescue_or_a_hand_back_drops_the_marker(self, client, sql, back):
        """A paused job claimed again, then rescued after its worker vanished, handed back
        at shutdown, or handed back by the heartbeat because the claim's reply was lost,
        waits for no budget: it is not counted as paused any more."""
        worker = "00000000-0000-0000-0000-000000000002"
        self._row(sql, '{"paused": "over budget", "reason": "r"}')
        sql("UPDATE jobqueue.jobs SET run_at = now()")
        (claimed,) = sql(q("claim"), {"queue": "p", "limit": 1, "worker": worker,
                                      "lease_seconds": 30})
        if back == "rescue":
            sql("UPDATE jobqueue.jobs SET lease_expires_at = now() - interval '1 second'")
            assert sql(q("rescue_retry"))[0]["rescued"] == 1
        elif back == "shutdown":
            assert sql(q("hand_back"), {"ids": [claimed["id"]],
                                        "worker": worker})[0]["released"] == 1
        else:  # the worker never heard of this claim: renewal hands the row back
            assert sql(q("renew_leases"), {"worker": worker, "known": [], "lease_seconds": 30,
                                           "renew_after": 15}) == [
                {"id": claimed["id"], "cancel_requested": False, "released": True}]
        job = client.get(claimed["id"])
        assert job.progress == {"reason": "r"} and job.state != "running"
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs "
                   "WHERE progress ->> 'paused' = 'over budget'")[0]["n"] == 0

    def test_a_manual_retry_of_a_cancelled_paused_job_drops_the_marker(self, client, sql):
        """Cancelled while paused, the job keeps its progress in `finished`; retried by hand,
        it comes back due now and not paused."""
        job_id = self._row(sql, '{"paused": "over budget", "reason": "r"}')
        assert client.cancel(job_id) == "cancelled"
        assert client.get(job_id).progress == {"paused": "over budget", "reason": "r"}
        assert client.retry(job_id)
        job = client.get(job_id)
        assert job.state == "waiting" and job.progress == {"reason": "r"}
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs "
                   "WHERE progress ->> 'paused' = 'over budget'")[0]["n"] == 0
