"""The playground page (`/` on the local stack) in headless Chromium: it loads, renders a stream as it
arrives, shows the call's cost, and shows a 429 clearly. A screenshot of each state is written to
TEST_ARTIFACTS_DIR (default test-artifacts/) under playground/.

Playwright drives Debian's chromium (`apt-get install -y chromium`; never `playwright install`).
Without it the test skips, unless PLAYGROUND_BROWSER_REQUIRED is set (CI sets it): then it fails.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.simulator import Latency, Simulator
from tests.e2e.conftest import ROOT, StackClient

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "test-artifacts")) / "playground"


def _unavailable(reason: str) -> None:
    if os.environ.get("PLAYGROUND_BROWSER_REQUIRED"):
        pytest.fail(f"the browser test must run here: {reason}")
    pytest.skip(reason)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    if not CHROMIUM.is_file():
        _unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=ARGS, headless=True
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()


def text(page: Any, selector: str) -> str:
    return str(page.text_content(selector) or "")


def test_playground_streams_shows_cost_and_a_429(page: Any, stack: StackClient, sim: Simulator, user: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(stack.url + "/")
    assert page.title() == "claude-kit playground"
    page.fill("#user", user)
    page.dispatch_event("#user", "change")
    page.wait_for_function("document.getElementById('usage-out').textContent.startsWith('requests 0')")
    page.screenshot(path=str(SHOTS / "1-loaded.png"), full_page=True)

    # Slow enough output that the page is seen mid-stream: text shown, the done event not yet.
    sim.configure(latency=Latency(ttft=0.1, tokens_per_second=30))
    page.click("#stream-go")
    page.wait_for_function(
        "document.getElementById('stream-out').textContent.length > 0"
        " && document.getElementById('stream-meta').textContent === 'streaming…'"
    )
    partial = text(page, "#stream-out")
    page.screenshot(path=str(SHOTS / "2-streaming.png"), full_page=True)
    page.wait_for_function("document.getElementById('stream-meta').textContent.includes('cost $')", timeout=30_000)
    page.screenshot(path=str(SHOTS / "3-streamed.png"), full_page=True)
    final = text(page, "#stream-out")
    assert final.startswith(partial) and len(final) > len(partial)
    (request,) = sim.message_requests()
    assert request.body["stream"] is True

    # The cost shown is what the stack charged this user.
    shown = re.search(r"cost \$([0-9.]+)", text(page, "#stream-meta"))
    assert shown is not None
    assert float(shown.group(1)) == pytest.approx(stack.usage(user)["cost_usd"], abs=1e-6)
    assert "in " in text(page, "#stream-meta") and "cache read" in text(page, "#stream-meta")

    # The stack allows 6 requests a minute per user (tests/e2e/conftest.py): the 429 shows plainly.
    sim.configure(latency=Latency())
    for _ in range(8):
        page.click("#generate-go")
        page.wait_for_function("document.getElementById('generate-out').textContent !== '…'")
        if "error" in (page.get_attribute("#generate-out", "class") or ""):
            break
    shown_error = text(page, "#generate-out")
    assert shown_error.startswith("429 ")
    assert "RATE_LIMITED" in shown_error or "BUDGET_EXCEEDED" in shown_error
    assert "retry after" in shown_error
    assert "Retry-After" in text(page, "#ratelimit")
    page.screenshot(path=str(SHOTS / "4-rate-limited.png"), full_page=True)
