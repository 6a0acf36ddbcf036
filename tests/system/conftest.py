"""System tests' hooks: each test item keeps its phase reports (`item.rep_call`), so a
fixture's teardown can tell that the test failed (the browser test then saves screenshots)."""

from __future__ import annotations

import pytest


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
