"""`jobqueue worker --processes N` as an operator runs it: global options reach the children,
one Ctrl-C is one warm stop, a bad --import or a child that keeps crashing stops it at once
with the reason, children do not outlive it; and a worker stopped in its first moments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest
from psycopg.rows import dict_row

from jobqueue import JobSpec, signals
from jobqueue.client import Client
from tests.support.helpers import jobqueue_cmd, run_cli, wait_until
from tests.support.worker_tasks import EFFECTS_DDL

TASKS = ("--import", "tests.support.worker_tasks")


@pytest.fixture
def conn(db_url):
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        c.execute(EFFECTS_DDL)
        yield c


def scalar(conn, sql: str, params=None):
    return next(iter(conn.execute(sql, params).fetchone().values()))


def enqueue(url: str, n: int, seconds: float = 0.0) -> list[int]:
    with Client(url) as jq:
        return jq.enqueue_many([JobSpec("record", {"seconds": seconds}, queue="q")
                                for _ in range(n)])


def stop(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def test_global_options_reach_every_child(db_url, conn):
    """`jobqueue --log-level DEBUG --log-format console worker -p 2`: both children log at
    DEBUG, in console format (although LOG_FORMAT=json is in their environment)."""
    proc = jobqueue_cmd("--log-level", "DEBUG", "--log-format", "console", "worker", "-p", "2",
                        "--queue", "q", "--concurrency", "2", *TASKS, url=db_url,
                        env={"LOG_FORMAT": "json"}, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: scalar(conn, "SELECT count(*) FROM jobqueue.workers") == 2,
                   timeout=30, message="two workers")
        ids = enqueue(db_url, 40, seconds=0.05)
        wait_until(lambda: scalar(conn, "SELECT count(*) FROM jobqueue.finished") == len(ids),
                   timeout=30, message="jobs done")
        pids = {r["pid"] for r in conn.execute("SELECT DISTINCT pid FROM test_effects")}
        code, err = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    lines = err.splitlines()
    assert not [line for line in lines if line.startswith("{")], "a JSON line: format lost"
    started = [line for line in lines if "worker_started" in line]
    assert len(started) == 2 and all("[info" in line for line in started), started
    debug = [line for line in lines if "[debug" in line and "job_succeeded" in line]
    assert len(debug) == len(ids), "the children did not log at DEBUG"
    assert len(pids) == 2, "the jobs were not shared: the test proves less than it says"


def test_one_ctrl_c_on_the_terminal_is_one_warm_stop(db_url, conn):
    """SIGINT to the whole process group (what a terminal's Ctrl-C does): every child gets one
    warm stop, so the running jobs finish (none handed back, none run twice) and the exit code
    is 0. Before, each child got the terminal's SIGINT and the supervisor's: a hard stop."""
    ids = enqueue(db_url, 4, seconds=3)
    proc = jobqueue_cmd("--log-level", "WARNING", "worker", "-p", "2", "--queue", "q",
                        "--concurrency", "2", "--grace-seconds", "20", *TASKS, url=db_url,
                        start_new_session=True, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: scalar(conn, "SELECT count(*) FROM test_effects") == len(ids),
                   timeout=30, message="all jobs running")
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    states = conn.execute("SELECT state, count(*) AS n FROM jobqueue.finished "
                          "GROUP BY state").fetchall()
    assert states == [{"state": "succeeded", "n": len(ids)}], err
    assert scalar(conn, "SELECT count(*) FROM test_effects") == len(ids), "a job ran twice"
    assert scalar(conn, "SELECT count(*) FROM jobqueue.jobs") == 0


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_task_module_that_cannot_be_imported_is_bad_usage(db_url, processes):
    """`--import no.such.module`: exit 2 at once with one line, with -p 1 as with -p 2 (whose
    children used to fail and be restarted forever)."""
    started = time.monotonic()
    result = run_cli("worker", "-p", processes, "--queue", "q", "--import", "no.such.module",
                     url=db_url)
    assert result.returncode == 2
    assert result.stderr == "Error: --import no.such.module: No module named 'no'\n"
    assert time.monotonic() - started < 15


def test_a_child_that_keeps_crashing_at_start_stops_the_supervisor(db_url, tmp_path):
    """Children that fail within seconds of starting, again and again, are given up on after
    a bounded number of tries: exit 1, with the child's own last error lines in the log."""
    marker = tmp_path / "imported"
    started = time.monotonic()
    proc = jobqueue_cmd("worker", "-p", "2", "--queue", "q",
                        "--import", "tests.support.crash_in_children", url=db_url,
                        env={"CRASH_MARKER": str(marker)}, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert time.monotonic() - started < 60
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (gave_up,) = [e for e in events if e["event"] == "worker_process_keeps_failing"]
    assert gave_up["code"] == 1 and gave_up["tries"] == 5
    assert any("simulated crash at start" in line for line in gave_up["stderr_tail"])
    died = [e for e in events if e["event"] == "worker_process_died"]
    delays = [e["restart_in"] for e in died]
    assert delays and max(delays) > min(delays), "restarts without backoff"


def test_a_child_refused_as_bad_usage_is_not_restarted(db_url, tmp_path):
    """A child that exits 2 (bad usage or configuration, e.g. a task that disagrees with the
    routing table) would fail the same way again: the supervisor stops at once with exit 2."""
    proc = jobqueue_cmd("worker", "-p", "2", "--queue", "q",
                        "--import", "tests.support.crash_in_children", url=db_url,
                        env={"CRASH_MARKER": str(tmp_path / "imported"), "CRASH_AS_USAGE": "1"},
                        stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert not [e for e in events if e["event"] == "worker_process_died"]
    (refused,) = [e for e in events if e["event"] == "worker_process_refused"]
    assert any("simulated crash at start" in line for line in refused["stderr_tail"])


def test_children_stop_when_the_supervisor_is_killed(db_url, conn):
    """kill -9 of the supervisor: its children get a warm stop and unregister, instead of
    running on as orphans nobody supervises."""
    proc = jobqueue_cmd("--log-level", "WARNING", "worker", "-p", "2", "--queue", "q", *TASKS,
                        url=db_url, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: scalar(conn, "SELECT count(*) FROM jobqueue.workers") == 2,
                   timeout=30, message="two workers")
        proc.kill()
        proc.wait(10)
        wait_until(lambda: scalar(conn, "SELECT count(*) FROM jobqueue.workers") == 0,
                   timeout=30, message="the children to stop")
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize(("delay", "launcher_blocks"), [
    (0.05, True), (0.2, True), (0.5, True), (0.2, False), (0.5, False)])
def test_sigterm_in_the_first_moments_is_a_clean_stop(db_url, delay, launcher_blocks,
                                                      processes):
    """SIGTERM before the worker's loop is up (a deploy stopping what it just started): the
    stop is kept and obeyed once the worker can, and the exit code is 0, not death by signal
    (and, with -p 2, not 1).

    In its first ~15 ms of CPU (more on a loaded machine) the interpreter has not run a line
    of ours, and SIGTERM's default action applies; only the process that starts it can close
    that window, by blocking the stop signals across exec as the supervisor does for its
    children (launcher_blocks). Unblocked, 0.2 s is well after jobqueue/__main__.py's
    handler."""
    proc = subprocess.Popen([sys.executable, "-m", "jobqueue", "--log-level", "WARNING",
                             "worker", "-p", processes, "--queue", "q"],
                            env=os.environ | {"DATABASE_URL": db_url, "LOG_FORMAT": "json"},
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=signals.block_in_child if launcher_blocks else None)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_a_child_an_operator_stopped_is_not_restarted(db_url, conn):
    """The dashboard's Stop (workers.control = 'stop', read by the heartbeat) ends one child
    warm; the supervisor does not start it again, and exits 0 once the last one is stopped."""
    proc = jobqueue_cmd("worker", "-p", "2", "--queue", "q", "--lease-seconds", "1.5", *TASKS,
                        url=db_url, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: scalar(conn, "SELECT count(*) FROM jobqueue.workers") == 2,
                   timeout=30, message="two workers")
        first = scalar(conn, "SELECT min(pid) FROM jobqueue.workers")
        conn.execute("UPDATE jobqueue.workers SET control = 'stop' WHERE pid = %s", (first,))
        wait_until(lambda: scalar(conn, "SELECT count(*) FROM jobqueue.workers") == 1,
                   timeout=30, message="the stopped child gone")
        time.sleep(1.5)  # longer than the first restart's backoff (0.5 s): nothing comes back
        assert scalar(conn, "SELECT count(*) FROM jobqueue.workers") == 1
        assert proc.poll() is None
        conn.execute("UPDATE jobqueue.workers SET control = 'stop'")
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "worker_process_died" not in err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
