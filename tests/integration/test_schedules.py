"""Schedules: fires decided exactly once, missed fires by policy, DST in a real zone, batch
targets, failures and their hook, start-up sync of declared schedules."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from jobqueue.errors import ConfigError, InvalidSchedule
from jobqueue.schedules import declared, spec, store, tick
from jobqueue.tasks import Registry, task


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def conn(db_url):
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        yield c


def add(conn, name, now, **fields):
    fields.setdefault("kind", "noop")
    store.save(conn, spec.build(name, fields), now)


def runs(conn, name):
    return list(reversed(store.runs(conn, name)))


def fired(conn, name):
    """(fire time, decision) of the runs that enqueued something, oldest first."""
    return [(r["fire_at"], r["decision"]) for r in runs(conn, name) if r["job_id"] or
            r["batch_id"]]


class TestFires:
    def test_each_fire_enqueues_one_job_naming_its_schedule(self, conn, sql):
        """An every-minute schedule ticked across 5 minutes enqueues 5 jobs, one per fire."""
        start = at(2026, 1, 1, 12, 0, 30)
        add(conn, "m", start, cron="* * * * *", payload={"x": 1})
        for second in range(0, 300, 7):
            tick.tick(conn, start + timedelta(seconds=second))
        assert [f for f, _ in fired(conn, "m")] == [
            at(2026, 1, 1, 12, minute) for minute in range(1, 6)]
        jobs = sql("SELECT kind, payload, metadata FROM jobqueue.jobs ORDER BY id")
        assert len(jobs) == 5
        assert jobs[0]["payload"] == {"x": 1}
        assert jobs[0]["metadata"] == {"schedule": "m", "fire_at": "2026-01-01T12:01:00+00:00"}

    def test_two_schedulers_at_the_same_moment_enqueue_once(self, conn, db_url, sql):
        """Eight threads ticking the same due fire at once: one job."""
        start = at(2026, 1, 1, 12, 0, 30)
        add(conn, "m", start, cron="* * * * *")
        barrier = threading.Barrier(8)

        def go():
            with psycopg.connect(db_url, autocommit=True) as c:
                barrier.wait()
                tick.tick(c, at(2026, 1, 1, 12, 1, 5))

        threads = [threading.Thread(target=go) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs")[0]["n"] == 1

    def test_a_fire_already_recorded_never_enqueues_again(self, conn, sql):
        """The unique run row, not the schedule's next_fire_at, decides: a schedule moved
        back (a stale scheduler, a redefinition) does not enqueue a recorded fire twice."""
        start = at(2026, 1, 1, 12, 0, 30)
        add(conn, "m", start, cron="* * * * *")
        tick.tick(conn, at(2026, 1, 1, 12, 1, 5))
        sql("UPDATE jobqueue.schedules SET next_fire_at = %s", (at(2026, 1, 1, 12, 1),))
        tick.tick(conn, at(2026, 1, 1, 12, 1, 10))
        assert sql("SELECT count(*) AS n FROM jobqueue.jobs")[0]["n"] == 1

    def test_paused_schedules_do_not_fire_and_resume_from_now(self, conn, sql):
        """A paused schedule is skipped by the tick; resuming does not catch up the pause."""
        start = at(2026, 1, 1, 12, 0, 30)
        add(conn, "m", start, cron="* * * * *")
        store.set_paused(conn, "m", True, start)
        tick.tick(conn, at(2026, 1, 1, 12, 30))
        assert runs(conn, "m") == []
        store.set_paused(conn, "m", False, at(2026, 1, 1, 12, 30, 10))
        tick.tick(conn, at(2026, 1, 1, 12, 31, 1))
        assert fired(conn, "m") == [(at(2026, 1, 1, 12, 31), "enqueued")]

    def test_run_now_enqueues_outside_the_cron_times(self, conn, sql):
        add(conn, "d", at(2026, 1, 1), cron="@daily")
        run = tick.run_now(conn, "d", at(2026, 1, 1, 9, 15))
        assert run["decision"] == "manual" and run["job_id"]
        assert tick.run_now(conn, "nope", at(2026, 1, 1, 9, 15)) is None
        assert store.get(conn, "d")["next_fire_at"] == at(2026, 1, 2)


    def test_a_replace_limited_to_one_owner_leaves_another_owners_schedule_alone(self, conn):
        """The owner test is in the upsert itself: bob's replace of a name alice saved (as
        when alice's save lands between the API's check and bob's write) changes nothing."""
        start = at(2026, 1, 1, 12)
        add(conn, "m", start, cron="@daily", owner="alice")
        bobs = spec.build("m", {"kind": "noop", "cron": "@hourly", "owner": "bob"})
        assert store.save(conn, bobs, start, replace=True, only_owner="bob") == "kept"
        (kept,) = store.listing(conn, name="m")
        assert kept["owner"] == "alice" and kept["cron"] == "@daily"
        alices = spec.build("m", {"kind": "noop", "cron": "@hourly", "owner": "alice"})
        assert store.save(conn, alices, start, replace=True, only_owner="alice") == "updated"
        assert store.listing(conn, name="m")[0]["cron"] == "@hourly"

    def test_a_schedule_that_cannot_be_decided_is_paused_and_others_go_on(self, conn, sql):
        """A stored expression that no longer parses (or a bug deciding it) fails that
        schedule alone: a failed run says why, it is paused, and the next one fires."""
        start = at(2026, 1, 1, 12, 0, 30)
        add(conn, "broken", start, cron="* * * * *")
        add(conn, "fine", start, cron="* * * * *")
        sql("UPDATE jobqueue.schedules SET cron = '* * *' WHERE name = 'broken'")
        tick.tick(conn, at(2026, 1, 1, 12, 1, 5))
        (run,) = runs(conn, "broken")
        assert run["decision"] == "failed" and "cron:" in run["reason"]
        assert store.get(conn, "broken")["paused"]
        assert fired(conn, "fine") == [(at(2026, 1, 1, 12, 1), "enqueued")]
        sql("UPDATE jobqueue.schedules SET target = '{\"type\": \"mystery\"}', "
            "paused = false WHERE name = 'broken'")
        sql("UPDATE jobqueue.schedules SET cron = '* * * * *' WHERE name = 'broken'")
        tick.tick(conn, at(2026, 1, 1, 12, 2, 5))
        assert "internal error" in runs(conn, "broken")[-1]["reason"]
        assert len(fired(conn, "fine")) == 2


class TestMissedFires:
    DOWN_FROM, BACK = at(2026, 1, 1, 12, 0, 30), at(2026, 1, 1, 13, 5, 30)

    def decide(self, conn, misfire, **extra):
        add(conn, "s", self.DOWN_FROM, cron="*/10 * * * *", misfire=misfire, **extra)
        tick.tick(conn, self.BACK)  # fires 12:10 ... 13:00 were missed (7 of them)
        return runs(conn, "s")

    def test_skip_runs_none_and_records_the_skip(self, conn):
        (skip,) = self.decide(conn, "skip")
        assert skip["decision"] == "skipped" and skip["skipped"] == 6
        assert (skip["skipped_from"], skip["fire_at"]) == (at(2026, 1, 1, 12, 10),
                                                          at(2026, 1, 1, 13, 0))
        assert "misfire policy skip" in skip["reason"]

    def test_once_runs_the_latest_as_a_catch_up(self, conn):
        skip, run = self.decide(conn, "once")
        assert (skip["decision"], skip["skipped"]) == ("skipped", 5)
        assert (run["decision"], run["fire_at"]) == ("caught_up", at(2026, 1, 1, 13, 0))
        assert run["job_id"] is not None

    def test_all_runs_each_and_max_lateness_skips_the_oldest(self, conn):
        found = self.decide(conn, "all", max_lateness=1800)
        skip, *caught = found
        assert skip["skipped"] == 3  # 12:10, 12:20, 12:30 are over 30 minutes late
        assert [r["fire_at"] for r in caught] == [at(2026, 1, 1, 12, 40),
                                                  at(2026, 1, 1, 12, 50), at(2026, 1, 1, 13)]
        assert {r["decision"] for r in caught} == {"caught_up"}

    def test_an_on_time_fire_makes_once_skip_the_backlog(self, conn):
        add(conn, "s", self.DOWN_FROM, cron="*/10 * * * *")
        tick.tick(conn, at(2026, 1, 1, 13, 0, 20))
        assert [(r["decision"], r["skipped"]) for r in runs(conn, "s")] == [
            ("skipped", 5), ("enqueued", 0)]

    def test_a_long_backlog_is_bounded(self):
        """A year of every-minute fires missed: decided without walking them all."""
        row = {"cron": "* * * * *", "timezone": "UTC", "misfire": "once",
               "max_lateness": None, "next_fire_at": at(2025, 1, 1)}
        plan = tick.decide(row, at(2026, 1, 1, 0, 0, 30))
        assert plan.run == [(at(2026, 1, 1), "enqueued")]
        assert plan.skipped_more and plan.next_fire_at == at(2026, 1, 1, 0, 1)


class TestDaylightSaving:
    """A 02:30 daily job in Europe/Berlin runs exactly once on both DST days."""

    def daily(self, conn, start, end):
        add(conn, "dst", start, cron="30 2 * * *", timezone="Europe/Berlin")
        now = start
        while now < end:  # a scheduler ticking every 5 minutes, on time
            now += timedelta(minutes=5)
            tick.tick(conn, now)
        return fired(conn, "dst")

    def test_spring_forward_gap_runs_once_just_after_the_gap(self, conn):
        got = self.daily(conn, at(2026, 3, 28, 12), at(2026, 3, 30, 12))
        # 02:30 CET on the 28th was 01:30Z; 02:30 does not exist on the 29th: 03:00 CEST.
        assert got == [(at(2026, 3, 29, 1, 0), "enqueued"), (at(2026, 3, 30, 0, 30), "enqueued")]

    def test_fall_back_overlap_runs_once_at_the_first_0230(self, conn):
        got = self.daily(conn, at(2026, 10, 24, 12), at(2026, 10, 26, 12))
        # 02:30 happens at 00:30Z (CEST) and again at 01:30Z (CET): only the first runs.
        assert got == [(at(2026, 10, 25, 0, 30), "enqueued"),
                       (at(2026, 10, 26, 1, 30), "enqueued")]

    def test_new_york_too(self, conn):
        add(conn, "ny", at(2026, 3, 7, 12), cron="30 2 * * *", timezone="America/New_York")
        for hour in range(0, 72):
            tick.tick(conn, at(2026, 3, 7, 12) + timedelta(hours=hour, minutes=0, seconds=1))
        days = [f.astimezone(spec.cron.parse_timezone("America/New_York")).date()
                for f, _ in fired(conn, "ny")]
        assert len(days) == len(set(days)) == 3


class TestBatchSchedules:
    def test_a_fire_submits_the_stored_file_as_a_named_batch(self, conn, sql, config_file,
                                                             monkeypatch, tmp_path):
        monkeypatch.setenv("JOBQUEUE_CONFIG", config_file)
        prompts = tmp_path / "prompts.csv"
        prompts.write_text("brand,idempotency_key\nacme,k1\nglobex,k2\n")
        fields = {"cron": "30 2 * * *", "timezone": "Europe/Berlin", "platform": "sim",
                  "batch_file": str(prompts), "template": "What is {brand}?"}
        store.save(conn, spec.build("daily-prompts", fields), at(2026, 5, 1))
        prompts.unlink()  # stored with the schedule: the file is not needed any more
        tick.tick(conn, at(2026, 5, 1, 0, 31))
        tick.tick(conn, at(2026, 5, 2, 0, 31))
        batches = sql("SELECT id, name, total, metadata FROM jobqueue.batches ORDER BY id")
        assert [b["total"] for b in batches] == [2, 2]  # same keys, another fire: not merged
        assert batches[0]["name"] == "schedule daily-prompts @ 2026-05-01 02:30 CEST (00:30Z)"
        assert batches[0]["metadata"]["schedule"] == "daily-prompts"
        (latest, *_) = store.runs(conn, "daily-prompts")
        assert latest["batch_id"] == batches[1]["id"]
        assert latest["batch_name"] == batches[1]["name"] and latest["outcome"] == "running"

    def test_a_fires_batch_runs_its_on_complete_job_when_every_member_has_ended(
            self, conn, sql, config_file, monkeypatch, tmp_path):
        monkeypatch.setenv("JOBQUEUE_CONFIG", config_file)
        prompts = tmp_path / "prompts.jsonl"
        prompts.write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
        fields = {"cron": "@daily", "platform": "sim", "batch_file": str(prompts),
                  "on_complete": {"kind": "summarise", "queue": "reports"}}
        store.save(conn, spec.build("nightly", fields), at(2026, 5, 1))
        tick.tick(conn, at(2026, 5, 2, 0, 0, 5))
        (batch,) = sql("SELECT id, on_complete_job FROM jobqueue.batches")
        assert batch["on_complete_job"], "the fire's batch has no callback"
        (callback,) = sql("SELECT queue, kind, payload FROM jobqueue.blocked WHERE id = %s",
                          (batch["on_complete_job"],))
        assert (callback["queue"], callback["kind"]) == ("reports", "summarise")
        assert callback["payload"]["schedule"] == "nightly"
        # Every member ends: the callback is released with the batch's id and counts.
        sql("UPDATE jobqueue.jobs SET lease_owner = NULL")
        from jobqueue.client import Client
        members = [r["id"] for r in sql("SELECT id FROM jobqueue.jobs WHERE batch_id = %s",
                                        (batch["id"],))]
        with Client(conn.info.dsn) as jq:
            for job_id in members:
                jq.cancel(job_id)
        (released,) = sql("SELECT payload FROM jobqueue.jobs WHERE id = %s",
                          (batch["on_complete_job"],))
        assert released["payload"]["batch_id"] == batch["id"]
        assert released["payload"]["counts"]["cancelled"] == 2

    def test_on_complete_is_for_batch_schedules_and_is_checked(self):
        with pytest.raises(InvalidSchedule, match="on_complete: goes with batch_file"):
            spec.build("j", {"cron": "@daily", "kind": "k", "on_complete": {"kind": "x"}})
        with pytest.raises(InvalidSchedule, match=r"on_complete\.colour: unknown field"):
            spec._on_complete({"kind": "x", "colour": 1})
        with pytest.raises(InvalidSchedule, match=r"on_complete\.kind: required"):
            spec._on_complete({"queue": "q"})

    def test_a_refused_enqueue_is_a_failed_run_emits_schedule_failed_and_calls_the_hook(
            self, conn, sql, config_file, monkeypatch, tmp_path):
        monkeypatch.setenv("JOBQUEUE_CONFIG", config_file)
        prompts = tmp_path / "p.jsonl"
        prompts.write_text('{"prompt": "hi"}\n')
        store.save(conn, spec.build("p", {"cron": "@hourly", "platform": "sim",
                                          "batch_file": str(prompts)}), at(2026, 5, 1))
        sql("INSERT INTO jobqueue.webhook_subscriptions (owner, url, events, secret) "
            "VALUES ('', 'http://127.0.0.1:9/hook', ARRAY['schedule.failed'], 's')")
        empty = tmp_path / "empty.toml"
        empty.write_text("")
        monkeypatch.setenv("JOBQUEUE_CONFIG", str(empty))  # the platform is gone
        events = []
        tick.register_failure_hook("test", lambda c, event: events.append(event))
        try:
            tick.tick(conn, at(2026, 5, 1, 1, 0, 5))
        finally:
            tick._failure_hooks.pop("test")
        (run,) = store.runs(conn, "p")
        assert run["decision"] == "failed" and "platform:" in run["reason"]
        assert events and events[0]["schedule"] == "p" and events[0]["run_id"] == run["id"]
        (delivery,) = sql("SELECT event_id, event_type, body FROM jobqueue.webhook_deliveries")
        assert delivery["event_id"] == f"schedule.failed:{run['id']}"
        assert delivery["body"]["data"]["schedule"]["name"] == "p"
        assert store.get(conn, "p")["next_fire_at"] == at(2026, 5, 1, 2)  # moves on


class TestValidation:
    @pytest.mark.parametrize("fields, field", [
        ({"cron": "* * * *", "kind": "x"}, "cron"),
        ({"cron": "@sometimes", "kind": "x"}, "cron"),
        ({"cron": "0 0 30 2 *", "kind": "x"}, "cron"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus", "kind": "x"}, "timezone"),
        ({"cron": "* * * * *"}, "kind"),
        ({"cron": "* * * * *", "kind": "x", "misfire": "twice"}, "misfire"),
        ({"cron": "* * * * *", "kind": "x", "max_lateness": -1}, "max_lateness"),
        ({"cron": "* * * * *", "kind": "x", "payload": float("nan")}, "payload"),
        ({"cron": "* * * * *", "kind": "x", "wat": 1}, "wat"),
    ])
    def test_bad_fields_are_named(self, fields, field):
        with pytest.raises(InvalidSchedule) as exc:
            spec.build("n", fields)
        assert str(exc.value).startswith(f"{field}:")


class TestDeclared:
    def test_sync_is_idempotent_and_keeps_state(self, conn, tmp_path, monkeypatch):
        """Four workers starting with the same declarations: one row each, next fire and
        pause kept; a declaration dropped from jobqueue.toml is removed."""
        toml = tmp_path / "jobqueue.toml"
        toml.write_text('[schedules.nightly]\ncron = "0 3 * * *"\nkind = "report"\n'
                        '[schedules.hourly]\ncron = "@hourly"\nkind = "ping"\n')
        monkeypatch.setenv("JOBQUEUE_CONFIG", str(toml))
        registry = Registry()
        task("cleanup", cron="*/15 * * * *", registry=registry)(lambda payload: None)
        first = declared.sync(conn, at(2026, 1, 1), declared.load(),
                              declared.from_tasks(registry))
        assert sorted(first["created"]) == ["hourly", "nightly", "task:cleanup"]
        store.set_paused(conn, "hourly", True, at(2026, 1, 1))
        for _ in range(4):
            again = declared.sync(conn, at(2026, 1, 2), declared.load(),
                                  declared.from_tasks(registry))
            assert again == {"created": [], "updated": [], "removed": []}
        rows = {r["name"]: r for r in store.listing(conn)}
        assert rows["nightly"]["next_fire_at"] == at(2026, 1, 1, 3)
        assert rows["hourly"]["paused"] and rows["task:cleanup"]["origin"] == "task"
        toml.write_text('[schedules.nightly]\ncron = "0 4 * * *"\nkind = "report"\n')
        changed = declared.sync(conn, at(2026, 1, 2), declared.load(), {})
        assert changed == {"created": [], "updated": ["nightly"], "removed": ["hourly"]}
        assert store.get(conn, "nightly")["next_fire_at"] == at(2026, 1, 2, 4)

    def test_a_bad_table_names_file_table_and_field(self, tmp_path):
        toml = tmp_path / "jobqueue.toml"
        toml.write_text('[schedules.x]\ncron = "0 25 * * *"\nkind = "r"\n')
        with pytest.raises(ConfigError, match=r"jobqueue.toml: schedules.x.cron: "):
            declared.load(toml)

    def test_a_bad_task_cron_fails_at_import(self):
        with pytest.raises(ValueError, match="cron"):
            task("bad", cron="every day", registry=Registry())(lambda payload: None)


class TestPruning:
    def test_runs_past_the_retention_are_pruned_by_the_maintenance_hook(self, conn, sql,
                                                                        db_url):
        import asyncio

        from jobqueue.worker.scheduler import prune_runs

        add(conn, "m", at(2026, 1, 1), cron="* * * * *")
        tick.tick(conn, at(2026, 1, 1, 0, 1, 5))
        tick.tick(conn, at(2026, 1, 1, 0, 2, 5))
        sql("UPDATE jobqueue.schedule_runs SET decided_at = now() - CASE WHEN fire_at = %s "
            "THEN interval '91 days' ELSE interval '89 days' END", (at(2026, 1, 1, 0, 1),))

        async def prune():
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as c:
                return await prune_runs(c)

        assert asyncio.run(prune()) == 1
        assert [f for f, _ in fired(conn, "m")] == [at(2026, 1, 1, 0, 2)]
