"""Every request the connectors send matches Google's discovery documents.

A busy scenario (first syncs, incremental syncs, the 404 and 410 fallbacks,
pagination, conflicts, every action) runs against the fake; then each logged
request is checked against gmail.v1.json / calendar.v3.json: HTTP method,
path template, parameter names, repeatability, enums and types, required
parameters, and the field names of JSON bodies.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from trio.testing import MockClock

from skytwin.connectors.calendar import respond_to_invite, sync_calendar
from skytwin.connectors.gmail import add_label_by_name, archive_message, mark_read, sync_gmail
from tests.fakegoogle import discovery
from tests.fakegoogle.harness import EMAIL, Rig, virtual_now

# The request body schema of each method that has one.
BODY_SCHEMAS = {
    "gmail.users.messages.modify": ("gmail", "ModifyMessageRequest"),
    "gmail.users.labels.create": ("gmail", "Label"),
    "calendar.events.patch": ("calendar", "Event"),
}


def schema_fields(api: str, name: str) -> set[str]:
    """The property names of a discovery schema."""
    document: dict[str, Any] = discovery._document(api)
    return set(document["schemas"][name]["properties"])


async def busy_scenario(rig: Rig) -> None:
    """Exercise every Google call the connectors can make."""
    world = rig.world
    gmail, calendar, tokens = rig.gmail(), rig.calendar(), rig.tokens()
    for n in range(3):
        world.add_message(EMAIL, sender=f"p{n}@x.com", subject=f"hello {n}")
    now = virtual_now()
    invite = world.add_event(
        EMAIL,
        summary="Review",
        start=now + timedelta(hours=1),
        end=now + timedelta(hours=2),
        organizer="boss@corp.com",
        attendees=["eve@x.com"],
    )
    mail = await sync_gmail(gmail, tokens, None, page_size=2, now=virtual_now)
    cal = await sync_calendar(calendar, tokens, None, page_size=2, now=virtual_now)
    message_id = world.add_message(EMAIL, sender="a@x.com", subject="new")
    world.add_event(
        EMAIL, summary="Clash", start=now + timedelta(hours=1.5), end=now + timedelta(hours=3)
    )
    mail = await sync_gmail(gmail, tokens, mail.cursor, page_size=2, now=virtual_now)
    cal = await sync_calendar(calendar, tokens, cal.cursor, page_size=2, now=virtual_now)
    world.expire_history(EMAIL)
    world.invalidate_sync_tokens(EMAIL)
    await sync_gmail(gmail, tokens, mail.cursor, now=virtual_now)
    await sync_calendar(calendar, tokens, cal.cursor, now=virtual_now)
    await archive_message(gmail, tokens, message_id)
    await mark_read(gmail, tokens, message_id)
    await add_label_by_name(gmail, tokens, message_id, "SkyTwin/Travel")
    await respond_to_invite(calendar, tokens, invite, "accepted")
    await respond_to_invite(calendar, tokens, invite, "declined", send_updates="none")


async def test_every_request_matches_the_discovery_documents(rig: Rig, clock: MockClock) -> None:
    await busy_scenario(rig)
    api_requests = [r for r in rig.world.log if r.api in ("gmail", "calendar")]
    used = {r.operation for r in api_requests}
    assert used == {
        "gmail.users.getProfile",
        "gmail.users.history.list",
        "gmail.users.messages.list",
        "gmail.users.messages.get",
        "gmail.users.messages.modify",
        "gmail.users.labels.list",
        "gmail.users.labels.create",
        "calendar.events.list",
        "calendar.events.get",
        "calendar.events.patch",
    }
    problems = [p for record in api_requests for p in discovery.problems(record)]
    assert problems == []
    for record in api_requests:
        if record.operation in BODY_SCHEMAS:
            body = json.loads(record.body)
            allowed = schema_fields(*BODY_SCHEMAS[record.operation])
            assert set(body) <= allowed, record.operation
            for attendee in body.get("attendees", []):
                assert set(attendee) <= schema_fields("calendar", "EventAttendee")


def test_the_checker_catches_what_google_would_reject() -> None:
    from skytwin.fakegoogle import RequestRecord

    bad = RequestRecord(
        at=0.0,
        method="GET",
        path="/gmail/v1/users/me/history",
        api="gmail",
        operation="gmail.users.history.list",
        account=EMAIL,
        resource=None,
        query={"historyTypes": ["messageAdded", "bogus"], "start": ["1"], "maxResults": ["ten"]},
        status=200,
    )
    found = discovery.problems(bad)
    assert any("'bogus' not in" in p for p in found)
    assert any("unknown query parameter 'start'" in p for p in found)
    assert any("maxResults='ten' is not an integer" in p for p in found)
    wrong_verb = RequestRecord(
        at=0.0,
        method="POST",
        path="/calendar/v3/calendars/primary/events/e1",
        api="calendar",
        operation="calendar.events.patch",
        account=EMAIL,
        resource="e1",
        query={},
        status=200,
    )
    assert discovery.problems(wrong_verb) == [
        "calendar.events.patch: method POST, discovery says PATCH"
    ]
