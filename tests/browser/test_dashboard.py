"""The dashboard in a real browser: sign in, approve a proposal, see it carried out.

Everything is real: ``python -m skytwin`` as a subprocess on the test's
PostgreSQL, the fake Google over HTTP in a thread of this process, the user
and the connection made with the CLI, and Debian's chromium driven by
Playwright (never a browser Playwright downloads). A screenshot of the final
page is saved to ``artifacts/dashboard.png``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from skytwin.fakegoogle import World
from tests.process.fake_google import FakeGoogleThread
from tests.process.harness import SkyTwinProcess, cli, start_skytwin

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags chromium phones home, and this closed
# network refuses it (slowly).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
EMAIL = "ada@example.com"
SUBJECT = "The weekly newsletter"
# Waiting for SkyTwin to notice the mail: a 0.5 s poll, then the page's 3 s refresh.
APPEARS_WITHIN_MS = 30_000


@pytest.fixture
def fake() -> Iterator[FakeGoogleThread]:
    """A fake Google with one account whose inbox holds a newsletter."""
    world = World(seed=11)
    thread = FakeGoogleThread(world)
    thread.start()
    thread.call(world.add_account, EMAIL)
    thread.call(
        world.add_message, EMAIL, sender="news@weekly.example", subject=SUBJECT,
        labels=("INBOX", "UNREAD", "CATEGORY_PROMOTIONS"),
    )
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture
def skytwin(
    tmp_path: Path, database_url: str, fake: FakeGoogleThread
) -> Iterator[tuple[SkyTwinProcess, str]]:
    """SkyTwin on the fake, with a user whose account is connected: (process, token)."""
    home = tmp_path / "home"
    env = {**fake.env(), "SKYTWIN_DATABASE_URL": database_url, "SKYTWIN_POLL_INTERVAL_S": "0.5"}
    added = cli(home, env, "user", "add", "--email", EMAIL, "--name", "Ada", "--json")
    token = json.loads(added)["token"]
    refresh_token = fake.call(fake.world.issue_refresh_token, EMAIL)
    # The refresh token travels in the environment, never on a command line.
    cli(home, {**env, "SKYTWIN_REFRESH_TOKEN": refresh_token},
        "connect", "google", "--email", EMAIL, "--json")
    process = start_skytwin(home, env=env)
    try:
        yield process, token
    finally:
        process.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, driven by Playwright."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watched:
    """A page and what it did: every URL it requested, failed responses, console errors."""

    page: Page
    urls: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def assert_clean(self, token: str) -> None:
        """No failed request or console error; the token never in a URL, only in the tab."""
        assert self.failed == [] and self.console_errors == []
        assert self.urls and not [url for url in self.urls if token in url]
        stored = self.page.evaluate("() => sessionStorage.getItem('skytwin.token')")
        assert stored == token


def open_page(browser: Browser) -> Watched:
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    watched = Watched(page)
    page.on("request", lambda r: watched.urls.append(r.url))
    page.on("response", lambda r: watched.failed.append(f"{r.status} {r.url}")
            if r.status >= 400 else None)
    page.on("console", lambda m: watched.console_errors.append(m.text)
            if m.type == "error" else None)
    return watched


def sign_in(page: Page, base_url: str, token: str) -> None:
    page.goto(base_url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(f"Signed in as {EMAIL}")).to_be_visible()


def account_card(page: Page) -> Locator:
    page.get_by_role("tab", name="Accounts").click()
    return page.locator("#accounts-list li").filter(has_text=EMAIL)


def fact(card: Locator, term: str) -> Locator:
    return card.locator("dt", has_text=term).locator("+ dd")


def test_sign_in_approve_a_proposal_and_see_it_carried_out(
    skytwin: tuple[SkyTwinProcess, str], browser: Browser, fake: FakeGoogleThread
) -> None:
    process, token = skytwin
    watched = open_page(browser)
    page = watched.page
    sign_in(page, process.base_url, token)

    # The newsletter the fake Google holds becomes a pending approval.
    card = page.get_by_role("listitem").filter(has_text=SUBJECT)
    expect(card).to_be_visible(timeout=APPEARS_WITHIN_MS)
    expect(card).to_contain_text("Archive the email")
    expect(page.locator("#count-pending")).to_have_text("1")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-pending.png"), full_page=True)

    card.get_by_role("button", name="Approve").click()

    # The answer and the execution's outcome are announced; the card leaves the list.
    expect(page.locator("#activity")).to_contain_text(
        f"Approved: Archive the email “{SUBJECT}” — execution #1 succeeded.", timeout=15_000
    )
    expect(card).to_have_count(0)
    expect(page.locator("#pending-empty")).to_be_visible()

    # Accounts: the connected account is polled, its breaker closed.
    account = account_card(page)
    expect(account).to_contain_text("Active")
    expect(fact(account, "Poll task")).to_contain_text("running")
    expect(fact(account, "Circuit breaker")).to_contain_text("closed")
    expect(fact(account, "Last successful poll")).not_to_have_text("never")

    # History shows the answer and the completed execution: that is the screenshot.
    page.get_by_role("tab", name="History").click()
    row = page.locator("#history-body tr").filter(has_text=SUBJECT)
    expect(row).to_contain_text("approved")
    expect(row).to_contain_text("#1 succeeded")
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # Google was asked exactly once to archive the message, and it is archived.
    modifies = fake.call(fake.world.requests, "gmail.users.messages.modify", account=EMAIL)
    assert [(r.status, json.loads(r.body)["removeLabelIds"]) for r in modifies] == [
        (200, ["INBOX"])
    ]
    labels = fake.call(lambda: [m.labels for m in fake.world.account(EMAIL).messages.values()])
    assert labels == [["UNREAD", "CATEGORY_PROMOTIONS"]]
    watched.assert_clean(token)


def test_a_revoked_grant_asks_to_reconnect_and_reconnecting_through_google_works(
    skytwin: tuple[SkyTwinProcess, str], browser: Browser, fake: FakeGoogleThread
) -> None:
    process, token = skytwin
    # Mail whose subject is markup: the page must show it as text, never build it.
    markup = 'Digest <img src="x" onerror="window.injected = 1"> <b>newsletter</b>'
    fake.call(fake.world.add_message, EMAIL, sender="<b>news</b>@x.example", subject=markup)
    watched = open_page(browser)
    page = watched.page
    sign_in(page, process.base_url, token)
    card = page.get_by_role("listitem").filter(has_text=markup)
    expect(card).to_be_visible(timeout=APPEARS_WITHIN_MS)
    expect(card.locator("h3")).to_have_text(f"Archive the email — {markup}")
    assert card.locator("img, b").count() == 0
    assert page.evaluate("() => window.injected") is None

    account = account_card(page)
    expect(fact(account, "Last successful poll")).not_to_have_text("never",
                                                                  timeout=APPEARS_WITHIN_MS)

    fake.call(fake.world.revoke, EMAIL)  # the user withdrew SkyTwin's access at Google

    expect(account).to_contain_text("Needs re-authorization", timeout=APPEARS_WITHIN_MS)
    expect(page.get_by_role("tab", name="Accounts (one needs attention)")).to_be_visible()
    reconnect = account.get_by_role("button", name="Reconnect this account")
    expect(reconnect).to_be_visible()
    expect(fact(account, "Last successful poll")).not_to_have_text("never")
    expect(fact(account, "Last error")).to_contain_text("invalid_grant")
    page.screenshot(path=str(ARTIFACTS / "dashboard-reauth.png"), full_page=True)

    # Reconnect: SkyTwin hands out Google's consent URL, the (fake) Google consents at
    # once and sends the browser back through /oauth/google/callback to the dashboard.
    reconnect.click()
    expect(page.locator("#activity")).to_contain_text("Your Google account is connected")
    expect(page).to_have_url(process.base_url + "/")
    account = account_card(page)
    expect(account).to_contain_text("Active")
    expect(account).not_to_contain_text("Needs re-authorization")
    # Polling resumes: a new poll task runs and its breaker is fresh.
    expect(fact(account, "Poll task")).to_contain_text("running", timeout=APPEARS_WITHIN_MS)
    expect(fact(account, "Circuit breaker")).to_contain_text("closed")
    consents = fake.call(fake.world.requests, "oauth.authorize")
    assert len(consents) == 1
    watched.assert_clean(token)
