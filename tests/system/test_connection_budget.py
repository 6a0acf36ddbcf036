"""Issue 11.2, the connection budget: one `jobqueue worker` process serving plain queues, the
`webhooks` queue and three LLM platforms, with a user task that uses the database and a
platform, a schedule that fires and a webhook that is delivered, never holds more than three
Postgres connections (sampled every 10 ms from pg_stat_activity while it works)."""

from __future__ import annotations

import subprocess
import threading

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from jobqueue import JobSpec
from jobqueue.client import Client
from jobqueue.webhooks import subscriptions
from tests.support.helpers import KEYS, jobqueue_cmd, run_cli, wait_finished, wait_until
from tests.support.receiver import Receiver

PLATFORMS = ("alpha", "beta", "gamma")


@pytest.fixture
def config(sim, tmp_path, monkeypatch):
    monkeypatch.setenv("JOBQUEUE_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8")
    path = tmp_path / "jobqueue.toml"
    path.write_text("".join(f"""
[platforms.{name}]
base_url = "{sim.base_url}"
model = "sim-{name}"
api_key_env = "SIM_KEY_A"
max_tokens = 16
timeout = 5
""" for name in PLATFORMS))
    return KEYS | {"JOBQUEUE_CONFIG": str(path),
                   "JOBQUEUE_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8"}


def _ours(url: str) -> str:
    """The test's own connections carry a name the sampler leaves out."""
    return make_conninfo(url, application_name="budget-test")


class Sampler:
    """Counts the test database's connections other than the test's, every 10 ms."""

    def __init__(self, url: str):
        self.url, self.peak, self.samples = url, 0, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with psycopg.connect(_ours(self.url), autocommit=True) as conn:
            while not self.done.wait(0.01):
                (n,), = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name <> 'budget-test'").fetchall()
                self.peak, self.samples = max(self.peak, n), self.samples + 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(10)


def test_one_process_with_queues_platforms_webhooks_and_schedules_holds_three(
        db_url, config, sim):
    receiver = Receiver()
    with Client(db_url) as jq:
        with jq.pool.connection() as conn:
            subscriptions.create(conn, "acme", receiver.url, ["job.succeeded"])
        llm = jq.enqueue_many([JobSpec("chat", {"messages": [
            {"role": "user", "content": f"question {i} on {p}"}]}, queue=p)
            for p in PLATFORMS for i in range(10)])
        probes = jq.enqueue_many([JobSpec("budget_probe", {"platform": p}, queue="plain",
                                          owner="acme") for p in PLATFORMS])
        plain = jq.enqueue_many([JobSpec("whoami", {}, queue="other") for _ in range(20)])
    added = run_cli("schedules", "add", "tick", "--cron", "* * * * *", "--kind", "whoami",
                    "--queue", "other", url=db_url, env=config)
    assert added.returncode == 0, added.stderr
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE jobqueue.schedules SET next_fire_at = now() WHERE name = 'tick'")

    with Sampler(db_url) as sampler:
        worker = jobqueue_cmd(
            "worker", "--queue", "plain:4", "--queue", "other:4", "--queue", "webhooks:2",
            *(a for p in PLATFORMS for a in ("--platform", f"{p}:5")),
            "--import", "tests.support.worker_tasks", "--retry-base-seconds", "0.05",
            url=db_url, env=config, stderr=subprocess.PIPE, text=True)
        try:
            ids = llm + probes + plain
            with psycopg.connect(_ours(db_url), autocommit=True) as conn:
                wait_until(lambda: conn.execute(
                    "SELECT count(*) FROM jobqueue.finished WHERE id = ANY(%s)",
                    (ids,)).fetchone()[0] == len(ids), timeout=60, message="every job ended")
            receiver.wait(len(probes))  # job.succeeded of acme's probes, delivered
            with psycopg.connect(_ours(db_url), autocommit=True) as conn:
                wait_until(lambda: conn.execute(
                    "SELECT count(*) FROM jobqueue.schedule_runs").fetchone()[0] >= 1,
                    message="the schedule fired")
                wait_until(lambda: conn.execute(
                    "SELECT count(*) FROM jobqueue.all_jobs WHERE queue = 'webhooks' "
                    "AND state = 'succeeded'").fetchone()[0] >= len(probes),
                    message="the deliveries' jobs ended")
        finally:
            worker.terminate()
            _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    with Client(db_url) as jq:
        jobs = wait_finished(jq, ids)
    assert [j.state for j in jobs] == ["succeeded"] * len(jobs)
    assert all(j.result["answer"] for j in jobs if j.kind == "budget_probe")
    assert sim.stats()["totals"]["ok"] >= len(llm) + len(probes)
    assert sampler.samples > 50
    assert sampler.peak <= 3, f"{sampler.peak} connections at the peak"
