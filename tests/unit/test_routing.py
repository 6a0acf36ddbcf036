"""The routing table ([tasks.NAME] in jobqueue.toml) and what @task may claim about it."""

from __future__ import annotations

import os

import pytest

from jobqueue import config, routing
from jobqueue.errors import ConfigError
from jobqueue.jobs import JobSpec
from jobqueue.tasks import Registry


def write(tmp_path, text: str):
    path = tmp_path / "jobqueue.toml"
    path.write_text(text)
    return path


class TestParse:
    def test_a_table_gives_queue_and_options(self):
        """Every field of [tasks.NAME] is read, priority names become numbers."""
        routes = routing.parse({"tasks": {"send_email": {
            "queue": "emails", "max_attempts": 3, "priority": "high", "timeout": 60}}})
        assert routes == {"send_email": routing.Route("emails", 3, -10, 60.0)}

    def test_no_tasks_table_is_an_empty_table(self):
        """A file with only platforms routes nothing."""
        assert routing.parse({"platforms": {}}) == {}

    @pytest.mark.parametrize(("table", "field", "says"), [
        ({"queue": ""}, "queue", "non-empty string"),
        ({"queue": 3}, "queue", "non-empty string"),
        ({"queue": "a\x00b"}, "queue", "non-empty string"),
        ({"max_attempts": 0}, "max_attempts", "positive integer"),
        ({"max_attempts": True}, "max_attempts", "positive integer"),
        ({"priority": "urgent"}, "priority", "high, normal, low"),
        ({"priority": 40000}, "priority", "-32768..32767"),
        ({"timeout": -1}, "timeout", "positive number"),
        ({"timeout": float("inf")}, "timeout", "positive number"),
        ({"qeue": "emails"}, "qeue", "unknown field (known: queue, max_attempts"),
    ])
    def test_a_bad_field_names_file_table_and_field(self, table, field, says):
        """The message starts `FILE: tasks.NAME.FIELD:` and says what is wrong."""
        with pytest.raises(ConfigError) as err:
            routing.parse({"tasks": {"send_email": table}}, "jobqueue.toml")
        assert str(err.value).startswith(f"jobqueue.toml: tasks.send_email.{field}: ")
        assert says in str(err.value)

    def test_a_task_that_is_not_a_table_is_refused(self):
        """`[tasks] send_email = "emails"` is a common slip: the message shows the form."""
        with pytest.raises(ConfigError, match=r"tasks\.send_email: must be a table"):
            routing.parse({"tasks": {"send_email": "emails"}}, "jobqueue.toml")

    def test_a_file_that_is_not_toml_is_named(self, tmp_path):
        """Broken TOML is a ConfigError naming the file."""
        path = write(tmp_path, "[tasks.send_email\nqueue = 1")
        with pytest.raises(ConfigError, match=r"jobqueue\.toml: not valid TOML"):
            routing.load(path)


class TestLoad:
    def test_the_default_file_may_be_missing(self, tmp_path, monkeypatch):
        """No jobqueue.toml: nothing is routed, everything goes to 'default'."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("JOBQUEUE_CONFIG", raising=False)
        assert routing.load() == {}

    def test_a_missing_jobqueue_config_is_an_error(self, tmp_path, monkeypatch):
        """A JOBQUEUE_CONFIG that points nowhere is not silently an empty table."""
        monkeypatch.setenv("JOBQUEUE_CONFIG", str(tmp_path / "nope.toml"))
        with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
            routing.load()

    def test_found_from_a_subdirectory_and_edits_are_seen(self, tmp_path, monkeypatch):
        """The project's jobqueue.toml is found from below the root, and re-read once changed."""
        monkeypatch.delenv("JOBQUEUE_CONFIG", raising=False)
        path = write(tmp_path, '[tasks.a]\nqueue = "one"\n')
        (tmp_path / "scripts" / "deep").mkdir(parents=True)
        monkeypatch.chdir(tmp_path / "scripts" / "deep")
        assert config.project_root() == tmp_path.resolve()
        assert routing.load()["a"].queue == "one"
        path.write_text('[tasks.a]\nqueue = "two"\n')
        os.utime(path, ns=(1, 10**18))  # a new mtime even within the clock's resolution
        assert routing.load()["a"].queue == "two"


class TestApply:
    routes = {"send_email": routing.Route("emails", max_attempts=3, priority=10, timeout=5.0)}

    def test_the_table_fills_what_the_caller_left_out(self):
        """No argument: the table's queue and options."""
        spec = routing.apply(JobSpec("send_email", {}), self.routes)
        assert (spec.queue, spec.max_attempts, spec.priority, spec.timeout) == (
            "emails", 3, 10, 5.0)

    def test_an_explicit_argument_wins(self):
        """The caller's queue and options win over the table."""
        spec = routing.apply(JobSpec("send_email", {}, queue="urgent", max_attempts=1,
                                     priority="high", timeout=1), self.routes)
        assert (spec.queue, spec.max_attempts, spec.priority, spec.timeout) == (
            "urgent", 1, "high", 1)

    def test_an_unrouted_kind_is_left_alone(self):
        """No table: the spec is unchanged, validation applies the built-in defaults."""
        spec = JobSpec("other", {})
        assert routing.apply(spec, self.routes) is spec


class TestDecorator:
    routes = {"send_email": routing.Route("emails", max_attempts=5)}

    def test_a_decorator_that_agrees_with_the_table_is_fine(self):
        """queue= and max_attempts= matching the table register."""
        routing.check_task("send_email", queue="emails", max_attempts=5, routes=self.routes)

    def test_a_decorator_naming_another_queue_is_refused(self):
        """The message names the file, table, field and both values."""
        with pytest.raises(ConfigError) as err:
            routing.check_task("send_email", queue="mail", routes=self.routes)
        assert "tasks.send_email.queue: is \"emails\"" in str(err.value)
        assert "queue='mail'" in str(err.value)

    def test_a_decorator_queue_without_a_table_is_refused(self):
        """Routing only by decorator would differ between processes: say what to add."""
        with pytest.raises(ConfigError) as err:
            routing.check_task("report", queue="reports", routes=self.routes)
        assert '[tasks.report] queue = "reports"' in str(err.value)

    def test_a_decorator_timeout_needs_no_table(self):
        """timeout= is the worker's own limit for the task; no table needed."""
        routing.check_task("report", timeout=30, routes={})

    def test_registering_checks_the_project_table(self, tmp_path, monkeypatch):
        """Registry.register (what @task calls) reads jobqueue.toml and refuses a mismatch."""
        monkeypatch.setenv("JOBQUEUE_CONFIG", str(write(tmp_path, '[tasks.a]\nqueue = "x"\n')))
        registry = Registry()
        registry.register("a", lambda p: p, queue="x")
        with pytest.raises(ConfigError, match=r"tasks\.b\.queue"):
            registry.register("b", lambda p: p, queue="y")

    def test_a_worker_learns_which_tasks_it_will_not_see(self):
        """unrouted_here lists the imported tasks whose jobs go to another queue."""
        assert routing.unrouted_here(["send_email", "other"], "default", self.routes) == [
            "task send_email is routed to queue 'emails', not 'default'"]
        assert routing.unrouted_here(["send_email"], "emails", self.routes) == []
        assert routing.unrouted_here(["send_email"], ["default", "emails"], self.routes) == []


def test_a_config_path_that_cannot_be_read_is_a_config_error(tmp_path):
    """A directory (or a file without permission) where jobqueue.toml should be: one line
    naming the path, not an OSError's traceback."""
    with pytest.raises(ConfigError, match=r"cannot be read"):
        config.load(lambda data, source: data, tmp_path)
