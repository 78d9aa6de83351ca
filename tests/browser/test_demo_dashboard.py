"""The demo's dashboard in a real browser; saves ``artifacts/demo-dashboard.png``."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from skytwin.demo import DOWN, FLAKY, HEALTHY
from tests.process.harness import start_skytwin

from .test_dashboard import ARTIFACTS, browser, open_page  # noqa: F401 - the browser fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_demo_dashboard_shows_three_accounts_and_pending_approvals(
    tmp_path: Path,
    browser: Browser,  # noqa: F811
) -> None:
    st = start_skytwin(
        tmp_path / "home",
        "demo",
        "--poll-interval-s",
        "0.5",
        "--mail-every-s",
        "1",
        "--outage-s",
        "120",
        "--breaker-open-s",
        "30",
    )
    try:
        st.wait_event("skytwin.demo_ready", timeout=30)
        assert st.proc.stdout is not None
        token = next(
            line.split("Sign-in token:")[1].strip()
            for line in st.proc.stdout
            if "Sign-in token:" in line
        )
        watched = open_page(browser)
        page = watched.page
        page.goto(st.base_url + "/")
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_text("Signed in as demo@demo.skytwin")).to_be_visible()
        expect(page.locator("#count-pending")).not_to_have_text("0", timeout=30_000)

        page.get_by_role("tab", name="Accounts").click()
        cards = page.locator("#accounts-list li")
        for email in (HEALTHY, FLAKY, DOWN):
            expect(cards.filter(has_text=email)).to_be_visible(timeout=15_000)
        # The down account's Google is away for two minutes: its breaker opens.
        down = cards.filter(has_text=DOWN)
        breaker = down.locator("dt", has_text="Circuit breaker").locator("+ dd")
        expect(breaker).to_contain_text("open", timeout=60_000)
        expect(breaker).to_contain_text("next probe")
        expect(breaker).not_to_contain_text("[object")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "demo-dashboard.png"), full_page=True)
        page.get_by_role("tab", name="Pending").click()
        page.screenshot(path=str(ARTIFACTS / "demo-pending.png"), full_page=True)
        assert watched.console_errors == []
        st.signal(signal.SIGINT)
        assert st.wait_exit(timeout=15) == 0
    finally:
        st.stop()
