"""Jobs a provider batch holds (jobqueue/llm/batchapi.py hold()): leased to the batch's row,
not claimable, and outside the fleet-wide caps of their queue (0012's running_counts)."""

from __future__ import annotations

import contextlib

from jobqueue import JobSpec
from jobqueue.llm import batchapi
from tests.support.helpers import KEYS, platform


def test_held_jobs_are_running_unclaimable_and_take_no_capped_place(client, sim, sql,
                                                                    monkeypatch):
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    p = platform(sim, batch_max_requests=2)
    held: list = []
    batch_id, total = client.submit_batch(
        (JobSpec("chat", {"prompt": f"q{i}"}) for i in range(3)), queue="sim",
        before_commit=lambda conn, b: held.extend(batchapi.hold(conn, b, [p])))
    assert total == 3 and [name for _, name in held] == ["sim", "sim"]
    rows = sql("SELECT requests, on_expiry, status FROM jobqueue.provider_batches "
               "ORDER BY id")
    assert [(r["requests"], r["on_expiry"], r["status"]) for r in rows] == [
        (2, "requeue", "pending"), (1, "requeue", "pending")]
    assert client.batch(batch_id)["running"] == 3
    jobs = sql("SELECT j.attempts, j.lease_owner = p.lease AS mine FROM jobqueue.jobs j "
               "JOIN jobqueue.provider_batches p ON p.batch_id = j.batch_id "
               "AND p.lease = j.lease_owner")
    assert len(jobs) == 3 and all(j["attempts"] == 1 for j in jobs)
    # what a capped queue's claim counts as running: not these (they run at the provider)
    assert sql("SELECT * FROM jobqueue.running_counts('sim')") == []


def test_a_pass_whose_hold_ran_out_writes_nothing_and_cancels_what_it_created(
        client, sim, sql, monkeypatch):
    """A row is held between a pass's database blocks by its claim (next_poll_at), not by a
    transaction: the CLI's first submit takes it (pb_take) and a second taker stands back;
    if the hold runs out during the upload and another pass takes the row, the first pass's
    upload is not recorded (the row stays the new holder's) and the provider batch it created
    is cancelled."""
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    p = platform(sim)
    held: list = []
    client.submit_batch((JobSpec("chat", {"prompt": f"q{i}"}) for i in range(2)), queue="sim",
                        before_commit=lambda conn, b: held.extend(batchapi.hold(conn, b, [p])))
    [(pb_id, _)] = held
    take = {"id": pb_id, "status": "pending", "hold_seconds": 300}
    expire = ("UPDATE jobqueue.provider_batches SET next_poll_at = now() - interval '1 second' "
              "WHERE id = %s")
    taken_over = []
    with client.pool.connection() as conn:
        [first] = conn.execute(batchapi.q("pb_take"), take).fetchall()
        assert not batchapi.submit(batchapi.on(conn), pb_id, p)  # held: the CLI stands back
        assert sim.stats()["batches"]["created"] == 0

        def borrow():  # its second block comes after the upload: the row was taken meanwhile
            if len(taken_over) == 0 and borrow.blocks == 1:
                conn.execute(expire, (pb_id,))
                taken_over.extend(conn.execute(batchapi.q("pb_take"), take).fetchall())
            borrow.blocks += 1
            return contextlib.nullcontext(conn)

        borrow.blocks = 0
        assert not batchapi.submit(borrow, pb_id, p, claim=first["claim"])
    [second] = taken_over
    [row] = sql("SELECT status, provider_batch_id, next_poll_at FROM "
                "jobqueue.provider_batches WHERE id = %s", (pb_id,))
    assert (row["status"], row["provider_batch_id"]) == ("pending", None)
    assert row["next_poll_at"] == second["claim"]
    [created] = sim.batch_api.batches.values()
    assert created["status"] == "cancelling"
    with client.pool.connection() as conn:  # the new holder's submit goes through
        assert batchapi.submit(batchapi.on(conn), pb_id, p, claim=second["claim"])
    assert sql("SELECT status FROM jobqueue.provider_batches")[0]["status"] == "submitted"
