"""`jobqueue schedules ...` as users run it: exit codes, messages naming the option, and a
real worker process that syncs jobqueue.toml's schedules and enqueues (and runs) a due fire."""

from __future__ import annotations

import json
import subprocess

import psycopg
from psycopg.rows import dict_row

from tests.support.helpers import jobqueue_cmd, run_cli, wait_until


def test_add_list_show_pause_resume_run_now_remove(db_url):
    cli = lambda *a: run_cli("schedules", *a, url=db_url)  # noqa: E731
    r = cli("add", "nightly", "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--kind", "noop")
    assert r.returncode == 0 and "created; next fires" in r.stderr
    assert cli("add", "nightly", "--cron", "@daily", "--kind", "noop").returncode == 2
    bad = cli("add", "x", "--cron", "30 2 * *", "--kind", "noop")
    assert bad.returncode == 2 and "--cron: " in bad.stderr and "Traceback" not in bad.stderr
    bad = cli("add", "x", "--cron", "@daily", "--tz", "Atlantis/Nowhere", "--kind", "noop")
    assert bad.returncode == 2 and "--timezone: unknown zone" in bad.stderr
    bad = cli("add", "x", "--cron", "@daily", "--batch-file", "missing.csv", "--platform", "p")
    assert bad.returncode == 2
    assert "nightly" in cli("list").stdout
    assert cli("pause", "nightly").stdout.strip() == "schedule nightly: paused"
    assert "active; next fire" in cli("resume", "nightly").stdout
    run = cli("run-now", "nightly")
    assert run.returncode == 0 and run.stdout.strip().isdigit()
    shown = json.loads(cli("show", "nightly").stdout)
    assert shown["runs"][0]["decision"] == "manual"
    assert shown["runs"][0]["job_id"] == int(run.stdout)
    assert [s["name"] for s in json.loads(cli("list", "--json").stdout)] == ["nightly"]
    assert cli("remove", "nightly").returncode == 0
    for command in ("show", "pause", "resume", "run-now", "remove"):
        missing = cli(command, "nightly")
        assert missing.returncode == 2 and "no such schedule" in missing.stderr, command


def test_a_worker_syncs_the_config_and_runs_a_due_fire(db_url, tmp_path):
    toml = tmp_path / "jobqueue.toml"
    toml.write_text('[schedules.tick]\ncron = "* * * * *"\nkind = "noop"\n')
    env = {"JOBQUEUE_CONFIG": str(toml)}
    worker = jobqueue_cmd("worker", "--queue", "default", url=db_url, env=env,
                          stderr=subprocess.DEVNULL)
    try:
        with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
            wait_until(lambda: conn.execute("SELECT 1 FROM jobqueue.schedules").fetchall(),
                       message="the worker's start-up sync")
            # Make the next fire due now rather than wait for the minute to turn.
            conn.execute("UPDATE jobqueue.schedules SET next_fire_at = date_trunc('minute', "
                         "now())")
            run = wait_until(lambda: conn.execute(
                "SELECT r.job_id, f.state FROM jobqueue.schedule_runs r JOIN jobqueue.finished "
                "f ON f.id = r.job_id").fetchone(), timeout=30, message="a fire, run")
            assert run["state"] == "succeeded"
    finally:
        worker.terminate()
        assert worker.wait(30) == 0
