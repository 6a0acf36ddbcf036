"""`jobqueue demo` on a terminal: the progress bar's line never has a log line inside it (stdout
and stderr on one terminal), the dashboard stays up until Ctrl-C, and `--no-stay` exits."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time

import requests

from tests.support.helpers import ROOT, run_cli, wait_until


class Terminal:
    """A child `jobqueue` process with stdout and stderr on one pseudo-terminal; everything
    it writes is collected."""

    def __init__(self, *args: str, url: str, env: dict | None = None):
        leader, follower = pty.openpty()
        full_env = os.environ | {"DATABASE_URL": url, "COLUMNS": "100"} | (env or {})
        full_env.pop("LOG_FORMAT", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "jobqueue", *args], cwd=ROOT,
                                     env=full_env, stdin=follower, stdout=follower,
                                     stderr=follower, start_new_session=True)
        os.close(follower)
        self.leader = leader
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def finish(self, timeout: float = 90) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(10)
        os.close(self.leader)
        return code


def test_no_log_line_lands_inside_the_progress_line(db_url):
    """DEBUG logs every job while the bar runs; on the shared terminal each JSON log line
    starts a line of its own, and none shares a line with the bar."""
    term = Terminal("--log-level", "DEBUG", "--log-format", "json", "demo", "--jobs", "30",
                    "--port", "0", "--no-stay", url=db_url)
    assert term.finish() == 0, term.text
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", term.text)  # cursor hide/show codes
    lines = [part for line in text.replace("\r\n", "\n").split("\n")
             for part in line.split("\r")]
    logs = [x for x in lines if '"event"' in x]
    assert len(logs) > 30, text  # a line per job at least: there was something to interleave
    for line in logs:
        assert line.startswith("{") and line.rstrip().endswith("}"), repr(line)
        assert "running" not in line.split("{")[0] and "[" not in line.split("{")[0]
    bars = [x for x in lines if x.startswith("running")]
    assert bars and all('"event"' not in x for x in bars)
    assert re.search(r"running\s+\[#+\]\s+100%", text), text
    assert "done: 30 succeeded, 0 dead" in text


def test_on_a_terminal_the_dashboard_stays_until_ctrl_c(db_url):
    """No option: on a terminal the demo keeps its dashboard up; Ctrl-C ends it, exit 0."""
    term = Terminal("--log-level", "WARNING", "demo", "--jobs", "5", url=db_url)
    try:
        wait_until(lambda: "stays up until Ctrl-C" in term.text, timeout=60)
        url = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/)", term.text).group(1)
        time.sleep(0.5)  # still up a moment later (it used to exit a second after)
        assert requests.get(url + "healthz", timeout=5).status_code == 200
        os.killpg(term.proc.pid, signal.SIGINT)
        assert term.finish() == 0, term.text
    finally:
        if term.proc.poll() is None:
            os.killpg(term.proc.pid, signal.SIGKILL)
    assert "stopped" in term.text


def test_not_a_terminal_or_no_stay_exits_after_the_batch(db_url):
    """Output to a pipe (a script, CI): no stay unless --stay."""
    out = run_cli("--log-level", "WARNING", "demo", "--jobs", "3", url=db_url)
    assert out.returncode == 0, out.stderr
    assert "stays up" not in out.stdout
    assert "--stay / --no-stay" in run_cli("demo", "--help", url=db_url).stdout
