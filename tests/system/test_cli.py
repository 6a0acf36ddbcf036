"""The `jobqueue` command, run as a real process: output, exit codes, environment options,
log lines, and the embedded database when DATABASE_URL is absent."""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import time

from jobqueue.db import embedded, migrate
from tests.support.helpers import ROOT, jobqueue_cmd, run_cli, wait_until


class TestCommands:
    def test_migrate_twice(self, empty_db_url):
        first = run_cli("migrate", url=empty_db_url)
        second = run_cli("migrate", url=empty_db_url)
        count = len(migrate.available())
        assert first.returncode == 0 and f"applied {count} migration(s)" in first.stdout
        assert second.returncode == 0 and "up to date" in second.stdout

    def test_enqueue_show_cancel_retry(self, db_url, sql):
        out = run_cli("enqueue", "--kind", "echo", "--payload", '{"a": 1}', "--priority", "high",
                      url=db_url)
        assert out.returncode == 0, out.stderr
        job_id = out.stdout.strip()
        shown = json.loads(run_cli("jobs", "show", job_id, "--json", url=db_url).stdout)
        assert (shown["state"], shown["payload"], shown["priority"]) == ("waiting", {"a": 1}, -10)
        cancel = run_cli("jobs", "cancel", job_id, url=db_url)
        assert cancel.returncode == 0 and "cancelled" in cancel.stdout
        again = run_cli("jobs", "retry", job_id, url=db_url)
        assert again.returncode == 0 and "queued again" in again.stdout
        shown = run_cli("jobs", "show", job_id, "--json", url=db_url)
        assert json.loads(shown.stdout)["state"] == "waiting"
        # each action is on the job's timeline, as the operating system's user, via the CLI
        assert sql("SELECT action, actor, via FROM jobqueue.job_actions WHERE job_id = %s "
                   "ORDER BY id", (int(job_id),)) == [
            {"action": a, "actor": getpass.getuser(), "via": "cli"} for a in ("cancel", "retry")]

    def test_status_json_counts_per_queue(self, db_url):
        for queue in ("a", "a", "b"):
            run_cli("enqueue", "-k", "noop", "-q", queue, url=db_url)
        status = json.loads(run_cli("status", "--json", url=db_url).stdout)
        waiting = {r["queue"]: r["waiting"] for r in status["queues"]}
        assert waiting == {"a": 2, "b": 1}
        text = run_cli("status", url=db_url).stdout
        assert "QUEUE" in text and "WAITING" in text

    def test_options_come_from_the_environment_too(self, db_url):
        out = run_cli("enqueue", "-k", "noop", url=db_url,
                      env={"JOBQUEUE_ENQUEUE_QUEUE": "from-env"})
        shown = json.loads(run_cli("jobs", "show", out.stdout.strip(), "--json", url=db_url).stdout)
        assert shown["queue"] == "from-env"

    def test_dead_letters_list_retry_purge(self, db_url, client, sql):
        ids = [int(run_cli("enqueue", "-k", "fail", "--max-attempts", "1", url=db_url).stdout)
               for _ in range(2)]
        worker = jobqueue_cmd("worker", url=db_url, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: all(client.get(i).state == "dead" for i in ids))
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(20) == 0
        listed = json.loads(run_cli("dead", "list", "--json", url=db_url).stdout)
        assert {r["id"] for r in listed} == set(ids)
        assert listed[0]["last_error"]["type"] == "RuntimeError"
        assert "1 job(s) queued again" in run_cli("dead", "retry", str(ids[0]), url=db_url).stdout
        assert "1 dead job(s) deleted" in run_cli("dead", "purge", "--yes", url=db_url).stdout
        assert client.get(ids[1]) is None and client.get(ids[0]).state == "waiting"
        assert sql("SELECT job_id, action, via FROM jobqueue.job_actions ORDER BY id") == [
            {"job_id": ids[0], "action": "retry", "via": "cli"},
            {"job_id": ids[1], "action": "delete", "via": "cli"}]


class TestErrors:
    def test_bad_input_exits_2_with_one_line_naming_the_problem(self, db_url):
        cases = [
            (["enqueue", "-k", "x", "--payload", "{nope"], "--payload: not valid JSON"),
            (["enqueue", "-k", "x", "--priority", "urgent"], "priority: expected an integer"),
            (["jobs", "show", "987654"], "job 987654: no such job"),
            (["worker", "--concurrency", "0"], "--concurrency"),
            (["worker", "--import", "no.such.module"], "--import no.such.module"),
            (["enqueue"], "Missing option '--kind'"),
        ]
        for args, message in cases:
            out = run_cli(*args, url=db_url)
            assert out.returncode == 2, (args, out.stderr)
            assert message in out.stderr, (args, out.stderr)
            assert "Traceback" not in out.stderr

    def test_odd_input_a_helper_found_exits_2_with_one_line(self, db_url, tmp_path):
        """Each of these printed a traceback (exit 1): a RecursionError out of the JSON or
        TOML decoder, a TypeError from a payload that is no object, OverflowError and NaN
        from numbers, a bad module name or one that is not valid Python, bytes that are not
        UTF-8."""
        (tmp_path / "bad_syntax_tasks.py").write_text("def (:\n")
        deep = tmp_path / "jobqueue.toml"
        deep.write_text("[tasks]\nx = " + "[" * 2000 + "]" * 2000 + "\n")
        cases = [
            (["enqueue", "-k", "k", "--payload", "[" * 3000], "--payload: nested too deeply"),
            (["enqueue", "--platform", "p", "--prompt", "hi", "--payload", "[1]"],
             "--payload: must be a JSON object"),
            (["schedules", "add", "s", "--cron", "@daily", "--platform", "p", "--prompt", "hi",
              "--payload", "5"], "--payload: must be a JSON object"),
            (["alerts", "set", "q", "--depth-over", str(10**309)], "--depth-over"),
            (["batch", "wait", "3", "--interval", "nan"], "--interval"),
            (["worker", "--import", ""], "not a module name"),
            (["worker", "--import", ".x"], "not a module name"),
            (["worker", "--lease-seconds", "inf"], "--lease-seconds"),
            (["jobs", "list", "-q", "\udcff"], "is not valid UTF-8"),
            # ids past bigint: bad usage, not "Error: database" (exit 1)
            (["jobs", "cancel", str(2**63)], "JOB_ID"),
            (["dead", "retry", str(2**63)], "JOB_IDS"),
            (["jobs", "list", "--batch", str(2**63)], "--batch"),
            (["batch", "show", str(2**63)], "BATCH_ID"),
            (["webhooks", "deliveries", str(2**63)], "SUBSCRIPTION_ID"),
            (["tokens", "create", "--owner", "a", "--rate-limit", str(2**31)], "--rate-limit"),
        ]
        for args, message in cases:
            out = run_cli(*args, url=db_url)
            assert out.returncode == 2, (args, out.stderr)
            assert message in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
        out = run_cli("enqueue", "-k", "k", url=db_url, env={"JOBQUEUE_CONFIG": str(deep)})
        assert out.returncode == 2 and "nested too deeply" in out.stderr, out.stderr
        out = run_cli("worker", "--import", "bad_syntax_tasks", url=db_url,
                      env={"PYTHONPATH": str(tmp_path)})
        assert out.returncode == 2 and "--import bad_syntax_tasks: invalid syntax" in out.stderr
        assert "Traceback" not in out.stderr, out.stderr

    def test_an_unreachable_database_exits_1_without_a_traceback(self):
        out = run_cli("status", url="postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
        assert out.returncode == 1
        assert "cannot reach the database" in out.stderr and "Traceback" not in out.stderr


class TestLogs:
    def test_json_lines_carry_the_job_ids(self, db_url, client):
        job_id = client.enqueue("fail", max_attempts=1)
        worker = jobqueue_cmd("worker", url=db_url, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: client.get(job_id).state == "dead")
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=20)
        events = [json.loads(line) for line in err.splitlines() if line.strip()]
        dead = [e for e in events if e["event"] == "job_dead"]
        assert len(dead) == 1
        assert (dead[0]["job_id"], dead[0]["queue"], dead[0]["kind"], dead[0]["attempt"]) == \
            (job_id, "default", "fail", 1)
        assert {"timestamp", "level", "worker"} <= dead[0].keys()
        assert any(e["event"] == "worker_stopped" for e in events)

    def test_console_format_is_readable(self, db_url):
        out = run_cli("--log-format", "console", "migrate", url=db_url)
        assert out.returncode == 0
        worker = jobqueue_cmd("worker", url=db_url, stderr=subprocess.PIPE, text=True,
                              env={"LOG_FORMAT": "console"})
        wait_until(lambda: run_cli("status", "--json", url=db_url).stdout.count('"pid"') == 1)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=20)
        line = next(x for x in err.splitlines() if "worker_started" in x)
        assert not line.startswith("{") and "queue=default" in line


def test_without_database_url_an_embedded_postgres_starts_and_is_shared(tmp_path):
    """The README's first command on a fresh machine: no DATABASE_URL, nothing installed."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"JOBQUEUE_HOME": str(tmp_path / "home"), "LOG_FORMAT": "json"}
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "jobqueue", *a], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120)
    try:
        first = run("enqueue", "-k", "noop")
        assert first.returncode == 0, first.stderr
        status = json.loads(run("status", "--json").stdout)  # a second process, same server
        assert status["queues"][0]["waiting"] == 1
        assert (tmp_path / "home" / "pgdata" / "PG_VERSION").exists()
    finally:
        embedded.stop(tmp_path / "home" / "pgdata")


def test_demo_runs_a_batch_through_the_simulator(db_url):
    out = run_cli("--log-level", "WARNING", "demo", "--jobs", "8", url=db_url)
    assert out.returncode == 0, out.stderr
    assert "SIMULATED" in out.stdout and "done: 8 succeeded, 0 dead" in out.stdout
    assert "dashboard: http://127.0.0.1:" in out.stdout and "admin token jq_" in out.stdout


def test_bench_measures_enqueue_drain_and_pickup_then_cleans_up(db_url, client):
    out = run_cli("bench", "--jobs", "500", "--probes", "20", "--rate", "200", "--json",
                  url=db_url)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout[out.stdout.index("{"):])
    assert report["enqueue_jobs_per_s"] > 0 and report["drain_jobs_per_s"] > 0
    assert 0 < report["pickup_p50_ms"] <= report["pickup_p99_ms"] <= report["pickup_max_ms"]
    assert client.status() == []  # the scratch queue is gone


def test_tokens_create_list_revoke(db_url):
    created = run_cli("tokens", "create", "--owner", "alice", "--scopes", "read,admin",
                      "--rate-limit", "60", url=db_url)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("jq_") and "not shown again" in created.stderr
    listed = json.loads(run_cli("tokens", "list", "--json", url=db_url).stdout)
    assert [(t["owner"], t["scopes"], t["rate_limit"], t["prefix"]) for t in listed] == [
        ("alice", ["read", "admin"], 60, token[:10])]
    assert token not in json.dumps(listed)  # only the hash is stored
    assert "revoked" in run_cli("tokens", "revoke", str(listed[0]["id"]), url=db_url).stdout
    again = run_cli("tokens", "revoke", str(listed[0]["id"]), url=db_url)
    assert again.returncode == 2 and "no such active token" in again.stderr
    bad = run_cli("tokens", "create", "--owner", "x", "--scopes", "root", url=db_url)
    assert bad.returncode == 2 and "scopes: choose from read, write, admin" in bad.stderr


class TestWorkerWithoutADatabase:
    """Before, a worker that could not reach the database retried for ten minutes, logging
    925 warnings, and ignored SIGTERM meanwhile."""

    def _nowhere(self) -> str:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return f"postgresql://postgres@127.0.0.1:{port}/nothing"

    def test_it_gives_up_after_its_connect_timeout_with_one_line(self):
        started = time.monotonic()
        out = run_cli("worker", "--connect-timeout", "1", url=self._nowhere())
        assert out.returncode == 1
        assert time.monotonic() - started < 20
        errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
        assert errors and errors[0].startswith("Error: cannot reach the database")
        assert "Traceback" not in out.stderr
        assert out.stderr.count("db_unavailable") <= 2

    def test_the_first_sigterm_while_waiting_is_a_clean_stop(self):
        proc = jobqueue_cmd("worker", "--connect-timeout", "60", url=self._nowhere(),
                            stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # well into the wait for the database (nothing to await: wall time)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


class TestReadableOutput:
    def test_jobs_show_reads_in_order_with_tracebacks_as_lines(self, db_url, client):
        job_id = int(run_cli("enqueue", "-k", "fail", "--max-attempts", "1", url=db_url).stdout)
        worker = jobqueue_cmd("worker", url=db_url, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: client.get(job_id).state == "dead")
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(20) == 0
        out = run_cli("jobs", "show", str(job_id), url=db_url).stdout
        lines = out.splitlines()
        assert lines[0] == f"job {job_id}: fail on default, dead, attempt 1 of 1"
        assert any(line.startswith("  error 1: RuntimeError: ") for line in lines)
        assert any(line.startswith("      Traceback (most recent call last)") for line in lines)
        assert "\\n" not in out  # tracebacks as lines, not escaped strings

    def test_jobs_list_and_dead_list_are_aligned_tables_with_headers(self, db_url, client):
        for i in range(3):
            run_cli("enqueue", "-k", "echo", "--payload", "{}", "-q", f"queue{i}" * (i + 1),
                    url=db_url)
        out = run_cli("jobs", "list", url=db_url).stdout.splitlines()
        assert out[0].split()[:4] == ["ID", "QUEUE", "KIND", "STATE"]
        assert len(out) == 4
        ids = [line.split()[0] for line in out[1:]]
        # numbers right-aligned: every id ends in the same column
        assert len({line.index(i) + len(i) for line, i in zip(out[1:], ids, strict=True)}) == 1
        filtered = run_cli("jobs", "list", "--queue", "queue1queue1", "--json", url=db_url)
        assert [r["queue"] for r in json.loads(filtered.stdout)] == ["queue1queue1"]
        assert run_cli("dead", "list", url=db_url).stdout.strip() == "no dead jobs"

    def test_export_refuses_an_unknown_extension(self, db_url, tmp_path):
        out = run_cli("batch", "export", "1", "-o", str(tmp_path / "x.xlsx"), url=db_url)
        assert out.returncode == 2 and "writes .csv or .jsonl" in out.stderr
        assert not (tmp_path / "x.xlsx").exists()

    def test_an_interrupted_batch_wait_exits_130(self, db_url, client):
        from jobqueue import JobSpec

        batch_id, _ = client.submit_batch([JobSpec("echo", {}, queue="nobody")], queue="nobody")
        proc = jobqueue_cmd("batch", "wait", str(batch_id), url=db_url,
                            stderr=subprocess.PIPE, text=True)
        first = proc.stderr.read(len(f"batch {batch_id}"))  # the progress bar is up: waiting
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        err = first + err
        assert proc.returncode == 130, err
        assert "stopped waiting" in err and "Traceback" not in err
