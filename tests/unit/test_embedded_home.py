"""Where the embedded server keeps its data: found the same way from anywhere in a project."""

from __future__ import annotations

import pytest

from jobqueue.db import embedded


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv("JOBQUEUE_HOME", raising=False)
    root = tmp_path / "app"
    (root / "src" / "pkg").mkdir(parents=True)
    return root


class TestHome:
    @pytest.mark.parametrize("marker", ["jobqueue.toml", "pyproject.toml", ".git"])
    def test_every_subdirectory_finds_the_project_root(self, project, monkeypatch, marker):
        """From the root or below it, the data lives in <root>/.jobqueue."""
        (project / marker).touch() if marker != ".git" else (project / marker).mkdir()
        for cwd in (project, project / "src", project / "src" / "pkg"):
            monkeypatch.chdir(cwd)
            assert embedded.home() == project.resolve() / ".jobqueue"

    def test_the_nearest_marker_wins(self, project, monkeypatch):
        """A sub-project with its own pyproject.toml has its own server."""
        (project / ".git").mkdir()
        (project / "src" / "pyproject.toml").touch()
        monkeypatch.chdir(project / "src" / "pkg")
        assert embedded.home() == (project / "src").resolve() / ".jobqueue"

    def test_no_marker_means_the_working_directory(self, project, monkeypatch):
        """Outside any project, as before: ./.jobqueue."""
        monkeypatch.chdir(project / "src")
        assert embedded.home() == (project / "src").resolve() / ".jobqueue"

    def test_jobqueue_home_wins(self, project, tmp_path, monkeypatch):
        """JOBQUEUE_HOME is used as given."""
        (project / ".git").mkdir()
        monkeypatch.chdir(project / "src")
        monkeypatch.setenv("JOBQUEUE_HOME", str(tmp_path / "elsewhere"))
        assert embedded.home() == (tmp_path / "elsewhere").resolve()

    def test_state_of_a_directory_with_no_server(self, tmp_path):
        """state() reads, starts nothing: no postmaster.pid, not running."""
        found = embedded.state(tmp_path / "pgdata")
        assert (found.running, found.initialised, found.pid) == (False, False, None)
        assert embedded.stop(tmp_path / "pgdata") is None
