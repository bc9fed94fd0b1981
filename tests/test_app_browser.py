"""A real browser against `evalloop app` on loopback: every page, screenshots, a vote, a fix."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from loop.store import Store
from test_app import seed

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed "
                                "(make test installs it with apt-get)")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def settle(page) -> None:
    """Wait until Streamlit has replaced the previous page's (stale) elements."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and page.locator('[data-stale="true"]').count():
        page.wait_for_timeout(200)
    page.wait_for_timeout(500)


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
    proc.terminate()
    proc.wait(timeout=10)


def test_browser_opens_every_page_votes_and_corrects(app_url, workspace):
    from playwright.sync_api import sync_playwright

    shots = workspace / "screenshots"
    shots.mkdir()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app_url)
        for name, expected in (("Overview", "Latest gate decision"),
                               ("Failures", "failures shown"), ("Arena", "answer A"),
                               ("Leaderboard", "judge: reference"),
                               ("Benchmarks & training", "Training loss")):
            page.get_by_text(name, exact=True).first.click()
            page.get_by_text(expected).first.wait_for(timeout=30_000)
            settle(page)
            page.screenshot(path=str(shots / f"{name.split()[0].lower()}.png"), full_page=True)
        page.get_by_text("Arena", exact=True).first.click()
        page.get_by_role("button", name="both bad").click()
        page.get_by_text("vote recorded").wait_for(timeout=30_000)
        page.get_by_text("Failures", exact=True).first.click()
        page.get_by_text("failures shown").wait_for(timeout=30_000)
        box = page.get_by_label("corrected answer")
        box.fill("red, corrected in the browser")
        page.get_by_role("button", name="save correction").click()
        page.get_by_text("correction saved").wait_for(timeout=30_000)
        browser.close()
    assert len(list(shots.glob("*.png"))) == 5
    with Store(workspace) as store:
        assert store.query("SELECT verdict, voter FROM matches WHERE judge = 'human'") == [
            {"verdict": "both_bad", "voter": "tester"}]
        assert store.query("SELECT corrected_output FROM corrections") == [
            {"corrected_output": "red, corrected in the browser"}]
