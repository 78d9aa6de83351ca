"""Kill SkyTwin at random moments, stop its database: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from skytwin.fakegoogle import World
from tests.conftest import PgServer

from .fake_google import FakeGoogleThread
from .harness import cli, start_skytwin, wait_for

pytestmark = pytest.mark.slow

SECRET = "k8Jq2xW9vLp4Rt7Yz1Nc5Bm3Hd6Fg0Sa"  # a test-only key, random-looking on purpose
EMAILS = ("ann@example.com", "bob@example.com")


@pytest.fixture
def fake() -> Iterator[FakeGoogleThread]:
    """A fake Google in this process, with two accounts holding some mail and an invite."""
    world = World(seed=3)
    thread = FakeGoogleThread(world)
    thread.start()
    now = datetime.now(UTC)
    for email in EMAILS:
        thread.call(world.add_account, email)
        thread.call(world.add_message, email, sender="news@shop.example", subject="Newsletter")
        thread.call(
            world.add_event,
            email,
            summary="Planning",
            organizer="lead@work.example",
            start=now + timedelta(days=1),
            end=now + timedelta(days=1, hours=1),
        )
    try:
        yield thread
    finally:
        thread.stop()


def connect_accounts(home: Path, env: dict[str, str], fake: FakeGoogleThread) -> None:
    """Create a SkyTwin user per account and connect it with a refresh token from the fake."""
    for email in EMAILS:
        cli(home, env, "user", "add", "--email", email, "--name", email.split("@")[0], "--json")
        refresh_token = fake.call(fake.world.issue_refresh_token, email)
        out = cli(
            home,
            {**env, "SKYTWIN_REFRESH_TOKEN": refresh_token},
            "connect",
            "google",
            "--email",
            email,
            "--json",
        )
        assert json.loads(out)["account_email"] == email


class MailFlow:
    """New mail and invites arriving in a background thread until stopped."""

    def __init__(self, fake: FakeGoogleThread, rng: random.Random) -> None:
        self.fake, self.rng = fake, rng
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop_event.wait(0.05):
            n += 1
            email = self.rng.choice(EMAILS)
            if n % 7 == 0:
                start = datetime.now(UTC) + timedelta(days=2, minutes=n)
                self.fake.call(
                    self.fake.world.add_event,
                    email,
                    summary=f"Sync {n}",
                    organizer="lead@work.example",
                    start=start,
                    end=start + timedelta(minutes=30),
                )
            else:
                self.fake.call(
                    self.fake.world.add_message,
                    email,
                    sender=f"s{n}@x.example",
                    subject=f"Message {n}",
                )

    def __enter__(self) -> MailFlow:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join()


def expected(fake: FakeGoogleThread) -> dict[str, tuple[list[str], list[str]]]:
    """Per account: (message ids, event ids) the fake holds."""

    def snapshot() -> dict[str, tuple[list[str], list[str]]]:
        return {
            email: (
                sorted(fake.world.account(email).messages),
                sorted(fake.world.account(email).events),
            )
            for email in EMAILS
        }

    return fake.call(snapshot)


def stored(database_url: str) -> dict[str, tuple[list[str], list[str]]]:
    """Per account: (gmail external ids, calendar event ids) SkyTwin stored, with repeats."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select u.email, s.source, s.external_id from signals s "
            "join users u on u.id = s.user_id order by s.id"
        ).fetchall()
    found: dict[str, tuple[list[str], list[str]]] = {e: ([], []) for e in EMAILS}
    for email, source, external_id in rows:
        if source == "gmail":
            found[email][0].append(external_id)
        else:
            found[email][1].append(external_id)
    return found


def delivered_exactly_once(database_url: str, fake: FakeGoogleThread) -> bool:
    """True when SkyTwin holds every message and event the fake has, each once."""
    want = expected(fake)
    have = stored(database_url)
    for email in EMAILS:
        messages, versions = have[email]
        if sorted(messages) != want[email][0] or len(set(messages)) != len(messages):
            return False
        # Calendar ids are "event:version"; every event must be there (versions may be several).
        if sorted({v.split(":", 1)[0] for v in versions}) != want[email][1]:
            return False
        if len(set(versions)) != len(versions):
            return False
    return True


def decisions_are_unique(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        dup = conn.execute("select count(*) - count(distinct signal_id) from decisions").fetchone()
        assert dup == (0,)


def test_sigkill_at_random_moments_loses_and_doubles_nothing(
    tmp_path: Path, database_url: str, fake: FakeGoogleThread
) -> None:
    home = tmp_path / "home"
    env = {
        **fake.env(),
        "SKYTWIN_DATABASE_URL": database_url,
        "SKYTWIN_SECRET_KEY": SECRET,
        "SKYTWIN_POLL_INTERVAL_S": "0.3",
    }
    connect_accounts(home, env, fake)
    rng = random.Random(20261127)
    kills = 0
    with MailFlow(fake, rng):
        for _ in range(8):
            st = start_skytwin(home, env=env)
            time.sleep(rng.uniform(0.2, 1.5))  # the random moment of the kill, not a settle wait
            st.signal(signal.SIGKILL)
            assert st.wait_exit(timeout=5) == -signal.SIGKILL
            kills += 1
    assert kills == 8
    # The killed processes were polling: they stored signals before dying.
    assert sum(len(m) + len(e) for m, e in stored(database_url).values()) > 2 * len(EMAILS)

    final = start_skytwin(home, env=env)
    try:
        wait_for(lambda: delivered_exactly_once(database_url, fake), timeout=30)
        decisions_are_unique(database_url)
        final.signal(signal.SIGTERM)
        assert final.wait_exit(timeout=10) == 0
    finally:
        final.stop()
    assert delivered_exactly_once(database_url, fake)
    assert fake.world.errors == []


def test_database_outage_mid_run_recovers_without_a_crash_loop(
    tmp_path: Path, own_server: PgServer, fake: FakeGoogleThread
) -> None:
    with own_server.admin() as conn:
        conn.execute("create database skytwin")
    database_url = own_server.url("skytwin")
    home = tmp_path / "home"
    env = {
        **fake.env(),
        "SKYTWIN_DATABASE_URL": database_url,
        "SKYTWIN_SECRET_KEY": SECRET,
        "SKYTWIN_POLL_INTERVAL_S": "0.3",
    }
    connect_accounts(home, env, fake)
    st = start_skytwin(home, env=env)
    try:
        wait_for(lambda: delivered_exactly_once(database_url, fake), timeout=20)
        with MailFlow(fake, random.Random(5)):
            own_server.server.stop()
            stopped = time.monotonic()
            wait_for(lambda: st.get("/api/health/ready", timeout=3).status_code == 503, timeout=2)
            while time.monotonic() - stopped < 3.0:  # the outage lasts three seconds
                assert st.get("/api/health/live").status_code == 200
                assert st.proc.poll() is None
                time.sleep(0.2)
            own_server.server.start()
            wait_for(lambda: st.get("/api/health/ready", timeout=3).status_code == 200, timeout=5)
        wait_for(lambda: delivered_exactly_once(database_url, fake), timeout=20)
        decisions_are_unique(database_url)
    finally:
        st.stop()
    assert st.proc.returncode == 0
    log = "".join(st.lines)
    assert "skytwin.child_restarted" not in log and "skytwin.child_failed" not in log
    assert "skytwin.poll_database_error" in log
