"""Signals: what the connectors make of Google's mail and events (pure functions, no I/O).

The rules are the reference system's: email type by first matching keyword,
calendar type by the account's own answer, and conflicts between timed events
that overlap (back-to-back is fine; all-day and cancelled events never conflict).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Signal:
    """One observed fact about a user's mail or calendar; unique on (source, external_id)."""

    source: str  # "gmail" | "calendar"
    type: str
    external_id: str
    occurred_at: datetime  # tz-aware UTC
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SyncResult:
    """A sync's signals and the cursor to store with them, in the same transaction."""

    signals: tuple[Signal, ...]
    cursor: str
    full_sync: bool


# ---- email ----

# First match wins; keywords are matched on the lower-cased subject and sender.
_EMAIL_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("subscription_renewal", ("subscription", "renewal", "billing")),
    ("meeting_invite", ("meeting", "invite", "calendar")),
    ("grocery_reorder", ("order", "delivery", "grocery")),
    ("travel_alert", ("flight", "hotel", "travel", "booking")),
)


def classify_email(subject: str, sender: str, labels: Iterable[str]) -> str:
    """The email's signal type, by the reference's rules (first match wins)."""
    text = f"{subject} {sender}".lower()
    sender = sender.lower()
    label_text = " ".join(labels).lower()
    if "promotions" in label_text or "newsletter" in text or "digest" in text:
        return "newsletter"
    for kind, words in _EMAIL_RULES:
        if any(word in text for word in words):
            return kind
    if "noreply" in sender or "no-reply" in sender or "updates" in label_text:
        return "notification"
    return "work_email"


def _header(message: Mapping[str, Any], name: str) -> str:
    for header in (message.get("payload") or {}).get("headers") or []:
        if str(header.get("name", "")).lower() == name:
            return str(header.get("value", ""))
    return ""


def _received_at(message: Mapping[str, Any], fallback: datetime) -> datetime:
    internal = message.get("internalDate")
    if internal is not None:
        try:
            return datetime.fromtimestamp(int(internal) / 1000, UTC)
        except (TypeError, ValueError, OverflowError):
            pass
    try:
        return parsedate_to_datetime(_header(message, "date")).astimezone(UTC)
    except (TypeError, ValueError, IndexError):
        return fallback


def gmail_signal(message: Mapping[str, Any], *, observed_at: datetime) -> Signal:
    """The signal for a `users.messages.get(format=metadata)` resource."""
    subject = _header(message, "subject")
    sender = _header(message, "from")
    labels = [str(label) for label in message.get("labelIds") or []]
    received = _received_at(message, observed_at)
    return Signal(
        source="gmail",
        type=classify_email(subject, sender, labels),
        external_id=str(message["id"]),
        occurred_at=received,
        data={
            "messageId": str(message["id"]),
            "threadId": str(message.get("threadId", "")),
            "from": sender,
            "subject": subject,
            "snippet": str(message.get("snippet", "")),
            "labels": labels,
            "receivedAt": received.isoformat(),
        },
    )


# ---- calendar ----


def event_bound(value: Mapping[str, Any] | None) -> datetime | date | None:
    """An event's start or end: aware UTC datetime when timed, a date when all-day."""
    if not value:
        return None
    try:
        if "dateTime" in value:
            moment = datetime.fromisoformat(str(value["dateTime"]))
            if moment.tzinfo is None:  # Google always sends an offset; be safe anyway
                moment = moment.replace(tzinfo=UTC)
            return moment.astimezone(UTC)
        if "date" in value:
            return date.fromisoformat(str(value["date"]))
    except ValueError:
        return None
    return None


def _timed_span(event: Mapping[str, Any]) -> tuple[datetime, datetime] | None:
    """(start, end) of a timed, live event; None for all-day, cancelled or malformed ones."""
    if event.get("status") == "cancelled":
        return None
    start, end = event_bound(event.get("start")), event_bound(event.get("end"))
    if isinstance(start, datetime) and isinstance(end, datetime):
        return start, end
    return None


def find_conflicts(events: Iterable[Mapping[str, Any]]) -> set[str]:
    """Ids of timed events that overlap another: one starts before the other ends."""
    spans = sorted(
        (span[0], span[1], str(event["id"]))
        for event in events
        if (span := _timed_span(event)) is not None
    )
    conflicting: set[str] = set()
    for i, (start, end, event_id) in enumerate(spans):
        # Sorted by start: only later events that start before this one ends can overlap it.
        for later_start, later_end, later_id in spans[i + 1 :]:
            if later_start >= end:
                break
            if start < later_end and later_id != event_id:
                conflicting.update((event_id, later_id))
    return conflicting


def own_attendee(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The account's own entry in the attendee list (`self: true`), if it is invited."""
    for attendee in event.get("attendees") or []:
        if attendee.get("self"):
            return attendee  # type: ignore[no-any-return]
    return None


def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_updated(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)).astimezone(UTC)
    except ValueError:
        return None


def calendar_signal(
    event: Mapping[str, Any], *, has_conflict: bool, observed_at: datetime
) -> Signal:
    """The signal for one version of an event; cancelled ones arrive bare and are fine."""
    event_id = str(event["id"])
    updated = event.get("updated")
    # A deleted event may come without `updated`; its etag still names the version.
    version = str(updated or str(event.get("etag", "")).strip('"') or "0")
    status = str(event.get("status", "confirmed"))
    own = own_attendee(event)
    response = str(own["responseStatus"]) if own and "responseStatus" in own else None
    requires_response = status != "cancelled" and response == "needsAction"
    organizer = event.get("organizer") or {}
    attendees = [
        {"email": str(a.get("email", "")), "responseStatus": a.get("responseStatus")}
        for a in event.get("attendees") or []
    ]
    return Signal(
        source="calendar",
        type="meeting_invite" if requires_response else "calendar_event",
        external_id=f"{event_id}:{version}",
        occurred_at=(_parse_updated(updated) if updated else None) or observed_at,
        data={
            "eventId": event_id,
            "title": str(event.get("summary", "")),
            "startTime": _iso(event_bound(event.get("start"))),
            "endTime": _iso(event_bound(event.get("end"))),
            "organizer": organizer.get("email"),
            "attendees": attendees,
            "status": status,
            "responseStatus": response,
            "hasConflict": has_conflict,
            "requiresResponse": requires_response,
            "htmlLink": event.get("htmlLink"),
        },
    )
