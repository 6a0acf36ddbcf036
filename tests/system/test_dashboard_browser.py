"""The dashboard in a real browser: Debian's headless chromium driven by Playwright.

Signs in with an admin token, watches a job go from waiting to running to succeeded through
the page's live refresh (no reload), then retries a dead job by clicking its CSRF-protected
form, with the Content-Security-Policy blocking nothing. Screenshots of the overview and a
job page go to /tmp for people to look at.

Needs /usr/bin/chromium (`apt-get install chromium`; Playwright's own browser download is not
used). Without it the test is skipped, except under CI (env CI set), where it fails.
"""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from jobqueue.tasks import Permanent, Registry
from tests.support.helpers import wait_until
from tests.support.web import Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = "/tmp"
TIMEOUT = 15_000  # ms, for every wait on the page


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the browser test", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def page():
    if not os.path.exists(CHROMIUM):
        _unavailable(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT)
        yield context.new_page()
        context.close()
        browser.close()


@pytest.fixture
def server(db_url):
    s = Server(db_url)
    yield s
    s.close()


def test_a_job_runs_live_on_its_page_and_a_dead_job_is_retried_by_a_click(
        page, server, client, make_token, start_worker):
    from playwright.sync_api import expect

    release = threading.Event()

    def hold(payload):
        """Runs until the test lets it finish, so the page can be seen showing `running`."""
        assert release.wait(30), "the test never released the job"
        return {"ok": True, "echo": payload["word"]}

    def fail(payload):
        raise Permanent("no such customer <b>42</b>")

    # The Content-Security-Policy (no inline script or style) must block nothing the
    # dashboard itself does: Chromium reports each blocked thing on the console.
    violations: list[str] = []
    page.on("console", lambda m: "Content Security Policy" in m.text
            and violations.append(m.text))

    tasks = Registry()
    tasks.register("hold", hold)
    tasks.register("fail", fail)
    job_id = client.enqueue("hold", {"word": "<script>hi</script>"}, queue="browser",
                            metadata={"source": "browser test"})

    # Signed out, the job page sends the browser to sign in, then back to the job.
    page.goto(f"{server.base}/jobs/{job_id}")
    expect(page).to_have_url(f"{server.base}/login?next=/jobs/{job_id}")
    page.fill("#token", make_token("ops", ["admin"]))
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{server.base}/jobs/{job_id}")
    state = page.locator("#job-state")
    expect(state).to_have_text("waiting")
    expect(page.locator("#payload")).to_contain_text('"word": "<script>hi</script>"')
    page.evaluate("window.notReloaded = true")  # gone if the page were loaded again

    # The worker starts; the page follows the job without being reloaded.
    worker = start_worker(tasks, queue="browser", concurrency=2)
    expect(state).to_have_text("running")
    expect(page.locator("#live-status")).to_contain_text("Live")
    release.set()
    expect(state).to_have_text("succeeded")
    expect(page.locator("#result")).to_contain_text('"echo": "<script>hi</script>"')
    expect(page.locator("#timeline")).to_contain_text("attempt 1 started")
    assert page.evaluate("window.notReloaded") is True
    page.screenshot(path=f"{SHOTS}/jobqueue-dashboard-job.png", full_page=True)

    # A dead job, retried with a click on its form (which carries the CSRF token).
    dead_id = client.enqueue("fail", {}, queue="browser", max_attempts=1)
    wait_until(lambda: client.get(dead_id).state == "dead", message="the job to die")
    worker.stop()  # so the retried job stays queued for us to see
    page.goto(f"{server.base}/jobs/{dead_id}")
    expect(state).to_have_text("dead")
    expect(page.locator(".attempt")).to_contain_text("Permanent: no such customer <b>42</b>")
    refused = page.request.post(f"{server.base}/jobs/{dead_id}/retry")  # cookie, no token
    assert refused.status == 400
    page.click("form[action$='/retry'] button")
    expect(page.locator(".flash")).to_have_text(f"Job {dead_id} queued again.")
    expect(state).to_have_text("waiting")
    expect(page.locator(".attempt")).to_contain_text("no such customer")  # history kept
    assert client.get(dead_id).state == "waiting"

    # The job list: a ticked box survives the live refresh, and the bulk form sends it.
    page.goto(f"{server.base}/jobs?queue=browser")
    box = page.locator(f"input[name=ids][value='{dead_id}']")
    box.check()
    status = page.locator("#live-status")
    before = status.text_content()
    expect(status).not_to_have_text(before)  # the list was fetched and swapped in since
    expect(box).to_be_checked()
    page.click("#bulk button[value=cancel]")
    expect(page.locator(".flash")).to_contain_text("Cancelled 1 job(s)")
    assert client.get(dead_id).state == "cancelled"

    # The overview, and its pause control for live updates.
    page.goto(server.base + "/")
    expect(page.locator(".totals")).to_contain_text("succeeded")
    expect(page.locator("svg.chart")).to_be_visible()
    assert page.locator("svg.bar rect").first.bounding_box()["width"] > 0
    page.screenshot(path=f"{SHOTS}/jobqueue-dashboard-overview.png", full_page=True)
    toggle = page.locator("#live-toggle")
    toggle.click()
    expect(toggle).to_have_text("Resume live updates")
    expect(page.locator("#live-status")).to_have_text("Paused")
    toggle.click()
    expect(page.locator("#live-status")).to_contain_text("Live")
    assert violations == []
