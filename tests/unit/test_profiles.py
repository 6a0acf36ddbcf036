"""Worker profiles ([workers.NAME] in jobqueue.toml): the parser, and how `jobqueue worker
--profile` merges a profile with the command line (without starting a worker)."""

from __future__ import annotations

import click
import pytest

from jobqueue import profiles
from jobqueue.cli.worker import worker
from jobqueue.errors import ConfigError
from jobqueue.profiles import Profile


def parse_one(table, source: str = "jobqueue.toml") -> Profile:
    return profiles.parse({"workers": {"all": table}}, source)["all"]


class TestParse:
    def test_a_full_table(self):
        """Lists of NAME[:N], processes, imports and worker options are all read."""
        p = parse_one({"queues": ["emails:20", "reports"], "platforms": ["openai:50", "gemini"],
                       "processes": 2, "import": ["myapp.tasks", "myapp.more"],
                       "prefetch": 100, "grace_seconds": 20, "listen": False,
                       "until_idle": True})
        assert p == Profile("all", "jobqueue.toml",
                            queues=(("emails", 20), ("reports", None)),
                            platforms=(("openai", 50), ("gemini", None)), processes=2,
                            imports=("myapp.tasks", "myapp.more"),
                            options={"prefetch": 100, "grace_seconds": 20, "listen": False,
                                     "until_idle": True})
        assert Profile.specs(p.queues) == ("emails:20", "reports")

    def test_queues_as_a_table_and_import_as_a_string(self):
        p = parse_one({"queues": {"emails": 20, "reports": 5}, "import": "myapp.tasks"})
        assert p.queues == (("emails", 20), ("reports", 5))
        assert p.imports == ("myapp.tasks",)

    def test_every_field_is_optional_and_no_workers_table_is_no_profile(self):
        assert parse_one({}) == Profile("all", "jobqueue.toml")
        assert profiles.parse({"platforms": {}}) == {}

    @pytest.mark.parametrize(("table", "field", "says"), [
        ({"queues": ["emails:20", "reports:x"]}, "queues[1]", "NAME or NAME:CONCURRENCY"),
        ({"queues": ["emails:0"]}, "queues[0]", "at least 1"),
        ({"queues": [":3"]}, "queues[0]", "NAME or NAME:CONCURRENCY"),
        ({"queues": [3]}, "queues[0]", "must be a string"),
        ({"queues": "emails"}, "queues", "must be a list"),
        ({"queues": ["a", "b", "a:2"]}, "queues", "a given twice"),
        ({"queues": {"emails": 0}}, "queues.emails", "at least 1"),
        ({"queues": {"emails": True}}, "queues.emails", "at least 1"),
        ({"queues": {"a:b": 1}}, "queues", "not a queue name"),
        ({"platforms": ["openai:-1"]}, "platforms[0]", "NAME or NAME:CONCURRENCY"),
        ({"processes": 0}, "processes", "at least 1"),
        ({"processes": "2"}, "processes", "at least 1"),
        ({"import": 3}, "import", "module name"),
        ({"import": ["ok", ""]}, "import[1]", "module name"),
        ({"prefetch": 1.5}, "prefetch", "whole number"),
        ({"prefetch": True}, "prefetch", "whole number"),
        ({"grace_seconds": "20"}, "grace_seconds", "must be a number"),
        ({"lease_seconds": float("nan")}, "lease_seconds", "must be a number from 0"),
        ({"lease_seconds": float("inf")}, "lease_seconds", "must be a number from 0"),
        ({"poll_seconds": -1}, "poll_seconds", "must be a number from 0"),
        ({"platforms": ["openai:\u00b2"]}, "platforms[0]", "NAME or NAME:CONCURRENCY"),
        ({"listen": 1}, "listen", "true or false"),
        ({"queue": ["emails"]}, "queue", "unknown field (known: queues, platforms"),
        ({"claim-batch": 5}, "claim-batch", "claim_batch"),
    ])
    def test_a_bad_field_names_file_table_and_field(self, table, field, says):
        """The message starts `FILE: workers.NAME.FIELD:` and says what is wrong."""
        with pytest.raises(ConfigError) as err:
            parse_one(table)
        assert str(err.value).startswith(f"jobqueue.toml: workers.all.{field}: ")
        assert says in str(err.value)

    def test_a_profile_that_is_not_a_table_or_a_name_in_both_lists(self):
        with pytest.raises(ConfigError, match=r"^jobqueue\.toml: workers\.all: must be a table"):
            parse_one(["emails"])
        with pytest.raises(ConfigError, match=r"^jobqueue\.toml: workers: must be a table"):
            profiles.parse({"workers": 3}, "jobqueue.toml")
        with pytest.raises(ConfigError, match=r"workers\.all: openai is both in queues and"):
            parse_one({"queues": ["openai"], "platforms": ["openai:5"]})

    def test_get_names_the_file_and_the_profiles_it_has(self, tmp_path):
        path = tmp_path / "jobqueue.toml"
        path.write_text('[workers.all]\nqueues = ["a"]\n[workers.cron]\nqueues = ["b"]\n')
        assert profiles.get("cron", path).queues == (("b", None),)
        with pytest.raises(ConfigError, match=r"workers\.web: no such profile "
                                              r"\(defined: all, cron\)"):
            profiles.get("web", path)
        with pytest.raises(ConfigError, match="no such file"):
            profiles.get("all", tmp_path / "missing.toml")

    def test_the_options_are_the_worker_commands(self):
        """A profile may set every option of `jobqueue worker` but those it has fields for."""
        own = {"queues", "platforms", "processes", "imports", "profile"}
        options = {p.name for p in worker.params if isinstance(p, click.Option)}
        assert set(profiles.OPTIONS) == options - own


class TestMerge:
    """`worker --profile` with the command line: what the worker would be given."""

    @pytest.fixture
    def resolve(self, tmp_path, monkeypatch):
        path = tmp_path / "jobqueue.toml"
        path.write_text('[workers.all]\nqueues = ["emails:20", "reports:5"]\n'
                        'platforms = ["openai:50"]\nprocesses = 3\nimport = "myapp.tasks"\n'
                        'prefetch = 100\nuntil_idle = true\n'
                        '[workers.bad]\nclaim_batch = 0\n')
        monkeypatch.setenv("JOBQUEUE_CONFIG", str(path))
        monkeypatch.delenv("JOBQUEUE_WORKER_PREFETCH", raising=False)
        from jobqueue.cli.worker import _with_profile

        def resolve(*args: str, env: dict | None = None) -> dict:
            for name, value in (env or {}).items():
                monkeypatch.setenv(name, value)
            ctx = worker.make_context("worker", list(args), auto_envvar_prefix="JOBQUEUE_WORKER")
            return _with_profile(ctx, ctx.params["profile"])

        return resolve

    def test_the_profile_fills_what_the_command_line_leaves_out(self, resolve):
        p = resolve("--profile", "all")
        assert (p["queues"], p["platforms"], p["processes"], p["imports"], p["prefetch"],
                p["until_idle"]) == (("emails:20", "reports:5"), ("openai:50",), 3,
                                     ("myapp.tasks",), 100, True)

    def test_explicit_options_win_one_by_one(self, resolve):
        """--queue replaces the profile's queues (its platforms stay); -p and a
        JOBQUEUE_WORKER_* variable win too."""
        p = resolve("--profile", "all", "-q", "other", "-p", "1",
                    env={"JOBQUEUE_WORKER_PREFETCH": "7"})
        assert (p["queues"], p["platforms"], p["processes"], p["prefetch"]) == (
            ("other",), ("openai:50",), 1, 7)

    def test_an_out_of_range_option_names_file_table_and_field(self, resolve):
        with pytest.raises(click.ClickException, match=r"jobqueue\.toml: "
                                                       r"workers\.bad\.claim_batch: 0 is not"):
            resolve("--profile", "bad")
