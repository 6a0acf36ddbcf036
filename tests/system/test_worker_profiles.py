"""`jobqueue worker --profile NAME` and `--until-idle` as an operator runs them: a Procfile
line serving two queues from a [workers.NAME] table, a cron run that drains and exits 0, and
the same with --processes."""

from __future__ import annotations

import signal
import subprocess
import time

import psycopg
import pytest
from psycopg.rows import dict_row

from jobqueue import JobSpec
from jobqueue.client import Client
from tests.support.helpers import jobqueue_cmd, run_cli, wait_finished
from tests.support.worker_tasks import EFFECTS_DDL

TASKS = ("--import", "tests.support.worker_tasks")


@pytest.fixture
def config(tmp_path):
    """config(text) -> the environment that points JOBQUEUE_CONFIG at a file holding it."""
    def write(text: str) -> dict:
        path = tmp_path / "jobqueue.toml"
        path.write_text(text)
        return {"JOBQUEUE_CONFIG": str(path)}

    return write


def enqueue(url: str, kind: str, queue: str, n: int, **options) -> list[int]:
    with Client(url) as jq:
        return jq.enqueue_many([JobSpec(kind, {}, queue=queue, **options) for _ in range(n)])


def test_a_profile_serves_two_queues_in_one_process(db_url, config):
    """`worker: jobqueue worker --profile p`: the profile's queues, concurrencies and import
    make one worker process; SIGTERM still stops it cleanly."""
    env = config('[workers.p]\nqueues = ["alpha:2", "beta:3"]\n'
                 'import = ["tests.support.worker_tasks"]\n')
    proc = jobqueue_cmd("worker", "--profile", "p", url=db_url, env=env,
                        stderr=subprocess.PIPE, text=True)
    try:
        ids = enqueue(db_url, "whoami", "alpha", 10) + enqueue(db_url, "whoami", "beta", 10)
        with Client(db_url) as jq:
            jobs = wait_finished(jq, ids, timeout=30)
        assert {(j.state, j.result["pid"]) for j in jobs} == {("succeeded", proc.pid)}
        with psycopg.connect(db_url, row_factory=dict_row) as conn:
            row = conn.execute("SELECT queue, concurrency FROM jobqueue.workers").fetchone()
        assert row == {"queue": "alpha,beta", "concurrency": 5}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_a_bad_profile_is_one_line_naming_file_table_and_field(db_url, config):
    env = config('[workers.p]\nqueues = ["alpha:2", "beta:0"]\n')
    result = run_cli("worker", "--profile", "p", url=db_url, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: {env['JOBQUEUE_CONFIG']}: workers.p.queues[1]: 'beta:0': expected NAME or "
        "NAME:CONCURRENCY (a whole number of at least 1)"]


def test_until_idle_drains_and_exits_0(db_url):
    """A cron run: every runnable job succeeds, a job due in an hour waits for the next run,
    and the command exits 0 within seconds (not at the 30 s poll)."""
    ids = enqueue(db_url, "whoami", "q", 50)
    later = enqueue(db_url, "whoami", "q", 1, delay=3600)
    t0 = time.monotonic()
    result = run_cli("worker", "--queue", "q:5", "--until-idle", "--poll-seconds", "30", *TASKS,
                     url=db_url)
    elapsed = time.monotonic() - t0
    assert result.returncode == 0, result.stderr
    assert elapsed < 20
    assert "worker_idle" in result.stderr
    with Client(db_url) as jq:
        assert {jq.get(i).state for i in ids} == {"succeeded"}
        assert jq.get(later[0]).state == "scheduled"


def test_until_idle_with_processes_from_a_profile(db_url, config):
    """`processes = 2` and `until_idle = true` in a profile: both children drain, exit 0 by
    themselves, are not restarted, and the supervisor exits 0."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(EFFECTS_DDL)
    env = config('[workers.nightly]\nqueues = ["q:4"]\nprocesses = 2\nuntil_idle = true\n'
                 'import = ["tests.support.worker_tasks"]\n')
    ids = enqueue(db_url, "record", "q", 60)
    t0 = time.monotonic()
    result = run_cli("worker", "--profile", "nightly", url=db_url, env=env)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - t0 < 40
    assert "worker_process_died" not in result.stderr
    assert result.stderr.count('"worker_idle"') == 2
    with Client(db_url) as jq:
        assert {jq.get(i).state for i in ids} == {"succeeded"}
    with psycopg.connect(db_url) as conn:
        runs = conn.execute("SELECT count(*), count(DISTINCT job_id) FROM test_effects").fetchone()
    assert runs == (60, 60)
