"""The repository's Procfile run exactly as the README says (`honcho start` after copying the
sample config): web and the default worker stay up and work until stopped, the `release` line
does not take them down, and Ctrl-C or SIGTERM stops every process cleanly."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from tests.support.helpers import ROOT, wait_until


def readme_command() -> str:
    """The one command of the README's "Locally" block."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"\*\*Locally:\*\*[^\n]*\n```sh\n(.+?)\n```", readme, re.S)
    assert block, "README: no **Locally:** block"
    (command,) = block.group(1).splitlines()
    return command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def honcho_pid(shell_pid: int) -> int:
    """honcho itself: the shell's child (or the shell, if it exec'd honcho)."""
    def find():
        cmd = Path(f"/proc/{shell_pid}/cmdline").read_bytes()
        if b"honcho" in cmd and b"&&" not in cmd:
            return shell_pid
        return next((c for c in children(shell_pid)
                     if b"honcho" in Path(f"/proc/{c}/cmdline").read_bytes()), None)
    return wait_until(find, timeout=20, message="honcho started")


def test_readme_command_is_honcho_start():
    assert readme_command() == ("cp jobqueue.toml.example jobqueue.toml && JOBQUEUE_DEV=1 "
                                "honcho start")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_honcho_start_runs_web_and_worker_until_stopped(db_url, client, tmp_path, stop):
    """In a copy of the project's Procfile and sample config: /healthz answers, a job is
    processed, nothing has exited meanwhile; then Ctrl-C (SIGINT to the foreground group, as
    a terminal sends it) or SIGTERM to honcho: each process stops with rc=0, none is killed."""
    for name in ("Procfile", "jobqueue.toml.example"):
        shutil.copy(ROOT / name, tmp_path / name)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HONCHO", "JOBQUEUE_"))}
    env |= {"DATABASE_URL": db_url, "PORT": str(port), "LOG_FORMAT": "json",
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    proc = subprocess.Popen(["sh", "-c", readme_command()], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        base = f"http://127.0.0.1:{port}"

        def up():
            try:
                return requests.get(base + "/healthz", timeout=5).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # slow first answer
                return False

        wait_until(up, timeout=60, message="web up under honcho")
        job = client.enqueue("echo", {"hi": 1}, queue="default")
        wait_until(lambda: client.get(job).state == "succeeded", timeout=60,
                   message="a job processed by worker_default")
        assert client.get(job).result == {"hi": 1}
        running = "".join(lines)
        assert "stopped (rc=" not in running, running[-3000:]
        assert "migrations done; staying up" in running
        assert proc.poll() is None
        if stop == signal.SIGINT:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(honcho_pid(proc.pid), signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        reader.join(10)
        proc.stdout.close()
    out = "".join(lines)
    for name in ("web.1", "release.1", "worker_default.1"):
        assert f"{name} stopped (rc=0)" in out, out[-4000:]
    assert "SIGKILL" not in out and "worker_stopped" in out, out[-4000:]
    assert "release.1: stopped by SIGTERM" in out  # honcho passes a stop on as SIGTERM
    # honcho's own code (130 or 143); the shell of the README's command dies of a Ctrl-C
    # with the rest of the terminal's foreground group.
    assert proc.returncode in ((130, -signal.SIGINT) if stop == signal.SIGINT else (143,))


def test_migrate_holds_only_as_honchos_release_process(db_url):
    """Under honcho every process has HONCHO_PROCESS_NAME ("web.1"); only the release line
    stays up after migrating. A `jobqueue migrate && gunicorn ...` line must go on."""
    env = os.environ | {"DATABASE_URL": db_url, "HONCHO_PROCESS_NAME": "web.1"}
    done = subprocess.run([sys.executable, "-m", "jobqueue", "migrate"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "schema is up to date" in done.stdout
