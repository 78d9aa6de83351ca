"""Every fault Google can throw at a sync: same signals as a fault-free run, or a clear error.

Each case builds the same account twice: once fault-free (the baseline) and
once with the fault planned. The wall clock of both worlds is frozen, so
signals compare exactly; trio's virtual clock still runs, so the retry
schedule is read off the fake's request log to the exact second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime

import pytest
import trio
from trio.testing import MockClock

from skytwin.connectors.calendar import respond_to_invite, sync_calendar
from skytwin.connectors.errors import (
    GoogleUnavailable,
    NeedsReauthorization,
    PermanentApiError,
)
from skytwin.connectors.gmail import archive_message, sync_gmail
from skytwin.connectors.oauth import StoredTokens
from skytwin.connectors.signals import SyncResult
from skytwin.fakegoogle import Fault, World
from skytwin.nursery import RetryBudget, RetryPolicy
from tests.fakegoogle.harness import CONNECTION_ID, EMAIL, EPOCH, READ_TIMEOUT_S, Rig, rig_for

PROFILE = "gmail.users.getProfile"
MESSAGES = "gmail.users.messages.list"
GET = "gmail.users.messages.get"
EVENTS = "calendar.events.list"


def frozen_now() -> datetime:
    """The wall clock of these tests: it never moves, so both runs see the same dates."""
    return EPOCH


def populate(world: World) -> dict[str, str]:
    """The same mailbox and calendar for every run; returns a few ids by name."""
    world.add_account(EMAIL)
    ids = {
        "digest": world.add_message(EMAIL, sender="news@shop.com", subject="Weekly digest"),
        "boss": world.add_message(EMAIL, sender="Boss <boss@corp.com>", subject="Q1 plan"),
        "code": world.add_message(EMAIL, sender="no-reply@bank.com", subject="Your code"),
        "flight": world.add_message(EMAIL, sender="air@x.com", subject="Flight to Lisbon"),
    }
    hour = timedelta(hours=1)
    ids["invite"] = world.add_event(
        EMAIL,
        summary="Review",
        start=EPOCH + hour,
        end=EPOCH + 2 * hour,
        organizer="boss@corp.com",
        attendees=["eve@corp.com"],
    )
    ids["focus"] = world.add_event(
        EMAIL, summary="Focus", start=EPOCH + 1.5 * hour, end=EPOCH + 3 * hour
    )
    ids["lunch"] = world.add_event(
        EMAIL, summary="Lunch", start=EPOCH + 3 * hour, end=EPOCH + 4 * hour
    )
    world.add_event(EMAIL, summary="Offsite", start=EPOCH.date(), end=(EPOCH + 24 * hour).date())
    return ids


async def sync_both(rig: Rig) -> tuple[SyncResult, SyncResult]:
    """A first Gmail sync and a first calendar sync, as one poll cycle would run them."""
    gmail = await sync_gmail(rig.gmail(), rig.tokens(), None, now=frozen_now)
    calendar = await sync_calendar(rig.calendar(), rig.tokens(), None, now=frozen_now)
    return gmail, calendar


async def baseline() -> tuple[SyncResult, SyncResult]:
    """What a fault-free run of the same account returns."""
    world = World(now=frozen_now)
    populate(world)
    async with rig_for(world) as rig:
        rig.repository.put(CONNECTION_ID, _stored(world))
        return await sync_both(rig)


def _stored(world: World) -> StoredTokens:
    """A connection holding a fresh refresh token of the account."""
    return StoredTokens(refresh_token=world.issue_refresh_token(EMAIL))


@dataclass(frozen=True)
class Case:
    """One recoverable fault: how to plan it, which operation it hits, when attempts happen."""

    name: str
    plan: Callable[[World, dict[str, str]], None]
    operation: str
    times: list[float]
    resource: str | None = None


def script(api: str, *faults: Fault) -> Callable[[World, dict[str, str]], None]:
    """Plan faults for the account's `api`."""

    def plan(world: World, ids: dict[str, str]) -> None:
        world.faults(api, EMAIL).add(*faults)

    return plan


def down_until(api: str, until: float) -> Callable[[World, dict[str, str]], None]:
    """Make `api` answer 503 for everyone until virtual time `until`."""

    def plan(world: World, ids: dict[str, str]) -> None:
        world.faults(api).down_until = until

    return plan


def expired_token_on(name: str) -> Callable[[World, dict[str, str]], None]:
    """A 401 on the detail of one message (the access token died in between)."""

    def plan(world: World, ids: dict[str, str]) -> None:
        world.faults("gmail", EMAIL).add(Fault.error(401, operation=GET, resource=ids[name]))

    return plan


HTTP_DATE_IN_5_S = format_datetime(EPOCH + timedelta(seconds=5), usegmt=True)

CASES = [
    Case(
        "429 Retry-After seconds",
        script("gmail", Fault.error(429, retry_after="7", operation=MESSAGES)),
        MESSAGES,
        [0, 7],
    ),
    Case(
        "503 Retry-After HTTP-date",
        script("gmail", Fault.error(503, retry_after=HTTP_DATE_IN_5_S, operation=PROFILE)),
        PROFILE,
        [0, 5],
    ),
    Case(
        "500 three times",
        script("gmail", *[Fault.error(500, operation=PROFILE)] * 3),
        PROFILE,
        [0, 1, 3, 7],
    ),
    Case("502 and 504", script("calendar", Fault.error(502), Fault.error(504)), EVENTS, [0, 1, 3]),
    Case(
        "dropped connection", script("gmail", Fault.dropped(operation=MESSAGES)), MESSAGES, [0, 1]
    ),
    Case(
        "dropped calendar page",
        script("calendar", Fault.dropped(), Fault.dropped()),
        EVENTS,
        [0, 1, 3],
    ),
    Case(
        "slower than the read timeout",
        script("gmail", Fault.slow(3 * READ_TIMEOUT_S, operation=PROFILE)),
        PROFILE,
        [0, READ_TIMEOUT_S + 1],
    ),
    Case("slow but in time", script("calendar", Fault.slow(READ_TIMEOUT_S - 1)), EVENTS, [0]),
    Case(
        "token endpoint 503",
        script("oauth", Fault.error(503, retry_after="2")),
        "oauth.token",
        [0, 2],
    ),
    Case("expired access token (401)", expired_token_on("boss"), GET, [0, 0], resource="boss"),
    Case("gmail down until t=5", down_until("gmail", 5.0), PROFILE, [0, 1, 3, 7]),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_a_recoverable_fault_changes_nothing_but_timing(case: Case, clock: MockClock) -> None:
    expected = await baseline()
    world = World(now=frozen_now)
    ids = populate(world)
    case.plan(world, ids)
    async with rig_for(world) as rig:
        rig.repository.put(CONNECTION_ID, _stored(world))
        start = trio.current_time()
        got = await sync_both(rig)
    assert got == expected
    resource = ids[case.resource] if case.resource else None
    times = [
        r.at - start
        for r in world.requests(case.operation)
        if resource is None or r.resource == resource
    ]
    assert times == case.times
    assert world.errors == []


async def test_random_errors_everywhere_still_give_the_same_signals(clock: MockClock) -> None:
    expected = await baseline()
    world = World(now=frozen_now, seed=1234)
    populate(world)
    for api in ("gmail", "calendar", "oauth"):
        world.faults(api).error_rate = 0.3
    patient = RetryPolicy(attempts=40, base_delay_s=0.1, cap_s=1.0, jitter="none")
    async with rig_for(world, policy=patient) as rig:
        rig.repository.put(CONNECTION_ID, _stored(world))
        assert await sync_both(rig) == expected
    assert any(r.note == "fault" for r in world.log)


# ---- permanent faults: a clear typed error ----


async def test_retries_run_out_with_google_unavailable(rig: Rig, clock: MockClock) -> None:
    rig.world.faults("gmail", EMAIL).add(*[Fault.error(500, operation=PROFILE)] * 4)
    with pytest.raises(GoogleUnavailable) as caught:
        await sync_gmail(rig.gmail(), rig.tokens(), None)
    assert caught.value.status == 500 and caught.value.retryable is not None
    assert [r.at for r in rig.world.requests(PROFILE)] == [0, 1, 3, 7]


async def test_a_revoked_grant_is_needs_reauthorization(rig: Rig, clock: MockClock) -> None:
    rig.world.revoke(EMAIL)
    with pytest.raises(NeedsReauthorization):
        await sync_calendar(rig.calendar(), rig.tokens(), None)
    assert CONNECTION_ID in rig.repository.needs_reauth
    assert rig.world.requests(EVENTS) == []
    assert len(rig.world.requests("oauth.token")) == 1  # never retried


async def test_a_403_is_permanent_and_not_retried(rig: Rig, clock: MockClock) -> None:
    rig.world.faults("calendar", EMAIL).add(Fault.error(403))
    with pytest.raises(PermanentApiError) as caught:
        await sync_calendar(rig.calendar(), rig.tokens(), None)
    assert caught.value.status == 403
    assert len(rig.world.requests(EVENTS)) == 1


# ---- deadlines and budgets ----


async def test_no_retry_sleeps_past_the_callers_deadline(rig: Rig, clock: MockClock) -> None:
    rig.world.faults("gmail", EMAIL).add(*[Fault.error(500, operation=PROFILE)] * 3)
    with trio.fail_after(5):
        with pytest.raises(GoogleUnavailable):
            await sync_gmail(rig.gmail(), rig.tokens(), None)
    # Attempts at 0, 1 and 3; the next would start at 7, past the deadline: give up at 3.
    assert [r.at for r in rig.world.requests(PROFILE)] == [0, 1, 3]
    assert trio.current_time() == 3


async def test_a_deadline_cancels_the_request_in_flight(rig: Rig, clock: MockClock) -> None:
    rig.world.faults("gmail", EMAIL).add(Fault.slow(100, operation=PROFILE))
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(5):
            await sync_gmail(rig.gmail(), rig.tokens(), None)
    assert trio.current_time() == 5
    await trio.testing.wait_all_tasks_blocked()
    (record,) = rig.world.requests(PROFILE)  # cancelled, never retried
    assert record.note == "client-gone"


async def test_a_spent_retry_budget_fails_fast(rig: Rig, clock: MockClock) -> None:
    budget = RetryBudget("gmail", ratio=0.0, min_per_s=0.1, window_s=10.0)  # one retry per 10 s
    rig.world.faults("gmail", EMAIL).add(*[Fault.error(503, operation=PROFILE)] * 3)
    with pytest.raises(GoogleUnavailable):
        await sync_gmail(rig.gmail(budget), rig.tokens(), None)
    assert [r.at for r in rig.world.requests(PROFILE)] == [0, 1]


# ---- actions whose answer is lost: retried, and idempotent ----


async def test_actions_whose_answer_was_lost_are_retried_safely(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    message_id = world.add_message(EMAIL, sender="news@shop.com", subject="digest")
    start = EPOCH + timedelta(hours=1)
    event_id = world.add_event(
        EMAIL,
        summary="Review",
        start=start,
        end=start + timedelta(hours=1),
        organizer="boss@corp.com",
    )
    world.faults("gmail", EMAIL).add(Fault.lost_answer(operation="gmail.users.messages.modify"))
    world.faults("calendar", EMAIL).add(Fault.lost_answer(operation="calendar.events.patch"))

    assert await archive_message(rig.gmail(), rig.tokens(), message_id) == ["UNREAD"]
    answered = await respond_to_invite(rig.calendar(), rig.tokens(), event_id, "accepted")

    assert [r.status for r in world.requests("gmail.users.messages.modify")] == [0, 200]
    assert [r.status for r in world.requests("calendar.events.patch")] == [0, 200]
    # The retried patch changed nothing more: one new version, answered once.
    assert answered["updated"] == world.event(EMAIL, event_id)["updated"]
    assert world.account(EMAIL).calendar_seq == 2
