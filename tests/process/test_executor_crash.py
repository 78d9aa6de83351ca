"""SIGKILL between claim and result: after a restart each action takes effect exactly once.

``python -m skytwin`` runs as a subprocess on the test's PostgreSQL; the fake
Google runs in a thread of this process and outlives every kill. The fake
holds the action's request, so the execution is claimed (its attempt
committed) and its call in flight at Google when the process dies. Two ways
to die there:

* before Google handled the call (it is held, and dropped when the client dies);
* after Google handled it, with the answer lost (the connection dropped
  mid-answer, SkyTwin's retry held): the change is made, SkyTwin never knew.

Each test kills twice: once with the newsletter's archive (a Gmail modify) in
flight, once with the invite's answer (a Calendar patch).
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from skytwin.fakegoogle import Fault, World

from .fake_google import FakeGoogleThread
from .harness import SkyTwinProcess, cli, start_skytwin, wait_for

pytestmark = pytest.mark.slow

SECRET = "Wm4Tq8Xc1Rv6Bn3Ky9Ls2Hd7Jf5Gp0Az"  # a test-only key, random-looking on purpose
EMAIL = "ada@example.com"
MODIFY = "gmail.users.messages.modify"
PATCH = "calendar.events.patch"
HOLD_S = 60.0  # longer than the test; the held request ends when its client dies


@pytest.fixture
def fake() -> Iterator[FakeGoogleThread]:
    """A fake Google whose one account holds a newsletter and an invite for the day after next."""
    world = World(seed=17)
    thread = FakeGoogleThread(world)
    thread.start()
    start = datetime.now(UTC) + timedelta(days=2)
    thread.call(world.add_account, EMAIL)
    thread.call(world.add_message, EMAIL, sender="news@shop.example", subject="Weekly newsletter")
    thread.call(
        world.add_event,
        EMAIL,
        summary="Planning",
        organizer="lead@work.example",
        start=start,
        end=start + timedelta(hours=1),
    )
    try:
        yield thread
    finally:
        thread.stop()


class Rig:
    """The fake, SkyTwin's home and environment, the user's token, the database."""

    def __init__(self, tmp_path: Path, database_url: str, fake: FakeGoogleThread) -> None:
        self.home = tmp_path / "home"
        self.database_url = database_url
        self.fake = fake
        self.env = {
            **fake.env(),
            "SKYTWIN_DATABASE_URL": database_url,
            "SKYTWIN_SECRET_KEY": SECRET,
            "SKYTWIN_POLL_INTERVAL_S": "0.3",
        }
        added = cli(self.home, self.env, "user", "add", "--email", EMAIL, "--name", "Ada", "--json")
        self.token = json.loads(added)["token"]
        refresh_token = fake.call(fake.world.issue_refresh_token, EMAIL)
        cli(
            self.home,
            {**self.env, "SKYTWIN_REFRESH_TOKEN": refresh_token},
            "connect",
            "google",
            "--email",
            EMAIL,
            "--json",
        )

    def start(self) -> SkyTwinProcess:
        """Start SkyTwin; return once it serves."""
        return start_skytwin(self.home, env=self.env)

    def api(self, st: SkyTwinProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call as the user."""
        return httpx.request(
            method,
            st.base_url + path,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=15,
            **kwargs,
        )

    def executions(self) -> dict[str, dict[str, Any]]:
        """The executions as stored, by action."""
        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            rows = conn.execute("select * from executions order by id").fetchall()
        return {row["action"]: row for row in rows}

    def requests(self, operation: str) -> list[tuple[int, str]]:
        """(status, note) of every request the fake got for ``operation``, in order."""
        records = self.fake.call(self.fake.world.requests, operation, account=EMAIL)
        return [(r.status, r.note) for r in records]

    def calls(self, operation: str, resource: str) -> int:
        """How many ``operation`` requests on ``resource`` the fake handled (made take effect)."""
        return self.fake.call(lambda: self.fake.world.calls[(operation, resource)])

    def hold(self, api: str, operation: str, *, answer_lost: bool) -> None:
        """Make the fake hold the next ``operation`` (after handling one and losing its answer)."""
        faults = [Fault.slow(HOLD_S, operation=operation)]
        if answer_lost:
            faults.insert(0, Fault.lost_answer(operation=operation))
        self.fake.call(lambda: self.fake.world.faults(api, EMAIL).add(*faults))

    def held(self, api: str) -> bool:
        """True once the held request has arrived at the fake (its fault was taken)."""
        return self.fake.call(lambda: not self.fake.world.faults(api, EMAIL).script)


def kill(st: SkyTwinProcess) -> None:
    """SIGKILL, and make sure the process is gone."""
    st.signal(signal.SIGKILL)
    assert st.wait_exit(timeout=5) == -signal.SIGKILL


def approve_in_thread(
    rig: Rig, st: SkyTwinProcess, approval_id: int
) -> tuple[threading.Thread, list[httpx.Response]]:
    """POST …/respond (approve) from a thread: it waits for the execution up to respond_wait_s."""
    answers: list[httpx.Response] = []

    def approve() -> None:
        answers.append(
            rig.api(st, "POST", f"/api/approvals/{approval_id}/respond", json={"action": "approve"})
        )

    thread = threading.Thread(target=approve)
    thread.start()
    return thread, answers


@pytest.mark.parametrize(
    "answer_lost", [False, True], ids=["before_google_handled_it", "answer_lost"]
)
def test_killed_between_claim_and_result_the_action_takes_effect_once(
    tmp_path: Path, database_url: str, fake: FakeGoogleThread, answer_lost: bool
) -> None:
    rig = Rig(tmp_path, database_url, fake)
    world = fake.world
    message_id, event_id = fake.call(
        lambda: (next(iter(world.account(EMAIL).messages)), next(iter(world.account(EMAIL).events)))
    )
    rig.hold("gmail", MODIFY, answer_lost=answer_lost)
    rig.hold("calendar", PATCH, answer_lost=answer_lost)

    # ---- first life: both proposals approved; killed with the archive in flight ----
    st = rig.start()
    try:

        def proposals() -> dict[str, dict[str, Any]] | None:
            items = rig.api(st, "GET", "/api/approvals/pending").json()["approvals"]
            found = {a["action"]: a for a in items}
            return found if {"gmail.archive", "calendar.respond"} <= set(found) else None

        pending = wait_for(proposals, timeout=20)
        assert pending["gmail.archive"]["params"] == {"messageId": message_id}
        assert pending["calendar.respond"]["params"] == {
            "eventId": event_id,
            "response": "accepted",
        }
        archive_thread, archive_answer = approve_in_thread(rig, st, pending["gmail.archive"]["id"])
        wait_for(lambda: "gmail.archive" in rig.executions(), timeout=10)
        # Approved second: its execution comes after the archive's in the outbox.
        invite_thread, invite_answer = approve_in_thread(rig, st, pending["calendar.respond"]["id"])
        archive_thread.join(timeout=20)
        invite_thread.join(timeout=20)
        for answer in (archive_answer[0], invite_answer[0]):
            assert answer.status_code == 202, answer.text
            assert (
                answer.headers["location"] == f"/api/executions/{answer.json()['execution']['id']}"
            )
        assert archive_answer[0].json()["execution"]["status"] == "running"
        assert invite_answer[0].json()["execution"]["status"] == "pending"

        def archive_in_flight() -> bool:
            row = rig.executions()["gmail.archive"]
            return (
                row["status"] == "running" and row["attempted_at"] is not None and rig.held("gmail")
            )

        wait_for(archive_in_flight, timeout=10)
        assert rig.calls(MODIFY, message_id) == (1 if answer_lost else 0)
        kill(st)
    finally:
        st.stop()

    # The held request ended with its client: Google will never handle it.
    lost = [(0, "dropped")] if answer_lost else []
    wait_for(lambda: rig.requests(MODIFY) == [*lost, (0, "client-gone")], timeout=10)
    rows = rig.executions()
    assert (rows["gmail.archive"]["status"], rows["gmail.archive"]["attempts"]) == ("running", 1)
    assert (rows["calendar.respond"]["status"], rows["calendar.respond"]["attempts"]) == (
        "pending",
        0,
    )

    # ---- second life: the archive is settled; killed with the invite's answer in flight ----
    st = rig.start()
    try:
        wait_for(lambda: rig.executions()["gmail.archive"]["status"] == "succeeded", timeout=20)

        def invite_in_flight() -> bool:
            row = rig.executions()["calendar.respond"]
            return (
                row["status"] == "running"
                and row["attempted_at"] is not None
                and rig.held("calendar")
            )

        wait_for(invite_in_flight, timeout=10)
        assert rig.calls(PATCH, event_id) == (1 if answer_lost else 0)
        kill(st)
    finally:
        st.stop()

    wait_for(lambda: rig.requests(PATCH) == [*lost, (0, "client-gone")], timeout=10)
    assert rig.executions()["calendar.respond"]["status"] == "running"

    # ---- third life: the invite is settled ----
    st = rig.start()
    try:
        wait_for(lambda: rig.executions()["calendar.respond"]["status"] == "succeeded", timeout=20)
        # The 202's Location tells the client how it ended.
        for answer in (archive_answer[0], invite_answer[0]):
            final = rig.api(st, "GET", answer.headers["location"])
            assert final.status_code == 200 and final.json()["status"] == "succeeded"
        st.signal(signal.SIGTERM)
        assert st.wait_exit(timeout=10) == 0
    finally:
        st.stop()

    # Exactly one modify and one patch took effect, and the effects are there.
    assert rig.calls(MODIFY, message_id) == 1
    assert rig.calls(PATCH, event_id) == 1
    handled = [] if answer_lost else [(200, "")]
    assert rig.requests(MODIFY) == [*lost, (0, "client-gone"), *handled]
    assert rig.requests(PATCH) == [*lost, (0, "client-gone"), *handled]
    labels = fake.call(lambda: list(world.account(EMAIL).messages[message_id].labels))
    assert "INBOX" not in labels
    attendees = fake.call(world.event, EMAIL, event_id)["attendees"]
    assert [a["responseStatus"] for a in attendees if a.get("self")] == ["accepted"]

    rows = rig.executions()
    archive, invite = rows["gmail.archive"], rows["calendar.respond"]
    assert (archive["status"], invite["status"]) == ("succeeded", "succeeded")
    if answer_lost:
        # Recovery found the message archived and settled it without asking again.
        assert archive["attempts"] == 1 and archive["result"]["recovered"] is True
    else:
        # Recovery found it still in the inbox and handed it back to the queue.
        assert archive["attempts"] == 2 and "INBOX" not in archive["result"]["labels"]
    # An invite's answer is checked by reading the event: re-run, it sends no second patch.
    assert invite["attempts"] == 2
    assert invite["result"] == {"eventId": event_id, "response": "accepted"}
    assert fake.world.errors == []
