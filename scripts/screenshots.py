"""Screenshots of the dashboard for the README, made from a demo run.

Starts `jobqueue demo --stay` (an embedded Postgres or DATABASE_URL, the simulated provider,
a worker, the web app), waits for its batch to finish, signs in to the dashboard with the
demo's admin token in headless Chromium, and saves PNGs of the overview and the batch's page
into docs/screenshots/ (light, and the batch page in dark mode too). Then stops the demo
with Ctrl-C (SIGINT), as a person would.

    .venv/bin/python scripts/screenshots.py [--jobs 120] [--out docs/screenshots]

Needs /usr/bin/chromium and playwright (pip install -e '.[dev]'). Talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DASHBOARD = re.compile(r"dashboard: (http://127\.0\.0\.1:\d+)/.*admin token (\S+?)\)")
BATCH = re.compile(r"batch (\d+): ")
DONE = re.compile(r"stays up until Ctrl-C")


def start_demo(jobs: int) -> tuple[subprocess.Popen, queue.Queue[str]]:
    """`jobqueue demo --stay` in its own process group, its output lines in a queue."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "jobqueue", "demo", "--jobs", str(jobs), "--stay"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env=os.environ | {"LOG_FORMAT": "console"}, start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump():
        for line in demo.stdout:
            sys.stderr.write(f"  demo| {line}")
            lines.put(line)
        lines.put("")  # the demo ended

    threading.Thread(target=pump, daemon=True).start()
    return demo, lines


def wait_for(lines: queue.Queue[str], found: dict, timeout: float = 300.0) -> None:
    """Read the demo's output until it printed the dashboard, its batch and the end of it."""
    deadline = time.monotonic() + timeout
    while not DONE.search(found.get("last", "")) or "base" not in found or "batch" not in found:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line == "":
            raise SystemExit("the demo ended before its dashboard was ready (see its output)")
        if m := DASHBOARD.search(line):
            found["base"], found["token"] = m.group(1), m.group(2)
        if m := BATCH.search(line):
            found["batch"] = int(m.group(1))
        found["last"] = line


def shoot(base: str, token: str, batch_id: int, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    saved = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        for scheme in ("light", "dark"):
            context = browser.new_context(viewport={"width": 1280, "height": 900},
                                          color_scheme=scheme, device_scale_factor=1)
            page = context.new_page()
            page.goto(f"{base}/login?next=/")
            page.fill("#token", token)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            pages = [("overview", "/"), ("batch", f"/batches/{batch_id}")]
            if scheme == "dark":
                pages = [("batch", f"/batches/{batch_id}")]
            for name, path in pages:
                page.goto(base + path)
                page.locator("#live").wait_for()
                target = out / (f"{name}.png" if scheme == "light" else f"{name}-dark.png")
                page.screenshot(path=str(target), full_page=True)
                saved.append(target)
            context.close()
        browser.close()
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=120, help="jobs in the demo's batch")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    if not os.path.exists(CHROMIUM):
        print(f"no chromium at {CHROMIUM} (apt-get install chromium)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    demo, lines = start_demo(args.jobs)
    try:
        found: dict = {}
        wait_for(lines, found)
        for path in shoot(found["base"], found["token"], found["batch"], args.out):
            print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)
            try:
                demo.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
