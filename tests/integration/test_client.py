"""The Python API: enqueue (one and many), options, idempotency, get, cancel, retry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobqueue import InvalidJob, JobSpec, db
from jobqueue.db.queries import q


class TestEnqueue:
    def test_enqueue_then_get_shows_a_waiting_job(self, client):
        """Every stored field comes back, with defaults filled in."""
        job_id = client.enqueue("send", {"to": "a@b.c"}, queue="mail", owner="alice",
                                metadata={"source": "test"}, max_attempts=3, timeout=9.5)
        job = client.get(job_id)
        assert job.state == "waiting"
        assert (job.queue, job.kind, job.payload) == ("mail", "send", {"to": "a@b.c"})
        assert (job.owner, job.metadata, job.max_attempts) == ("alice", {"source": "test"}, 3)
        assert job.timeout_seconds == 9.5
        assert job.attempts == 0 and job.errors == [] and job.result is None

    def test_unknown_id_is_none(self, client):
        assert client.get(123456789) is None

    def test_delay_and_run_at_schedule_the_job(self, client):
        """A delayed job is 'scheduled' until its time."""
        later = datetime.now(UTC) + timedelta(hours=1)
        a = client.enqueue("x", delay=60)
        b = client.enqueue("x", run_at=later)
        assert client.get(a).state == "scheduled"
        job_b = client.get(b)
        assert job_b.state == "scheduled" and abs(job_b.run_at - later) < timedelta(seconds=1)

    def test_priority_names_and_numbers(self, client):
        ids = [client.enqueue("x", priority=p) for p in ("high", "low", 7, None)]
        assert [client.get(i).priority for i in ids] == [-10, 10, 7, 0]

    def test_enqueue_many_returns_ids_in_input_order(self, client, sql):
        """10,000 jobs in one call, ids ascending in input order, payloads matching."""
        specs = [JobSpec("n", {"i": i}) for i in range(10_000)]
        ids = client.enqueue_many(specs)
        assert len(ids) == 10_000 and ids == sorted(ids)
        rows = sql("SELECT id, payload FROM jobqueue.jobs ORDER BY id")
        assert [r["payload"]["i"] for r in rows] == list(range(10_000))
        assert [r["id"] for r in rows] == ids

    @pytest.mark.parametrize("repeat", [250, 10])  # 1,500 rows: COPY; 60: INSERT ... unnest
    def test_batches_keep_every_option_set_on_some_rows_only(self, client, sql, repeat):
        """Both batch paths send a column once when every row holds the same value (COPY
        leaves a default out; unnest gets a scalar) and the rest as literals: a batch where
        only some rows set an option, with awkward strings, stores every row exactly."""
        later = datetime.now(UTC) + timedelta(hours=1)
        options = {"priority": "high", "run_at": later, "max_attempts": 2, "timeout": 3.5,
                   "owner": 'o"l\\ga', "metadata": {"m": 'q"u\\o,{te}'}}
        specs = [JobSpec("k", {"i": i, "s": 'a"b\\c\n{d}'},
                         **({name: value} if i % 7 == 0 else {}))
                 for i, (name, value) in enumerate(list(options.items()) * repeat)]
        ids = client.enqueue_many(specs)
        rows = {r["id"]: r for r in sql(
            "SELECT id, priority, run_at, max_attempts, timeout_seconds, owner, metadata, "
            "payload, created_at FROM jobqueue.jobs")}
        defaults = {"priority": 0, "max_attempts": 5, "timeout_seconds": None, "owner": None,
                    "metadata": {}}
        for job_id, spec in zip(ids, specs, strict=True):
            row = rows[job_id]
            assert row["payload"] == spec.payload
            expected = defaults | {"run_at": row["created_at"]}
            if spec.payload["i"] % 7 == 0:
                name = list(options)[spec.payload["i"] % len(options)]
                column = {"timeout": "timeout_seconds"}.get(name, name)
                expected[column] = -10 if name == "priority" else options[name]
            assert {k: row[k] for k in expected} == expected, spec

    def test_a_large_batch_of_plain_jobs_gets_the_defaults(self, client, sql):
        ids = client.enqueue_many([JobSpec("k") for _ in range(1500)])
        found = sql("SELECT count(*) AS n FROM jobqueue.jobs WHERE priority = 0 AND "
                    "max_attempts = 5 AND metadata = '{}' AND owner IS NULL AND "
                    "run_at = created_at AND id = ANY(%(ids)s)", {"ids": ids})
        assert found[0]["n"] == 1500

    def test_enqueue_many_accepts_dicts(self, client):
        ids = client.enqueue_many([{"kind": "a", "payload": {"n": 1}, "priority": "high"}])
        assert client.get(ids[0]).priority == -10

    @pytest.mark.parametrize(("spec", "field"), [
        ({"kind": ""}, "kind"),
        ({"kind": "x", "priority": "urgent"}, "priority"),
        ({"kind": "x", "priority": 10**6}, "priority"),
        ({"kind": "x", "max_attempts": 0}, "max_attempts"),
        ({"kind": "x", "payload": {"a": object()}}, "payload"),
        ({"kind": "x", "run_at": datetime(2030, 1, 1)}, "run_at"),
        ({"kind": "x", "metadata": [1]}, "metadata"),
        ({"kind": "x", "colour": "red"}, "colour"),
    ])
    def test_a_bad_spec_names_index_and_field_and_enqueues_nothing(self, client, sql, spec,
                                                                   field):
        with pytest.raises(InvalidJob) as err:
            client.enqueue_many([{"kind": "fine"}, {"kind": "fine"}, spec])
        assert str(err.value).startswith("job 2:") and field in str(err.value)
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs")[0]["n"] == 0

    def test_nothing_to_enqueue_is_no_ids(self, client):
        assert client.enqueue_many([]) == [] and client.enqueue_payloads("x", []) == []

    @pytest.mark.parametrize("jobs", [3, 1500])  # an INSERT, and a COPY
    def test_enqueue_payloads_gives_every_job_the_common_options(self, client, sql, jobs):
        """One kind, one set of options, a payload each; ids in payload order."""
        later = datetime.now(UTC) + timedelta(hours=1)
        ids = client.enqueue_payloads("fan", [{"n": n} for n in range(jobs)], queue="fan",
                                      priority="low", run_at=later, max_attempts=2,
                                      timeout=5, owner="ann", metadata={"src": "t"})
        assert len(ids) == jobs and ids == sorted(ids)
        rows = sql("SELECT id, kind, payload, queue, priority, run_at, max_attempts, "
                   "timeout_seconds, owner, metadata FROM jobqueue.jobs ORDER BY id")
        assert [(r["id"], r["payload"]) for r in rows] == [(i, {"n": n})
                                                           for n, i in enumerate(ids)]
        assert {(r["kind"], r["queue"], r["priority"], r["max_attempts"],
                 r["timeout_seconds"], r["owner"], r["metadata"]["src"]) for r in rows} == {
            ("fan", "fan", 10, 2, 5.0, "ann", "t")}
        assert all(abs(r["run_at"] - later) < timedelta(seconds=1) for r in rows)

    @pytest.mark.parametrize(("call", "message"), [
        (lambda c: c.enqueue_payloads("x", [{}, {}, {"a": object()}]), "job 2: payload"),
        (lambda c: c.enqueue_payloads("x", [{}], priority="urgent"), "priority"),
        (lambda c: c.enqueue_payloads("x", [{}], idempotency_key="k"), "idempotency_key"),
        (lambda c: c.enqueue_payloads("x", [{}], payload={}), "payload"),
    ])
    def test_enqueue_payloads_rejects_bad_input_and_enqueues_nothing(self, client, sql, call,
                                                                     message):
        with pytest.raises(InvalidJob, match=message):
            call(client)
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs")[0]["n"] == 0


class TestIdempotency:
    def test_same_key_same_owner_gives_the_same_job(self, client, sql):
        a = client.enqueue("x", {"v": 1}, idempotency_key="k", owner="alice")
        b = client.enqueue("x", {"v": 2}, idempotency_key="k", owner="alice")
        assert a == b
        assert client.get(a).payload == {"v": 1}
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs")[0]["n"] == 1

    def test_keys_are_per_owner(self, client):
        a = client.enqueue("x", idempotency_key="k", owner="alice")
        b = client.enqueue("x", idempotency_key="k", owner="bob")
        c = client.enqueue("x", idempotency_key="k")
        assert len({a, b, c}) == 3

    def test_duplicates_inside_one_batch_collapse(self, client):
        ids = client.enqueue_many([
            JobSpec("x", idempotency_key="k1"), JobSpec("x"), JobSpec("x", idempotency_key="k1"),
            JobSpec("x", idempotency_key="k2")])
        assert ids[0] == ids[2] and len(set(ids)) == 3

    def test_key_still_maps_to_the_job_after_it_finished(self, client):
        a = client.enqueue("x", idempotency_key="k")
        assert client.cancel(a) == "cancelled"
        assert client.enqueue("x", idempotency_key="k") == a


class TestCancelAndRetry:
    def test_cancel_waiting_job_finishes_it_as_cancelled(self, client, sql):
        job_id = client.enqueue("x")
        assert client.cancel(job_id) == "cancelled"
        job = client.get(job_id)
        assert job.state == "cancelled" and job.finished_at is not None
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs")[0]["n"] == 0
        assert client.cancel(job_id) == "finished"
        assert client.cancel(999999) == "not_found"

    def test_cancel_running_job_sets_the_flag_and_notifies(self, client, sql):
        job_id = client.enqueue("x", queue="q")
        sql(q("claim"), {"queue": "q", "limit": 1, "worker": "00000000-0000-0000-0000-000000000001",
                         "lease_seconds": 30})
        sql("LISTEN jobqueue_cancel")
        assert client.cancel(job_id) == "requested"
        assert client.get(job_id).cancel_requested is True

    def test_retry_brings_a_dead_job_back_with_a_fresh_budget(self, client, sql):
        worker = "00000000-0000-0000-0000-000000000002"
        job_id = client.enqueue("x", queue="q", max_attempts=1)
        execution = sql(q("claim"), {"queue": "q", "limit": 1, "worker": worker,
                                     "lease_seconds": 30})[0]["execution_id"]
        sql(q("finish_jobs"), {"id": [job_id], "execution": [execution], "state": ["dead"],
                               "result": [None], "error": ['{"type": "Boom"}'], "worker": worker})
        assert client.get(job_id).state == "dead"
        assert client.retry(job_id) is True
        job = client.get(job_id)
        assert (job.state, job.attempts) == ("waiting", 0)
        assert job.errors == [{"type": "Boom"}]  # history is kept
        assert client.retry(job_id) is False  # not dead any more

    def test_dead_list_retry_and_purge(self, client, sql):
        worker = "00000000-0000-0000-0000-000000000003"
        ids = client.enqueue_many([JobSpec("x", queue=q_, max_attempts=1)
                                   for q_ in ("a", "a", "b")])
        executions = {}
        for queue in ("a", "b"):
            for row in sql(q("claim"), {"queue": queue, "limit": 5, "worker": worker,
                                        "lease_seconds": 30}):
                executions[row["id"]] = row["execution_id"]
        sql(q("finish_jobs"), {"id": ids, "execution": [executions[i] for i in ids],
                               "state": ["dead"] * 3,
                               "result": [None] * 3, "error": [None] * 3, "worker": worker})
        assert {r["id"] for r in client.dead()} == set(ids)
        assert {r["id"] for r in client.dead("b")} == {ids[2]}
        assert sorted(client.retry_dead("a")) == sorted(ids[:2])
        assert {client.get(i).state for i in ids[:2]} == {"waiting"}
        assert client.purge_dead() == 1
        assert client.get(ids[2]) is None


class TestStatus:
    def test_counts_per_queue_and_state(self, client, sql):
        worker = "00000000-0000-0000-0000-000000000004"
        client.enqueue_many([JobSpec("x", queue="a") for _ in range(3)])
        client.enqueue("x", queue="a", delay=3600)
        sql(q("claim"), {"queue": "a", "limit": 1, "worker": worker, "lease_seconds": 30})
        cancelled = client.enqueue("x", queue="b")
        client.cancel(cancelled)
        status = {r["queue"]: r for r in client.status()}
        assert (status["a"]["waiting"], status["a"]["scheduled"], status["a"]["running"]) == \
            (2, 1, 1)
        assert status["a"]["oldest_waiting_seconds"] >= 0
        assert (status["b"]["cancelled"], status["b"]["waiting"]) == (1, 0)


class TestArrayLiterals:
    """The worker sends outcome batches as array literals it builds itself (db.int_array,
    db.text_array): every string must come back from Postgres exactly as it went in."""

    def test_text_values_round_trip(self, sql):
        values = ['{"a": "b\\\\c"}', 'say "hi"', "back\\slash", "", "NULL", "null", None,
                  "{braces}, commas", "  spaces  ", "ünïcødé ✓", "line\nbreak", "tab\there"]
        rows = sql("SELECT %(v)s::text[] AS v", {"v": db.text_array(values)})
        assert rows[0]["v"] == values

    def test_integers_round_trip(self, sql):
        values = [1, -2, 2**62, 0]
        assert sql("SELECT %(v)s::bigint[] AS v", {"v": db.int_array(values)})[0]["v"] == values
        assert sql("SELECT %(v)s::bigint[] AS v", {"v": db.int_array([])})[0]["v"] == []

    @settings(max_examples=50, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])  # read-only SELECTs
    @given(st.lists(st.uuids()), st.lists(st.sampled_from(
        ["succeeded", "dead", "cancelled"])))
    def test_execution_ids_and_states_round_trip(self, sql, ids, states):
        """db.word_array: uuids and state words, joined without quotes."""
        row = sql("SELECT %(e)s::uuid[] AS e, %(s)s::text[] AS s",
                  {"e": db.word_array(map(str, ids)), "s": db.word_array(states)})[0]
        assert row == {"e": ids, "s": states}


def test_the_package_exports_resolve_on_first_use():
    """jobqueue's public names load lazily (a worker skips the client's pool); each of them
    must still resolve, and an unknown name must still fail as usual."""
    import jobqueue

    for name in jobqueue.__all__:
        assert getattr(jobqueue, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        jobqueue.nope  # noqa: B018
