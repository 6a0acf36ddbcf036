"""One exception hierarchy: every exception jobqueue raises on purpose is a JobqueueError."""

from __future__ import annotations

import importlib

import pytest

import jobqueue
from jobqueue.errors import JobqueueError

PUBLIC_EXCEPTIONS = [name for name in jobqueue.__all__
                     if isinstance(getattr(jobqueue, name), type)
                     and issubclass(getattr(jobqueue, name), BaseException)]

# Where each exception lived before errors.py: old imports keep working.
OLD_HOMES = {
    "InvalidJob": "jobqueue.jobs",
    "ConfigError": "jobqueue.llm.platforms",
    "BatchFileError": "jobqueue.batches.files",
    "UnreadableDocument": "jobqueue.llm.documents",
    "NoUsableKey": "jobqueue.llm.ratelimit",
    "InvalidAnswer": "jobqueue.llm.runtime",
    "Retry": "jobqueue.tasks",
    "Permanent": "jobqueue.tasks",
    "JobCancelled": "jobqueue.tasks",
}


class TestHierarchy:
    def test_every_public_exception_is_a_jobqueue_error(self):
        """Each exception exported by `jobqueue` derives from JobqueueError."""
        assert set(OLD_HOMES) <= set(PUBLIC_EXCEPTIONS)
        for name in PUBLIC_EXCEPTIONS:
            assert issubclass(getattr(jobqueue, name), JobqueueError), name

    def test_every_exception_class_in_the_package_is_a_jobqueue_error(self):
        """No module defines an exception outside the hierarchy (errors.py is the one home)."""
        import pkgutil

        found = []
        for info in pkgutil.walk_packages(jobqueue.__path__, "jobqueue."):
            if info.name.endswith("__main__") or info.name.startswith(
                    ("jobqueue.sim", "jobqueue.cli")):
                continue  # entry points; the simulator; click's UserError and WorkFailed
            module = importlib.import_module(info.name)
            for value in vars(module).values():
                if (isinstance(value, type) and issubclass(value, Exception)
                        and value.__module__.startswith("jobqueue")):
                    found.append(value)
        assert found
        outside = {f"{c.__module__}.{c.__qualname__}" for c in found
                   if not issubclass(c, JobqueueError)}
        assert not outside

    @pytest.mark.parametrize("name", sorted(OLD_HOMES))
    def test_old_import_paths_still_work(self, name):
        """`from jobqueue.tasks import Retry` and friends give the same class as errors.py."""
        module = importlib.import_module(OLD_HOMES[name])
        assert getattr(module, name) is getattr(jobqueue, name)

    @pytest.mark.parametrize("name", ["InvalidJob", "ConfigError", "BatchFileError",
                                      "UnreadableDocument"])
    def test_value_errors_stay_value_errors(self, name):
        """Callers that catch ValueError still catch the input errors."""
        assert issubclass(getattr(jobqueue, name), ValueError)

    def test_retry_keeps_its_delay(self):
        """Retry still carries the delay a handler asks for."""
        assert jobqueue.Retry("later", delay=3).delay == 3
