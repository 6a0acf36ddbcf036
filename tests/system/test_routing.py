"""Routing across processes, as the README shows it: one process enqueues without importing the
task module, another runs `jobqueue worker -q emails --import myapp.tasks`, and the job reaches
it because jobqueue.toml, not an import, says where `send_email` goes."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys

from tests.support.helpers import ROOT, wait_until


def readme_files() -> dict[str, str]:
    """The README's fenced blocks, by the name in their first line (`# myapp/tasks.py`,
    `# jobqueue.toml`, `# enqueue.py: ...`), plus the shell block that runs them."""
    blocks = re.findall(r"```(\w+)\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = {}
    for _, body in blocks:
        first = body.splitlines()[0]
        match = re.match(r"# ([\w/]+\.(?:py|toml))\b", first)
        if match and match[1] not in found:
            found[match[1]] = body
        elif "python enqueue.py" in body:
            found["commands"] = body
    return found


def command(line: str) -> list[str]:
    """A README shell line as argv: its comment dropped, `python`/`jobqueue` as this venv's."""
    words = shlex.split(line, comments=True)
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    assert words[0] == "jobqueue"
    return [sys.executable, "-m", "jobqueue", *words[1:]]


def project(tmp_path, files: dict[str, str]):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def env_for(db_url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JOBQUEUE_CONFIG"}
    return env | {"DATABASE_URL": db_url, "LOG_FORMAT": "json"}


class TestReadmeRouting:
    def test_the_readme_example_runs_in_two_processes(self, tmp_path, db_url, client):
        """enqueue.py (no import of myapp.tasks) sends send_email to 'emails', where
        `jobqueue worker -q emails --import myapp.tasks` runs it."""
        files = readme_files()
        assert {"myapp/tasks.py", "jobqueue.toml", "enqueue.py", "commands"} <= set(files)
        assert "myapp" not in files["enqueue.py"].replace("does not import myapp.tasks", "")
        commands = [line for line in files.pop("commands").splitlines() if line.strip()]
        enqueue_line, worker_line = commands
        cwd = project(tmp_path, files)

        enqueued = subprocess.run(command(enqueue_line), cwd=cwd, env=env_for(db_url),
                                  capture_output=True, text=True, timeout=60)
        assert enqueued.returncode == 0, enqueued.stderr
        job_id = int(enqueued.stdout.strip())
        job = client.get(job_id)
        assert (job.queue, job.max_attempts, job.state) == ("emails", 5, "waiting")

        worker = subprocess.Popen(command(worker_line), cwd=cwd, env=env_for(db_url),
                                  stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: client.get(job_id).state == "succeeded", timeout=30)
        finally:
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err
        assert client.get(job_id).result == {"sent": True}

    def test_a_worker_whose_decorator_disagrees_with_the_table_refuses_to_start(
            self, tmp_path, db_url):
        """@task(queue=...) naming another queue than jobqueue.toml: exit 2, one clear line."""
        files = readme_files()
        files["myapp/tasks.py"] = files["myapp/tasks.py"].replace(
            '@task("send_email")', '@task("send_email", queue="mail")')
        files.pop("commands")
        cwd = project(tmp_path, files)
        out = subprocess.run(command("jobqueue worker -q emails --import myapp.tasks"), cwd=cwd,
                             env=env_for(db_url), capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr
        assert ('Error: jobqueue.toml: tasks.send_email.queue: is "emails" but '
                "@task('send_email', queue='mail')") in out.stderr
