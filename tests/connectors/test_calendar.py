"""Calendar sync and invite answers against the fake over HTTP."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from trio.testing import MockClock

from skytwin.connectors.calendar import respond_to_invite, sync_calendar
from skytwin.connectors.errors import ActionNotApplicable
from skytwin.connectors.signals import Signal, SyncResult
from skytwin.fakegoogle import World
from tests.fakegoogle.harness import EMAIL, Rig, virtual_now

LIST = "calendar.events.list"
PATCH = "calendar.events.patch"
FORBIDDEN_WITH_SYNC_TOKEN = {"timeMin", "timeMax", "orderBy", "q", "updatedMin", "iCalUID"}


async def sync(rig: Rig, cursor: str | None, **kwargs: object) -> SyncResult:
    """One calendar sync of the rig's account."""
    return await sync_calendar(rig.calendar(), rig.tokens(), cursor, now=virtual_now, **kwargs)  # type: ignore[arg-type]


def at(hours: float) -> datetime:
    """A time `hours` from now (virtual)."""
    return virtual_now() + timedelta(hours=hours)


def meeting(world: World, summary: str, start_h: float, end_h: float, **kwargs: object) -> str:
    """Put a timed event on the calendar."""
    return world.add_event(EMAIL, summary=summary, start=at(start_h), end=at(end_h), **kwargs)  # type: ignore[arg-type]


def by_event(result: SyncResult) -> dict[str, Signal]:
    """A sync's signals by event id."""
    return {s.data["eventId"]: s for s in result.signals}


async def test_a_full_sync_lists_the_window_and_marks_conflicts(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    standup = meeting(world, "Standup", 1, 2)
    review = meeting(world, "Review", 1.5, 3, organizer="boss@corp.com", attendees=["eve@x.com"])
    lunch = meeting(world, "Lunch", 3, 4)  # back-to-back with the review
    holiday = world.add_event(EMAIL, summary="Holiday", start=at(24).date(), end=at(48).date())
    meeting(world, "Far away", 24 * 60, 24 * 60 + 1)
    meeting(world, "Long ago", -72, -71)

    result = await sync(rig, None)

    assert result.full_sync
    signals = by_event(result)
    assert set(signals) == {standup, review, lunch, holiday}
    assert signals[review].type == "meeting_invite"
    assert signals[review].data["requiresResponse"] is True
    assert {e for e, s in signals.items() if s.data["hasConflict"]} == {standup, review}
    assert signals[holiday].data["startTime"] == at(24).date().isoformat()
    query = world.requests(LIST)[0].query
    assert query["singleEvents"] == ["true"]
    assert query["timeMin"] == [(virtual_now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")]
    assert query["timeMax"] == [(virtual_now() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")]
    assert result.cursor


async def test_incremental_sync_sends_the_token_alone_and_finds_new_conflicts(
    rig: Rig, clock: MockClock
) -> None:
    world = rig.world
    focus = meeting(world, "Focus time", 1, 3)
    first = await sync(rig, None)
    clash = meeting(world, "Clash", 2, 4, organizer="boss@corp.com")

    second = await sync(rig, first.cursor)

    assert not second.full_sync
    assert list(by_event(second)) == [clash]
    assert by_event(second)[clash].data["hasConflict"] is True  # with Focus time, unchanged
    incremental, neighbours = world.requests(LIST)[1:]
    assert set(incremental.query) == {"syncToken", "singleEvents", "maxResults"}
    assert incremental.query["syncToken"] == [first.cursor]
    assert set(neighbours.query) >= {"timeMin", "timeMax"} and "syncToken" not in neighbours.query
    assert focus not in by_event(second)
    for record in world.requests(LIST):
        if "syncToken" in record.query:
            assert not FORBIDDEN_WITH_SYNC_TOKEN & set(record.query)


async def test_a_new_version_is_a_new_signal(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    event_id = meeting(world, "Planning", 1, 2)
    first = await sync(rig, None)
    world.update_event(EMAIL, event_id, summary="Planning (moved)", start=at(5), end=at(6))
    second = await sync(rig, first.cursor)
    old, new = first.signals[0], second.signals[0]
    assert old.data["eventId"] == new.data["eventId"] == event_id
    assert old.external_id != new.external_id
    assert new.external_id == f"{event_id}:{world.event(EMAIL, event_id)['updated']}"
    assert new.data["title"] == "Planning (moved)"


async def test_cancelled_events_arrive_bare_and_crash_nothing(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    doomed = meeting(world, "Doomed", 1, 2)
    other = meeting(world, "Other", 1, 2)
    first = await sync(rig, None)
    world.cancel_event(EMAIL, doomed)
    before = len(world.requests(LIST))

    second = await sync(rig, first.cursor)

    signal = by_event(second)[doomed]
    assert signal.data["status"] == "cancelled"
    assert signal.data["startTime"] is None and signal.data["hasConflict"] is False
    assert signal.occurred_at == virtual_now()
    # Only a cancellation changed: no timed events, so no neighbour listing.
    assert len(world.requests(LIST)) == before + 1
    third = await sync(rig, None)  # a full sync hides cancelled events
    assert set(by_event(third)) == {other}
    assert by_event(third)[other].data["hasConflict"] is False


async def test_a_gone_sync_token_means_a_full_sync(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    meeting(world, "A", 1, 2)
    first = await sync(rig, None)
    meeting(world, "B", 3, 4)
    world.invalidate_sync_tokens(EMAIL)

    result = await sync(rig, first.cursor)

    assert result.full_sync
    assert [r.status for r in world.requests(LIST)] == [200, 410, 200]
    assert len(result.signals) == 2
    assert result == await sync(rig, None)
    again = await sync(rig, result.cursor)
    assert (again.full_sync, again.signals) == (False, ())


async def test_every_page_is_followed(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    events = {meeting(world, f"m{n}", n, n + 0.5) for n in range(5)}
    first = await sync(rig, None, page_size=2)
    assert set(by_event(first)) == events
    assert len(world.requests(LIST)) == 3
    later = {meeting(world, f"n{n}", 10 + n, 10.5 + n) for n in range(3)}
    before = len(world.requests(LIST))
    second = await sync(rig, first.cursor, page_size=2)
    assert set(by_event(second)) == later
    assert len(world.requests(LIST)) - before == 2 + 2  # two sync pages, two neighbour pages


async def test_answering_an_invite_patches_only_our_entry(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    event_id = meeting(world, "Review", 1, 2, organizer="boss@corp.com", attendees=["eve@x.com"])
    calendar, tokens = rig.calendar(), rig.tokens()
    before = world.event(EMAIL, event_id)["attendees"]

    answered = await respond_to_invite(calendar, tokens, event_id, "accepted")

    mine = [a for a in answered["attendees"] if a.get("self")]
    assert mine == [{"email": EMAIL, "self": True, "responseStatus": "accepted"}]
    assert [a for a in answered["attendees"] if not a.get("self")] == [
        a for a in before if not a.get("self")
    ]
    patch = world.requests(PATCH)[0]
    assert patch.query == {"sendUpdates": ["all"]}
    assert set(json.loads(patch.body)) == {"attendees"}
    # The same answer again changes nothing and sends no second notification.
    await respond_to_invite(calendar, tokens, event_id, "accepted")
    assert world.calls[(PATCH, event_id)] == 1
    await respond_to_invite(calendar, tokens, event_id, "tentative")
    assert world.calls[(PATCH, event_id)] == 2


async def test_our_answer_shows_up_as_a_new_calendar_event_signal(
    rig: Rig, clock: MockClock
) -> None:
    world = rig.world
    event_id = meeting(world, "Review", 1, 2, organizer="boss@corp.com")
    first = await sync(rig, None)
    assert first.signals[0].type == "meeting_invite"
    await respond_to_invite(rig.calendar(), rig.tokens(), event_id, "declined")
    second = await sync(rig, first.cursor)
    assert second.signals[0].type == "calendar_event"
    assert second.signals[0].data["responseStatus"] == "declined"


async def test_invites_that_cannot_be_answered(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    own = meeting(world, "Mine", 1, 2)
    gone = meeting(world, "Gone", 1, 2, organizer="boss@corp.com")
    world.cancel_event(EMAIL, gone)
    calendar, tokens = rig.calendar(), rig.tokens()
    with pytest.raises(ActionNotApplicable) as caught:
        await respond_to_invite(calendar, tokens, own, "accepted")
    assert caught.value.reason == "not_an_attendee"
    with pytest.raises(ActionNotApplicable) as caught:
        await respond_to_invite(calendar, tokens, gone, "accepted")
    assert caught.value.reason == "event_cancelled"
    with pytest.raises(ValueError):
        await respond_to_invite(calendar, tokens, own, "maybe")  # type: ignore[arg-type]
    assert world.requests(PATCH) == []
