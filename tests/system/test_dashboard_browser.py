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
import re
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
def browser():
    if not os.path.exists(CHROMIUM):
        _unavailable(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser, request, tmp_path):
    """open_page(width=1280, color_scheme="light") -> a page in a context of its own. When
    the test fails, every page it opened is saved as a screenshot into
    $JOBQUEUE_TEST_ARTIFACTS (when set) or the test's tmp dir, named in the failure."""
    contexts = []

    def open_(width: int = 1280, height: int = 900, color_scheme: str = "light"):
        context = browser.new_context(viewport={"width": width, "height": height},
                                      color_scheme=color_scheme)
        context.set_default_timeout(TIMEOUT)
        contexts.append(context)
        return context.new_page()

    yield open_
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        folder = os.environ.get("JOBQUEUE_TEST_ARTIFACTS") or str(tmp_path)
        os.makedirs(folder, exist_ok=True)
        saved = []
        for i, context in enumerate(contexts):
            for j, p in enumerate(context.pages):
                path = os.path.join(folder, f"{request.node.name}-{i}-{j}.png")
                try:
                    p.screenshot(path=path, full_page=True)
                    saved.append(path)
                except Exception as exc:  # a closed page: say so, keep the others
                    saved.append(f"{path} (failed: {exc})")
        report.sections.append(("screenshots", "\n".join(saved)))
        print("screenshots of the failed browser test:", *saved, sep="\n  ")
    for context in contexts:
        context.close()


@pytest.fixture
def page(open_page):
    return open_page()


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


# -- the batch page, retrying, run-now, the read-only role, 390 px, dark mode (issue 15) ------


def sign_in(page, base: str, token: str, then: str = "/") -> None:
    page.goto(f"{base}/login?next={then}")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{then}")


def answer(payload):
    """An LLM-shaped answer, without a provider: the batch page reads result["text"]."""
    prompt = payload["messages"][-1]["content"]
    return {"text": f"answer to {prompt}", "model": "sim-1", "usage": {"total_tokens": 12},
            "cost_usd": 0.0001}


class Flaky(Exception):
    """Fails every time; retried (not Permanent)."""


def flaky(payload):
    raise Flaky("provider timed out")


@pytest.fixture
def fleet(client, start_worker):
    """A fan-out batch of 6 on two platform queues, answered; a job retrying (its next
    attempt an hour away); a job scheduled for later. The workers are stopped after."""
    from jobqueue.jobs import JobSpec

    tasks = Registry()
    tasks.register("chat", answer)
    tasks.register("flaky", flaky)
    specs = [JobSpec("chat", {"messages": [{"role": "user", "content": f"{w} on {q}?"}]},
                     queue=q) for q in ("openai", "gemini") for w in ("alpha", "beta", "gamma")]
    batch_id, _ = client.submit_batch(specs, queue="openai", name="visibility")
    retrying = client.enqueue("flaky", {}, queue="flaky", max_attempts=5)
    workers = [start_worker(tasks, queue=q, retry_base_seconds=3600)
               for q in ("openai", "gemini", "flaky")]
    wait_until(lambda: client.batch(batch_id)["succeeded"] == 6, message="the batch")
    wait_until(lambda: client.get(retrying).state == "retrying", message="a retry")
    for w in workers:
        w.stop()
    later = client.enqueue("chat", {"messages": [{"role": "user", "content": "later"}]},
                           queue="openai", delay=3600)
    return {"batch": batch_id, "retrying": retrying, "later": later}


def test_batch_page_retrying_and_run_now(open_page, server, client, make_token, fleet):
    from playwright.sync_api import expect

    page = open_page()
    sign_in(page, server.base, make_token("ops", ["admin"]), "/batches")
    page.click(f"a[href='/batches/{fleet['batch']}'] >> nth=0")
    expect(page).to_have_url(f"{server.base}/batches/{fleet['batch']}")
    expect(page.locator("#batch-progress")).to_contain_text("6 of 6 done (100%)")
    expect(page.locator("#batch-eta")).to_have_text("done")
    platforms = page.locator("#batch-platforms")
    expect(platforms).to_contain_text("openai")
    expect(platforms).to_contain_text("gemini")
    answers = page.locator("#answers")
    expect(answers.locator("tbody tr")).to_have_count(6)
    expect(answers).to_contain_text("answer to beta on gemini?")
    page.fill("input[name=q]", "gamma")
    page.click("form.filters button[type=submit]")
    expect(answers.locator("tbody tr")).to_have_count(2)
    expect(page.locator("a", has_text="Download CSV")).to_be_visible()

    # The retrying job, as retrying in the list and on its page; Run now makes it due.
    page.goto(f"{server.base}/jobs?state=retrying")
    row = page.locator(f"tr:has(a[href='/jobs/{fleet['retrying']}'])")
    expect(row.locator(".state")).to_have_text("retrying")
    expect(row.locator(".runs-at")).to_contain_text("in ")
    row.locator(f"a[href='/jobs/{fleet['retrying']}']").click()
    expect(page.locator("#job-state")).to_have_text("retrying")
    expect(page.locator("#timeline")).to_contain_text("attempt 1 failed")
    page.click("form[action$='/run-now'] button")
    expect(page.locator(".flash")).to_contain_text("is due now")
    expect(page.locator("#job-state")).to_have_text("waiting")
    expect(page.locator("#timeline")).to_contain_text("run now by ops")

    # A scheduled job, run now.
    page.goto(f"{server.base}/jobs/{fleet['later']}")
    expect(page.locator("#job-state")).to_have_text("scheduled")
    page.click("form[action$='/run-now'] button")
    expect(page.locator("#job-state")).to_have_text("waiting")
    assert client.get(fleet["later"]).state == "waiting"


def test_read_only_role_has_no_buttons_and_a_forged_post_is_refused(
        open_page, server, client, make_token, fleet):
    from playwright.sync_api import expect

    page = open_page()
    sign_in(page, server.base, make_token("auditor", ["read", "viewer"]))
    expect(page.locator("#read-only")).to_be_visible()
    for path in ("/", f"/batches/{fleet['batch']}", f"/jobs/{fleet['retrying']}",
                 f"/jobs/{fleet['later']}", "/jobs", "/dead", "/workers", "/limits",
                 "/queues", "/charts"):
        page.goto(server.base + path)
        expect(page.locator("h1")).to_be_visible()
        posts = page.locator("form[method=post]:not([action='/logout'])")
        assert posts.count() == 0, path
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    for path in (f"/jobs/{fleet['later']}/run-now", f"/batches/{fleet['batch']}/cancel",
                 "/queues/openai/pause"):
        refused = page.request.post(server.base + path, form={"csrf_token": token})
        assert refused.status == 403, path
    assert client.get(fleet["later"]).state == "scheduled"


def test_phone_width_and_dark_mode(open_page, server, make_token, fleet):
    from playwright.sync_api import expect

    token = make_token("ops", ["admin"])
    phone = open_page(width=390, height=844)
    sign_in(phone, server.base, token)
    for path in ("/", "/jobs", f"/batches/{fleet['batch']}", f"/jobs/{fleet['retrying']}",
                 "/batches", "/dead", "/workers", "/limits", "/queues", "/charts",
                 "/schedules", "/costs", "/webhooks"):
        phone.goto(server.base + path)
        expect(phone.locator("h1")).to_be_visible()
        width = phone.evaluate("document.scrollingElement.scrollWidth")
        assert width <= 390, (path, width)
    limits = phone.locator("header nav a", has_text="Limits")
    box = limits.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390  # the nav wraps
    phone.screenshot(path=f"{SHOTS}/jobqueue-dashboard-phone.png", full_page=True)

    def background(page) -> float:
        rgb = page.evaluate("getComputedStyle(document.body).backgroundColor")
        r, g, b = (int(v) for v in re.findall(r"\d+", rgb)[:3])
        return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255

    dark = open_page(color_scheme="dark")
    sign_in(dark, server.base, token, f"/batches/{fleet['batch']}")
    assert background(dark) < 0.2
    text = dark.evaluate("getComputedStyle(document.querySelector('h1')).color")
    assert sum(int(v) for v in re.findall(r"\d+", text)[:3]) > 500  # light text
    light = open_page(color_scheme="light")
    sign_in(light, server.base, token)
    assert background(light) > 0.8
