"""The Client routes by what the caller passes, else by jobqueue.toml's [tasks.NAME] table."""

from __future__ import annotations

import pytest

from jobqueue.errors import ConfigError
from jobqueue.jobs import JobSpec

TABLE = """
[tasks.send_email]
queue = "emails"
max_attempts = 3
priority = "low"
timeout = 60
"""


@pytest.fixture
def routed(tmp_path, monkeypatch):
    path = tmp_path / "jobqueue.toml"
    path.write_text(TABLE)
    monkeypatch.setenv("JOBQUEUE_CONFIG", str(path))
    return path


def row(sql, job_id):
    return sql("SELECT queue, max_attempts, priority, timeout_seconds FROM jobqueue.jobs "
               "WHERE id = %s", (job_id,))[0]


class TestClientRouting:
    def test_every_enqueue_path_uses_the_table(self, client, sql, routed):
        """enqueue, enqueue_many, enqueue_payloads and enqueue_spec all route by the table."""
        ids = [client.enqueue("send_email", {"to": "a"}),
               *client.enqueue_many([JobSpec("send_email", {"n": 1}), {"kind": "send_email"}]),
               *client.enqueue_payloads("send_email", [{"n": 2}]),
               client.enqueue_spec(JobSpec("send_email", {}))[0]]
        for job_id in ids:
            assert row(sql, job_id) == {"queue": "emails", "max_attempts": 3, "priority": 10,
                                        "timeout_seconds": 60.0}

    def test_explicit_arguments_win(self, client, sql, routed):
        """queue= and options given by the caller beat the table."""
        job_id = client.enqueue("send_email", {}, queue="urgent", max_attempts=1,
                                priority="high", timeout=5)
        assert row(sql, job_id) == {"queue": "urgent", "max_attempts": 1, "priority": -10,
                                    "timeout_seconds": 5.0}

    def test_unrouted_kinds_go_to_default(self, client, sql, routed):
        """A kind with no table gets the built-in defaults."""
        assert row(sql, client.enqueue("other")) == {
            "queue": "default", "max_attempts": 5, "priority": 0, "timeout_seconds": None}

    def test_a_bad_table_refuses_the_enqueue(self, client, routed):
        """A wrong field is a ConfigError naming file, table and field; nothing is enqueued."""
        routed.write_text('[tasks.send_email]\nqueue = ""\n')
        with pytest.raises(ConfigError, match=r"jobqueue\.toml: tasks\.send_email\.queue: "):
            client.enqueue("send_email")
        assert client.status() == []
