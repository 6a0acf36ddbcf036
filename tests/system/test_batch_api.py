"""`batch submit --via batch-api` end to end (issue 14.3): the CLI writes and uploads the
provider's JSONL and creates the batch with the openai SDK's files/batches methods against
the simulator; a platform worker's maintenance leader polls it and imports the answers and
per-request errors into the same jobs, so `batch wait` and `batch export` work unchanged.
Splitting, expiry, cancellation and a refused file each have a test."""

from __future__ import annotations

import json
import subprocess

import openai
import pytest

from jobqueue.llm.batchapi import request_line
from tests.support.helpers import KEYS, jobqueue_cmd, platform, run_cli, wait_until


def write_config(tmp_path, sim, **batch) -> dict:
    extra = "".join(f"{k} = {v}\n" for k, v in batch.items())
    path = tmp_path / "jobqueue.toml"
    path.write_text(f"""
[platforms.sim]
base_url = "{sim.base_url}"
model = "sim-main"
api_key_env = "SIM_KEY_A"
max_tokens = 16
timeout = 5
max_attempts = 3
batch_poll_seconds = 0.05
batch_poll_max_seconds = 0.2
{extra}""")
    return KEYS | {"JOBQUEUE_CONFIG": str(path)}


@pytest.fixture
def config(sim, tmp_path):
    return write_config(tmp_path, sim)


def prompts(tmp_path, n: int, name: str = "p.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps({"prompt": f"question {i}", "metadata": {"row": i}})
                            + "\n" for i in range(n)))
    return path


def submit(db_url, env, path, *args):
    out = run_cli("batch", "submit", str(path), "--platform", "sim", "--via", "batch-api",
                  *args, url=db_url, env=env)
    return out


def run_worker_until_done(db_url, env, batch_id: str):
    """A platform worker (its maintenance leader polls) while `batch wait` runs."""
    worker = jobqueue_cmd("worker", "--platform", "sim", "--maintenance-seconds", "0.1",
                          "--retry-base-seconds", "0.05", url=db_url, env=env,
                          stderr=subprocess.DEVNULL)
    try:
        return run_cli("batch", "wait", batch_id, "--interval", "0.1", "--timeout", "50",
                       url=db_url, env=env)
    finally:
        worker.terminate()
        worker.wait(30)


def show(db_url, env, batch_id: str) -> dict:
    return json.loads(run_cli("batch", "show", batch_id, url=db_url, env=env).stdout)


def export(db_url, env, batch_id: str) -> list[dict]:
    out = run_cli("batch", "export", batch_id, url=db_url, env=env)
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_answers_and_per_request_errors_come_back_into_the_same_jobs(db_url, config, sim,
                                                                     tmp_path, sql):
    sim.configure(batch_error_every=3)  # requests 3 and 6 answer 500 in the error file
    out = submit(db_url, config, prompts(tmp_path, 6))
    assert out.returncode == 0, out.stderr
    assert "1 provider batch(es), 1 submitted" in out.stderr
    batch_id = out.stdout.strip()
    # Held by the provider batch: running, leased to it, claimed by no worker.
    shown = show(db_url, config, batch_id)
    assert (shown["running"], shown["waiting"]) == (6, 0)
    [pb] = shown["provider_batches"]
    assert (pb["status"], pb["provider_status"], pb["requests"]) == ("submitted",
                                                                     "validating", 6)
    assert sql("SELECT count(*) AS n FROM jobqueue.workers")[0]["n"] == 0

    waited = run_worker_until_done(db_url, config, batch_id)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "6 ok, 0 dead" in waited.stdout

    records = export(db_url, config, batch_id)
    via = {r["metadata"]["row"]: r["result"].get("via") for r in records}
    assert via == {0: "batch-api", 1: "batch-api", 2: None, 3: "batch-api", 4: "batch-api",
                   5: None}  # the two 500s were retried by the realtime worker
    batched = [r for r in records if r["result"].get("via")]
    assert all(r["usage"]["total_tokens"] > 0 and r["answer"] for r in batched)
    assert all(r["result"]["provider_batch"] == pb["provider_batch_id"] for r in batched)
    retried = [r for r in records if not r["result"].get("via")]
    assert all(r["attempts"] == 2 for r in retried)
    [pb] = show(db_url, config, batch_id)["provider_batches"]
    assert (pb["status"], pb["provider_status"], pb["succeeded"], pb["requeued"]) == (
        "imported", "completed", 4, 2)
    assert pb["polls"] >= 3  # validating -> in_progress -> finalizing -> completed
    stats = sim.stats()
    assert (stats["batches"]["requests"], stats["totals"]["ok"]) == (6, 2)


def test_a_large_batch_is_split_by_requests_and_by_bytes(db_url, sim, tmp_path):
    env = write_config(tmp_path, sim, batch_max_requests=4)
    out = submit(db_url, env, prompts(tmp_path, 10))
    assert out.returncode == 0, out.stderr
    sizes = [pb["requests"] for pb in show(db_url, env, out.stdout.strip())["provider_batches"]]
    assert sizes == [4, 4, 2]

    # bytes: a file of two and a half request lines holds two
    line = request_line(1, {"messages": [{"role": "user", "content": "question 0"}]},
                        platform(sim))
    limit = len(line) * 5 // 2
    env = write_config(tmp_path, sim, batch_max_file_bytes=limit)
    out = submit(db_url, env, prompts(tmp_path, 5, "q.jsonl"))
    assert out.returncode == 0, out.stderr
    batch_id = out.stdout.strip()
    sizes = [pb["requests"] for pb in show(db_url, env, batch_id)["provider_batches"]]
    assert sizes == [2, 2, 1]
    uploads = [f for f in sim.batch_api.files.values() if f["purpose"] == "batch"]
    assert all(f["bytes"] <= limit for f in uploads[-3:])
    waited = run_worker_until_done(db_url, env, batch_id)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert all(r["result"]["via"] == "batch-api" for r in export(db_url, env, batch_id))


def test_an_expired_batch_keeps_its_part_and_requeues_the_rest(db_url, config, sim,
                                                               tmp_path):
    sim.configure(batch_outcome="expired", batch_processed=2)
    out = submit(db_url, config, prompts(tmp_path, 5))
    batch_id = out.stdout.strip()
    waited = run_worker_until_done(db_url, config, batch_id)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    records = export(db_url, config, batch_id)
    assert [r["result"].get("via") for r in records] == ["batch-api"] * 2 + [None] * 3
    assert all("BatchExpired" in r["error"] for r in records[2:])
    [pb] = show(db_url, config, batch_id)["provider_batches"]
    assert (pb["provider_status"], pb["succeeded"], pb["requeued"]) == ("expired", 2, 3)


def test_a_cancelled_batch_dead_letters_the_rest_when_asked(db_url, config, sim, tmp_path):
    sim.configure(batch_processed=1)
    out = submit(db_url, config, prompts(tmp_path, 3), "--on-expiry", "dead")
    batch_id = out.stdout.strip()
    [pb] = show(db_url, config, batch_id)["provider_batches"]
    # Cancelled at the provider (its dashboard, or another tool), with the SDK's own method.
    client = openai.OpenAI(api_key=KEYS["SIM_KEY_A"], base_url=sim.base_url)
    client.batches.retrieve(pb["provider_batch_id"])  # validating -> in_progress
    assert client.batches.cancel(pb["provider_batch_id"]).status == "cancelling"
    waited = run_worker_until_done(db_url, config, batch_id)
    assert waited.returncode == 1  # dead jobs
    assert "2 job(s) dead" in waited.stderr
    records = export(db_url, config, batch_id)
    assert [r["state"] for r in records] == ["succeeded", "dead", "dead"]
    assert all("BatchCancelled" in r["error"] for r in records[1:])
    assert sim.stats()["totals"]["ok"] == 0  # nothing went to the realtime API


def test_a_file_the_provider_refuses_goes_to_the_workers(db_url, config, sim, tmp_path):
    sim.configure(batch_max_file_bytes=10)  # the provider's limit, below ours
    out = submit(db_url, config, prompts(tmp_path, 2))
    assert out.returncode == 0, out.stderr
    assert "1 provider batch(es), 0 submitted" in out.stderr
    batch_id = out.stdout.strip()
    [pb] = show(db_url, config, batch_id)["provider_batches"]
    assert (pb["status"], pb["provider_status"], pb["requeued"]) == ("imported", "refused", 2)
    assert "file_too_large" in pb["last_error"] or "too large" in pb["last_error"]
    waited = run_worker_until_done(db_url, config, batch_id)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert sim.stats()["totals"]["ok"] == 2


def test_a_job_cancelled_while_the_provider_holds_it_ends_cancelled(db_url, config, sim,
                                                                     tmp_path):
    out = submit(db_url, config, prompts(tmp_path, 2))
    batch_id = out.stdout.strip()
    first = export(db_url, config, batch_id)[0]["id"]
    assert run_cli("jobs", "cancel", str(first), url=db_url, env=config).returncode == 0
    waited = run_worker_until_done(db_url, config, batch_id)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert [r["state"] for r in export(db_url, config, batch_id)] == ["cancelled",
                                                                      "succeeded"]


def test_missing_key_is_refused_before_anything_is_enqueued(db_url, config, tmp_path, sql):
    env = config | {"SIM_KEY_A": ""}
    out = submit(db_url, env, prompts(tmp_path, 1))
    assert out.returncode == 2
    assert "--via batch-api: platform sim: environment variable(s) SIM_KEY_A" in out.stderr
    assert sql("SELECT count(*) AS n FROM jobqueue.batches")[0]["n"] == 0


def test_dry_run_counts_jobs_and_files_and_enqueues_nothing(db_url, sim, tmp_path, sql):
    env = write_config(tmp_path, sim, batch_max_requests=4)
    out = submit(db_url, env, prompts(tmp_path, 5), "--samples", "2", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "5 row(s) x 1 platform(s) x 2 sample(s) = 10 job(s)" in out.stdout
    assert "  sim: 10 job(s), max_attempts 3, 3 Batch API file(s)" in out.stdout
    assert sql("SELECT count(*) AS n FROM jobqueue.batches")[0]["n"] == 0
    assert sim.stats()["batches"]["files"] == 0


def test_a_slow_download_does_not_hold_up_the_workers_other_jobs(db_url, config, sim,
                                                                  tmp_path):
    """A pass's provider calls run outside its database blocks: while the leader downloads a
    batch's output file (held 10 s by the simulator), the same worker's realtime jobs, whose
    limiter statements and outcomes use the finish link the pass borrows, still finish.
    Before, the pass held that link for the whole download."""
    out = submit(db_url, config, prompts(tmp_path, 2))
    assert out.returncode == 0, out.stderr
    held = out.stdout.strip()
    sim.configure(batch_download_seconds=10)
    worker = jobqueue_cmd("worker", "--platform", "sim", "--maintenance-seconds", "0.1",
                          url=db_url, env=config, stderr=subprocess.DEVNULL)
    try:
        def downloading() -> bool:
            assert worker.poll() is None, "the worker exited"
            return sim.stats()["batches"]["downloading"] > 0

        wait_until(downloading, timeout=30, message="the pass's download")
        realtime = run_cli("batch", "submit", str(prompts(tmp_path, 3, "now.jsonl")),
                           "--platform", "sim", url=db_url, env=config)
        assert realtime.returncode == 0, realtime.stderr
        waited = run_cli("batch", "wait", realtime.stdout.strip(), "--interval", "0.05",
                         "--timeout", "30", url=db_url, env=config)
        assert waited.returncode == 0, waited.stdout + waited.stderr
        assert "3 ok, 0 dead" in waited.stdout
        assert sim.stats()["batches"]["downloading"] == 1  # the download is still under way
        sim.configure(batch_download_seconds=0)
        done = run_cli("batch", "wait", held, "--interval", "0.1", "--timeout", "40",
                       url=db_url, env=config)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "2 ok, 0 dead" in done.stdout
    finally:
        worker.terminate()
        worker.wait(30)
