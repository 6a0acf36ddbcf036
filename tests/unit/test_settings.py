"""Settings: one parser per kind of value, every default defined once, the README in step,
and no environment read anywhere else."""

from __future__ import annotations

import dataclasses
import re

import click
import pytest

from jobqueue import settings
from jobqueue.cli import cli
from jobqueue.cli.common import option_args
from jobqueue.cli.worker import worker
from tests.support.helpers import ROOT


class TestParsers:
    @pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on", " On "])
    def test_on(self, raw):
        """The truthy parser takes the usual spellings of on, in any case."""
        assert settings.parse_bool(raw) is True

    @pytest.mark.parametrize("raw", ["0", "false", "False", "no", "off"])
    def test_off(self, raw):
        """... and of off."""
        assert settings.parse_bool(raw) is False

    @pytest.mark.parametrize("raw", ["2", "y", "enabled", "ture", "-"])
    def test_garbage_is_refused_naming_the_variable(self, raw):
        """Anything else is an error that names the variable and its value, not "off"."""
        with pytest.raises(settings.SettingError) as caught:
            settings.JOBQUEUE_PGBOUNCER.get({"JOBQUEUE_PGBOUNCER": raw})
        assert f"JOBQUEUE_PGBOUNCER={raw!r}" in str(caught.value)
        assert "1/true/yes/on" in str(caught.value)

    def test_every_on_off_variable_uses_the_one_parser(self):
        """Booleans have one parser: no variable parses them its own way."""
        booleans = [v for v in settings.ENVIRONMENT.values() if isinstance(v.default, bool)]
        assert booleans and all(v.parse is settings.parse_bool for v in booleans)

    def test_unset_and_empty_mean_the_default(self):
        """An empty value is treated as unset (hosts often set a variable to "")."""
        assert settings.JOBQUEUE_POOL_MAX_SIZE.get({}) == 10
        assert settings.JOBQUEUE_POOL_MAX_SIZE.get({"JOBQUEUE_POOL_MAX_SIZE": ""}) == 10
        assert settings.JOBQUEUE_POOL_MAX_SIZE.get({"JOBQUEUE_POOL_MAX_SIZE": "25"}) == 25

    @pytest.mark.parametrize(("name", "raw"), [
        ("PORT", "http"), ("PORT", "0"), ("WEB_CONCURRENCY", "2.5"),
        ("LOG_FORMAT", "xml"), ("LOG_LEVEL", "loud"), ("JOBQUEUE_DOCUMENT_MAX_BYTES", "10MB")])
    def test_bad_values_name_the_variable(self, name, raw):
        with pytest.raises(settings.SettingError, match=f"{name}={raw!r}"):
            settings.check({name: raw})

    def test_values_are_normalised(self):
        assert settings.LOG_LEVEL.get({"LOG_LEVEL": "debug"}) == "DEBUG"
        assert settings.LOG_FORMAT.get({"LOG_FORMAT": "JSON"}) == "json"


class TestDefaults:
    def test_worker_cli_defaults_are_the_settings(self):
        """`jobqueue worker`'s option defaults come from WORKER_DEFAULTS (none typed twice)."""
        options = {p.name: p for p in worker.params if isinstance(p, click.Option)}
        for name, default in settings.WORKER_DEFAULTS.items():
            if name not in options or name == "queues":
                continue  # not a command-line option; --queue NAME[:N] builds `queues`
            if name in ("queue", "concurrency"):
                # None on the command line: a platform has its own; else the setting applies.
                assert options[name].default is None
                assert f"default: {default!r}" in options[name].help or \
                    f"default {default}" in options[name].help
            else:
                assert options[name].default == default, name

    def test_worker_config_defaults_are_the_settings(self):
        """WorkerConfig's defaults are WORKER_DEFAULTS, field for field."""
        from jobqueue.worker import WorkerConfig

        fields = {f.name: f.default for f in dataclasses.fields(WorkerConfig)}
        assert fields == dict(settings.WORKER_DEFAULTS)

    def test_the_version_is_defined_once(self):
        import jobqueue
        from web import create_app
        from web.openapi import document

        assert jobqueue.__version__ == settings.VERSION
        app = create_app({"DATABASE_URL": "postgresql://unused", "SECRET_KEY": "x"})
        assert document(app)["info"]["version"] == settings.VERSION
        assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()


class TestGlobalOptions:
    def test_every_global_option_becomes_an_argument(self):
        """What `worker --processes` hands its children covers every root option."""
        values = {p.name: f"v-{p.name}" for p in cli.params
                  if isinstance(p, click.Option) and p.expose_value}
        args = option_args(cli, values)
        for name, value in values.items():
            assert value in args, name
        assert args[:2] == ["--log-level", "v-log_level"]

    def test_a_forgotten_option_is_an_error(self):
        with pytest.raises(KeyError):
            option_args(cli, {"log_level": "INFO"})

    def test_worker_options_round_trip(self):
        """A child given option_args(worker, values) parses back to the same values."""
        ctx = worker.make_context("worker", ["--platform", "p", "-p", "3", "--import", "a",
                                             "--import", "b", "--poll-only"])
        values = ctx.params | {"processes": 1}
        again = worker.make_context("worker", option_args(worker, values))
        assert again.params == values


def _readme_table() -> dict[str, tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.fullmatch(r"\| `([A-Z0-9_]+)` \| (.*?) \| (.*) \|", line)
        if match:
            rows[match[1]] = (match[2], match[3])
    return rows


def test_readme_table_lists_every_variable_as_settings_defines_it():
    """The README's configuration table is settings.ENVIRONMENT: same names, defaults and
    meanings (regenerate it with `python -m jobqueue.settings`)."""
    expected = {v.name: (v.default_text, v.meaning) for v in settings.ENVIRONMENT.values()}
    assert _readme_table() == expected, "README out of date:\n" + settings.markdown_table()


# Files that may still touch os.environ, and why. Everything else reads jobqueue.settings.
_ENVIRON_ALLOWED = {
    "jobqueue/settings.py": "the one place that reads the environment",
    "jobqueue/llm/platforms.py": "API keys under the names jobqueue.toml's api_key_env gives",
    "jobqueue/cli/bench.py": "copies the environment for the worker processes it starts",
}


def test_nothing_else_reads_the_environment():
    found = []
    for path in sorted([*ROOT.glob("jobqueue/**/*.py"), *ROOT.glob("web/**/*.py")]):
        name = path.relative_to(ROOT).as_posix()
        if name in _ENVIRON_ALLOWED:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"os\.environ|getenv\(", line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "read the environment through jobqueue.settings:\n" + "\n".join(found)
