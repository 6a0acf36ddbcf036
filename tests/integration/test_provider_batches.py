"""Jobs a provider batch holds (jobqueue/llm/batchapi.py hold()): leased to the batch's row,
not claimable, and outside the fleet-wide caps of their queue (0012's running_counts)."""

from __future__ import annotations

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
