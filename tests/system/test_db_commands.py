"""`jobqueue db status|stop` and `jobqueue status`'s first line, as real processes: which
database the commands use, and the embedded server found from anywhere in the project."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from jobqueue.db import embedded


def run_in(cwd, *args, env=None):
    base = {k: v for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "JOBQUEUE_HOME", "JOBQUEUE_CONFIG")}
    return subprocess.run([sys.executable, "-m", "jobqueue", *args], cwd=cwd,
                          env=base | {"LOG_FORMAT": "json"} | (env or {}),
                          capture_output=True, text=True, timeout=120)


def test_the_embedded_server_is_found_from_any_subdirectory_and_stopped(tmp_path):
    """No DATABASE_URL, no JOBQUEUE_HOME: `status` from a sub-directory starts the server under
    <project>/.jobqueue and says so; `db status` from the root finds the same running server
    (pid, socket or port, schema up to date); `db stop` stops it, and a second stop has nothing
    to do."""
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "scripts" / "deep").mkdir(parents=True)
    pgdata = project / ".jobqueue" / "pgdata"
    try:
        first = run_in(project / "scripts" / "deep", "status")
        assert first.returncode == 0, first.stderr
        assert first.stdout.splitlines()[0] == (
            f"database: embedded Postgres in {pgdata} (DATABASE_URL is not set)")
        assert (pgdata / "PG_VERSION").exists()
        assert not (project / "scripts" / "deep" / ".jobqueue").exists()

        shown = run_in(project, "db", "status")
        assert shown.returncode == 0, shown.stderr
        report = json.loads(run_in(project, "db", "status", "--json").stdout)
        assert report["kind"] == "embedded" and report["pgdata"] == str(pgdata)
        assert report["running"] and report["pid"] == embedded.state(pgdata).pid
        assert report["pending"] == [] and report["applied"][-1] == report["available"]
        lines = shown.stdout.splitlines()
        assert lines[1].startswith(f"server:   running, pid {report['pid']}, ")
        assert "(up to date)" in lines[2]

        stopped = run_in(project / "scripts", "db", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == (
            f"stopped the embedded Postgres in {pgdata} (pid {report['pid']})")
        assert not embedded.state(pgdata).running
        again = run_in(project, "db", "stop")
        assert again.returncode == 0 and "is not running; nothing to stop" in again.stdout
        after = run_in(project, "db", "status")
        assert "server:   not running (initialised;" in after.stdout
    finally:
        embedded.stop(pgdata)


class TestWithDatabaseUrl:
    def test_status_hides_the_password_and_stop_refuses(self, tmp_path, db_url):
        """DATABASE_URL's host and database are shown, never its password; `db stop` has
        nothing of ours to stop: exit 2 with a clear message."""
        from psycopg.conninfo import make_conninfo

        url = make_conninfo(db_url, password="s3cret-pw")
        env = {"DATABASE_URL": url, "PGPASSWORD": ""}
        shown = run_in(tmp_path, "db", "status", env=env)
        assert "s3cret-pw" not in shown.stdout + shown.stderr
        assert shown.stdout.startswith("database: postgresql://")
        assert ":***@" in shown.stdout.splitlines()[0]
        stop = run_in(tmp_path, "db", "stop", env=env)
        assert stop.returncode == 2
        assert "DATABASE_URL is set" in stop.stderr and "nothing to stop" in stop.stderr
        assert "s3cret-pw" not in stop.stderr

    def test_status_reports_the_schema(self, tmp_path, db_url):
        """A reachable database: server version and migrations applied vs available."""
        report = json.loads(run_in(tmp_path, "db", "status", "--json",
                                   env={"DATABASE_URL": db_url}).stdout)
        assert report["kind"] == "url" and report["reachable"] and report["pending"] == []

    def test_an_unreachable_database_exits_1(self, tmp_path):
        """Nothing listens there: the status says so and exits 1."""
        out = run_in(tmp_path, "db", "status",
                     env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
        assert out.returncode == 1 and "server:   unreachable" in out.stdout
