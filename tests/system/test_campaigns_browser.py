"""A campaign's report page in a real browser (Debian's headless chromium via Playwright):
the inline SVG charts draw, the period form reloads the report, and the
Content-Security-Policy blocks nothing. A screenshot goes to /tmp."""

from __future__ import annotations

from datetime import UTC, date, datetime

import psycopg
import pytest
from psycopg.rows import dict_row

from jobqueue.campaigns import model, store
from tests.support.helpers import record_answer
from tests.support.web import Server
from tests.system.test_dashboard_browser import (  # noqa: F401 (the fixtures)
    browser,
    open_page,
    page,
)


@pytest.fixture
def server(db_url):
    s = Server(db_url)
    yield s
    s.close()


def test_the_report_page_draws_its_charts_under_the_csp(page, server, db_url,  # noqa: F811
                                                         make_token):
    from playwright.sync_api import expect

    violations: list[str] = []
    page.on("console", lambda m: "Content Security Policy" in m.text
            and violations.append(m.text))
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        spec = model.build({"name": "crm", "platforms": ["sim"], "prompts": ["best CRM?"],
                            "brands": ["Acme"], "competitors": ["Globex"]},
                           platforms={"sim": object()})
        store.save(conn, spec, datetime.now(UTC))
        found = store.get(conn, "crm")
        for job_id, day, text in ((1, 1, "Acme, then Globex"), (2, 2, "Globex only"),
                                  (3, 3, "Acme is great")):
            record_answer(db_url, found, job_id, "sim", date(2026, 3, day), text)
    page.goto(f"{server.base}/campaigns/crm")
    page.fill("#token", make_token("ops", ["admin"]))
    page.click("button[type=submit]")
    page.goto(f"{server.base}/campaigns/crm?from=2026-03-01&to=2026-03-03")
    expect(page.locator("svg.chart polyline")).to_have_count(2)
    expect(page.locator("svg.chart rect")).to_have_count(2)
    assert page.locator("svg.chart polyline").first.bounding_box()["width"] > 100
    expect(page.locator("svg.chart circle")).to_have_count(6)  # 3 days x 2 brands
    page.screenshot(path="/tmp/jobqueue-dashboard-campaign.png", full_page=True)
    page.fill("input[name=from]", "2026-03-03")
    page.click("#period button[type=submit]")
    expect(page).to_have_url(f"{server.base}/campaigns/crm?from=2026-03-03&to=2026-03-03")
    expect(page.locator("table").first).to_contain_text("100.0%")
    assert violations == []
