"""Signal rules: email classification, calendar types, conflicts, stable ids, bare cancellations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skytwin.connectors.signals import (
    calendar_signal,
    classify_email,
    find_conflicts,
    gmail_signal,
)

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("subject", "sender", "labels", "expected"),
    [
        ("Hello", "shop@x.com", ["CATEGORY_PROMOTIONS"], "newsletter"),
        ("The weekly Newsletter", "a@x.com", [], "newsletter"),
        ("Daily digest", "a@x.com", [], "newsletter"),
        ("Your subscription renewal", "billing@x.com", [], "subscription_renewal"),
        ("Billing problem", "a@x.com", [], "subscription_renewal"),
        # First match wins: a digest about billing is a newsletter.
        ("Billing digest", "a@x.com", [], "newsletter"),
        ("Meeting notes", "a@x.com", [], "meeting_invite"),
        ("Invitation: standup", "calendar-notification@google.com", [], "meeting_invite"),
        ("Your order has shipped", "a@x.com", [], "grocery_reorder"),
        ("Delivery window", "a@x.com", [], "grocery_reorder"),
        ("Grocery list", "a@x.com", [], "grocery_reorder"),
        ("Flight to Lisbon", "a@x.com", [], "travel_alert"),
        ("Hotel confirmation", "a@x.com", [], "travel_alert"),
        ("Booking ref ABC", "a@x.com", [], "travel_alert"),
        ("Your code", "noreply@x.com", [], "notification"),
        ("Your code", "No-Reply <no-reply@x.com>", [], "notification"),
        ("Repo activity", "a@x.com", ["CATEGORY_UPDATES"], "notification"),
        ("Q1 plan", "Boss <boss@corp.com>", ["INBOX"], "work_email"),
    ],
)
def test_email_classification(subject: str, sender: str, labels: list[str], expected: str) -> None:
    assert classify_email(subject, sender, labels) == expected


def timed(event_id: str, start_min: int, end_min: int, **extra: Any) -> dict[str, Any]:
    """A timed event from minute offsets after T0."""
    return {
        "id": event_id,
        "status": "confirmed",
        "start": {"dateTime": (T0 + timedelta(minutes=start_min)).isoformat()},
        "end": {"dateTime": (T0 + timedelta(minutes=end_min)).isoformat()},
        **extra,
    }


def test_conflicts_overlap_but_back_to_back_is_fine() -> None:
    events = [
        timed("a", 0, 60),
        timed("b", 30, 90),  # overlaps a
        timed("c", 90, 120),  # starts when b ends: fine
        timed("d", 200, 300),
        timed("e", 210, 220),  # inside d
    ]
    assert find_conflicts(events) == {"a", "b", "d", "e"}


def test_all_day_and_cancelled_events_never_conflict() -> None:
    events = [
        timed("a", 0, 60),
        {"id": "allday", "start": {"date": "2025-01-06"}, "end": {"date": "2025-01-07"}},
        timed("gone", 10, 20, status="cancelled"),
        {"id": "bare", "status": "cancelled"},
    ]
    assert find_conflicts(events) == set()


def test_offsets_are_compared_as_instants() -> None:
    paris = {"dateTime": "2025-01-06T10:30:00+01:00"}  # 09:30 UTC
    events = [
        timed("utc", 0, 60),
        {"id": "cet", "start": paris, "end": {"dateTime": "2025-01-06T11:00:00+01:00"}},
    ]
    assert find_conflicts(events) == {"utc", "cet"}


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 10), st.booleans()), max_size=12))
def test_conflicts_match_the_pairwise_definition(spans: list[tuple[int, int, bool]]) -> None:
    events = [
        timed(str(i), start, start + length, status="cancelled" if gone else "confirmed")
        for i, (start, length, gone) in enumerate(spans)
    ]
    live = [(str(i), s, s + n) for i, (s, n, gone) in enumerate(spans) if not gone]
    expected = {
        a
        for a, a_start, a_end in live
        for b, b_start, b_end in live
        if a != b and a_start < b_end and b_start < a_end
    }
    assert find_conflicts(events) == expected


def test_an_invite_waiting_for_an_answer_is_a_meeting_invite() -> None:
    event = timed(
        "ev1",
        0,
        30,
        updated="2025-01-05T08:00:00.000Z",
        summary="Design review",
        organizer={"email": "boss@corp.com"},
        htmlLink="https://calendar.example/ev1",
        attendees=[
            {"email": "boss@corp.com", "organizer": True, "responseStatus": "accepted"},
            {"email": "ada@example.com", "self": True, "responseStatus": "needsAction"},
        ],
    )
    signal = calendar_signal(event, has_conflict=True, observed_at=T0)
    assert signal.type == "meeting_invite"
    assert signal.external_id == "ev1:2025-01-05T08:00:00.000Z"
    assert signal.occurred_at == datetime(2025, 1, 5, 8, 0, tzinfo=UTC)
    assert signal.data == {
        "eventId": "ev1",
        "title": "Design review",
        "startTime": "2025-01-06T09:00:00+00:00",
        "endTime": "2025-01-06T09:30:00+00:00",
        "organizer": "boss@corp.com",
        "attendees": [
            {"email": "boss@corp.com", "responseStatus": "accepted"},
            {"email": "ada@example.com", "responseStatus": "needsAction"},
        ],
        "status": "confirmed",
        "responseStatus": "needsAction",
        "hasConflict": True,
        "requiresResponse": True,
        "htmlLink": "https://calendar.example/ev1",
    }


def test_an_answered_invite_or_own_event_is_a_calendar_event() -> None:
    answered = timed(
        "ev1",
        0,
        30,
        updated="2025-01-05T08:00:00Z",
        attendees=[{"email": "ada@example.com", "self": True, "responseStatus": "accepted"}],
    )
    own = timed("ev2", 0, 30, updated="2025-01-05T08:00:00Z")
    assert calendar_signal(answered, has_conflict=False, observed_at=T0).type == "calendar_event"
    assert calendar_signal(own, has_conflict=False, observed_at=T0).data["responseStatus"] is None


def test_a_bare_cancelled_event_makes_a_signal_without_crashing() -> None:
    bare = {
        "kind": "calendar#event",
        "etag": '"0000000000000042"',
        "id": "ev9",
        "status": "cancelled",
    }
    signal = calendar_signal(bare, has_conflict=False, observed_at=T0)
    assert signal.external_id == "ev9:0000000000000042"
    assert signal.type == "calendar_event"
    assert signal.occurred_at == T0
    assert signal.data["startTime"] is None and signal.data["organizer"] is None
    assert signal.data["status"] == "cancelled" and signal.data["requiresResponse"] is False


def test_an_all_day_event_keeps_its_dates() -> None:
    event = {
        "id": "hol",
        "updated": "2025-01-01T00:00:00Z",
        "start": {"date": "2025-01-06"},
        "end": {"date": "2025-01-07"},
    }
    data = calendar_signal(event, has_conflict=False, observed_at=T0).data
    assert (data["startTime"], data["endTime"]) == ("2025-01-06", "2025-01-07")


def test_gmail_signal_fields() -> None:
    message = {
        "id": "m1",
        "threadId": "t1",
        "labelIds": ["INBOX", "UNREAD"],
        "snippet": "Hi there",
        "internalDate": str(int(T0.timestamp() * 1000)),
        "payload": {
            "headers": [
                {"name": "From", "value": "Boss <boss@corp.com>"},
                {"name": "SUBJECT", "value": "Q1 plan"},
            ]
        },
    }
    signal = gmail_signal(message, observed_at=T0 + timedelta(days=1))
    assert (signal.source, signal.type, signal.external_id) == ("gmail", "work_email", "m1")
    assert signal.occurred_at == T0
    assert signal.data == {
        "messageId": "m1",
        "threadId": "t1",
        "from": "Boss <boss@corp.com>",
        "subject": "Q1 plan",
        "snippet": "Hi there",
        "labels": ["INBOX", "UNREAD"],
        "receivedAt": "2025-01-06T09:00:00+00:00",
    }


def test_gmail_signal_falls_back_to_the_date_header() -> None:
    message = {
        "id": "m2",
        "payload": {"headers": [{"name": "Date", "value": "Mon, 06 Jan 2025 10:00:00 +0100"}]},
    }
    assert gmail_signal(message, observed_at=T0).occurred_at == T0
