"""A real browser against `evalloop app` on loopback while another process holds the database:
every page opens and is screenshotted, a reviewer name is entered, a blind vote is cast from the
keyboard, a correction is saved through the page, and both reach the store with that name once a
writer opens it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_app import seed

from loop.store.db import Store

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed "
                                "at /usr/bin/chromium (make test installs it with apt-get)")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
PAGES = {"Overview": "Latest gate decision", "Failures": "failures match",
         "Arena": "answer A", "Leaderboard": "judge: reference",
         "Benchmarks & training": "Training loss"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_url(workspace):
    seed(workspace)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "loop.cli", "app", "--workspace",
                             str(workspace), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "USER": "tester"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            break
        except OSError:
            time.sleep(0.3)
    yield url
    proc.terminate()  # `evalloop app` execs streamlit: this stops the server itself
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def cycle_holding_the_db(workspace, app_url):
    """A writer (as a nightly cycle would be) holding the main database while the test runs."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from loop.store.db import Store\n"
        f"s = Store({str(workspace)!r}); print('held', flush=True); time.sleep(300)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield holder
    holder.kill()
    holder.wait()


def settle(page) -> None:
    """Wait until Streamlit has replaced the previous run's (stale) elements."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (
            page.locator('[data-stale="true"]').count()
            or page.locator('[data-testid="stStatusWidget"]').count()):
        page.wait_for_timeout(200)
    page.wait_for_timeout(400)


def snap(page, path: Path) -> None:
    """A screenshot of the whole page: Streamlit scrolls inside its main block, so the viewport
    grows to the content's height (again while charts that render late make it taller)."""
    height = 0
    for _ in range(4):
        settle(page)
        now = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
        if now <= height:
            break
        height = now
        page.set_viewport_size({"width": 1400, "height": max(1000, min(height + 40, 8000))})
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1400, "height": 1000})


def open_page(page, name: str) -> None:
    page.locator('[data-testid="stSidebar"]').get_by_text(name, exact=True).click()
    page.get_by_text(PAGES[name]).first.wait_for(timeout=30_000)
    settle(page)


def test_browser_opens_every_page_votes_and_corrects(app_url, workspace, cycle_holding_the_db):
    from playwright.sync_api import sync_playwright

    shots = workspace / "screenshots"
    shots.mkdir()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app_url)
        page.get_by_text("Latest gate decision").first.wait_for(timeout=30_000)
        settle(page)
        snap(page, shots / "1-overview.png")

        name = page.get_by_label("your name (reviews and votes)")
        name.fill("dana")  # the reviewer every later vote and correction records
        name.press("Enter")
        settle(page)
        open_page(page, "Arena")
        page.get_by_text("judged by dana").first.wait_for(timeout=30_000)
        page.get_by_role("heading", name="Arena: blind A/B votes").click()  # focus off inputs
        page.keyboard.press("x")  # the "both bad" shortcut
        page.get_by_text("vote recorded (both bad)").wait_for(timeout=30_000)
        settle(page)
        snap(page, shots / "3-arena.png")

        open_page(page, "Leaderboard")
        page.get_by_text("judge: human").wait_for(timeout=30_000)  # the vote counts at once
        snap(page, shots / "4-leaderboard.png")

        open_page(page, "Failures")
        page.get_by_label("corrected answer").fill("red, corrected in the browser")
        page.get_by_role("button", name="save correction").click()
        page.get_by_text("correction saved").wait_for(timeout=30_000)
        page.get_by_text("review history of this item").wait_for(timeout=30_000)
        settle(page)
        snap(page, shots / "2-failures.png")

        open_page(page, "Benchmarks & training")
        snap(page, shots / "5-benchmarks-training.png")
        browser.close()
    assert sorted(p.name for p in shots.glob("*.png")) == [
        "1-overview.png", "2-failures.png", "3-arena.png", "4-leaderboard.png",
        "5-benchmarks-training.png"]
    cycle_holding_the_db.kill()
    cycle_holding_the_db.wait()
    with Store(workspace) as store:  # the next writer ingests what the browser submitted
        assert store.query("SELECT verdict, voter, judge FROM matches WHERE judge = 'human'") == [
            {"verdict": "both_bad", "voter": "dana", "judge": "human"}]
        assert store.query("SELECT corrected_output, reviewer FROM corrections") == [
            {"corrected_output": "red, corrected in the browser", "reviewer": "dana"}]
