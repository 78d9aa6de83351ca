"""Calendar API v3 handlers: events.list (full and incremental), events.get, events.patch.

Shapes follow `calendar.v3.json`. Sync tokens name a point in the calendar's
change sequence (and a generation, so tests can invalidate them: 410). Pages
walk that sequence by key, so changes during a listing never skip an event:
a version written after the listing began is left to the next sync.
"""

from __future__ import annotations

import bisect
from datetime import UTC, date, datetime
from typing import Any

from skytwin.fakegoogle.protocol import (
    ApiError,
    ApiRequest,
    ApiResponse,
    decode_page_token,
    encode_page_token,
    parse_rfc3339,
)
from skytwin.fakegoogle.world import Account, CalendarEvent, World, rfc3339

CALENDAR_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/calendar",
        "https://www.googleapis.com/auth/calendar.events",
    }
)
# Google answers 400 when these come with a syncToken.
NOT_WITH_SYNC_TOKEN = (
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
)
RESPONSE_STATUSES = frozenset({"needsAction", "declined", "tentative", "accepted"})
SEND_UPDATES = frozenset({"all", "externalOnly", "none"})
PATCHABLE = frozenset({"summary", "description", "location", "start", "end", "status", "attendees"})


def _calendar(request: ApiRequest) -> Account:
    """The account whose primary calendar the request names."""
    account = request.account
    grant = request.grant
    assert account is not None and grant is not None  # the app authenticated the request
    calendar_id = request.params["calendarId"]
    if calendar_id != "primary" and calendar_id.lower() != account.email:
        raise ApiError(404, "Not Found")
    if not grant.scopes & CALENDAR_SCOPES:
        raise ApiError(
            403, "Request had insufficient authentication scopes.", reason="insufficientPermissions"
        )
    return account


def _bound(value: dict[str, str]) -> datetime:
    if "dateTime" in value:
        return datetime.fromisoformat(value["dateTime"])
    return datetime.combine(date.fromisoformat(value["date"]), datetime.min.time(), UTC)


def _render(event: CalendarEvent) -> dict[str, Any]:
    resource = event.resource
    if resource.get("status") == "cancelled":
        # Deleted events come back bare, without start, end or organizer.
        return {
            "kind": "calendar#event",
            "etag": resource["etag"],
            "id": event.id,
            "status": "cancelled",
        }
    return dict(resource)


def _events_page(
    account: Account, request: ApiRequest, *, since: int, snapshot: int, after: int
) -> tuple[list[CalendarEvent], int | None]:
    """Current versions with since < seq <= snapshot, from `after` on; and the next key."""
    incremental = request.arg("syncToken") is not None
    show_deleted = incremental or request.bool_arg("showDeleted")
    time_min = request.arg("timeMin")
    time_max = request.arg("timeMax")
    low = parse_rfc3339(time_min, "timeMin") if time_min else None
    high = parse_rfc3339(time_max, "timeMax") if time_max else None
    text = (request.arg("q") or "").lower()
    limit = request.int_arg("maxResults", 250, low=1, high=2500)
    log = account.event_log
    index = bisect.bisect_right(log, (max(since, after), "\uffff"))
    found: list[CalendarEvent] = []
    while index < len(log):
        seq, event_id = log[index]
        index += 1
        if seq > snapshot:
            break
        event = account.events[event_id]
        if event.seq != seq:
            continue  # an older version; the current one comes later in the log
        resource = event.resource
        if resource.get("status") == "cancelled":
            if show_deleted:
                found.append(event)
        elif (
            (low is None or _bound(resource["end"]) > low)
            and (high is None or _bound(resource["start"]) < high)
            and text in str(resource.get("summary", "")).lower()
        ):
            found.append(event)
        if len(found) == limit:
            more = index < len(log) and log[index][0] <= snapshot
            return found, seq if more else None
    return found, None


def list_events(world: World, request: ApiRequest) -> ApiResponse:
    """events.list: a window (full sync) or the changes since a syncToken (incremental)."""
    account = _calendar(request)
    sync_token = request.arg("syncToken")
    if sync_token is not None:
        clash = [name for name in NOT_WITH_SYNC_TOKEN if name in request.query]
        if clash:
            raise ApiError(
                400, f"Sync token cannot be used with {', '.join(clash)}", reason="invalid"
            )
        generation, since_raw = decode_page_token(sync_token, "syncToken")
        if int(generation) != account.sync_generation:
            raise ApiError(
                410,
                "Sync token is no longer valid, a full sync is required.",
                reason="fullSyncRequired",
            )
        since = int(since_raw)
    else:
        since = 0
    order_by = request.arg("orderBy")
    if order_by not in (None, "startTime", "updated"):
        raise ApiError(400, f"Invalid value for orderBy: {order_by}", reason="invalid")
    if order_by == "startTime" and not request.bool_arg("singleEvents"):
        raise ApiError(
            400,
            "The requested ordering is not available for the particular query.",
            reason="invalid",
        )
    snapshot, after = account.calendar_seq, since
    page_token = request.arg("pageToken")
    if page_token is not None:
        snapshot_raw, after_raw = decode_page_token(page_token)
        snapshot, after = int(snapshot_raw), int(after_raw)
    events, next_key = _events_page(account, request, since=since, snapshot=snapshot, after=after)
    if order_by == "startTime":
        events.sort(key=lambda e: (_bound(e.resource["start"]), e.id))
    body: dict[str, Any] = {
        "kind": "calendar#events",
        "etag": f'"{account.calendar_seq:016d}"',
        "summary": account.email,
        "updated": rfc3339(world.now()),
        "timeZone": "UTC",
        "accessRole": "owner",
        "defaultReminders": [],
        "items": [_render(event) for event in events],
    }
    if next_key is not None:
        body["nextPageToken"] = encode_page_token(snapshot, next_key)
    else:
        body["nextSyncToken"] = encode_page_token(account.sync_generation, snapshot)
    return ApiResponse(200, body)


def _event(account: Account, request: ApiRequest) -> CalendarEvent:
    event = account.events.get(request.params["eventId"])
    if event is None:
        raise ApiError(404, "Not Found")
    return event


def get_event(world: World, request: ApiRequest) -> ApiResponse:
    """events.get: the full resource, also for a cancelled event."""
    account = _calendar(request)
    return ApiResponse(200, dict(_event(account, request).resource))


def _check_attendee_patch(account: Account, current: dict[str, Any], body: dict[str, Any]) -> None:
    """A guest may only change its own answer; the guest list must come back whole."""
    if set(body) - {"attendees"}:
        raise ApiError(403, "Only the organizer can change this event.", reason="forbidden")
    old = {a["email"]: a for a in current.get("attendees", [])}
    new = body["attendees"]
    if {a.get("email") for a in new} != set(old):
        raise ApiError(403, "A guest cannot change the guest list.", reason="forbidden")
    for attendee in new:
        if attendee["email"] != account.email and attendee != old[attendee["email"]]:
            raise ApiError(403, "A guest can only answer for itself.", reason="forbidden")


def patch_event(world: World, request: ApiRequest) -> ApiResponse:
    """events.patch: merge fields; an invited guest may only answer for itself."""
    account = _calendar(request)
    event = _event(account, request)
    send_updates = request.arg("sendUpdates")
    if send_updates is not None and send_updates not in SEND_UPDATES:
        raise ApiError(400, f"Invalid value for sendUpdates: {send_updates}", reason="invalid")
    body = request.json()
    unknown = set(body) - PATCHABLE
    if unknown:
        raise ApiError(400, f"The fake cannot patch {sorted(unknown)}", reason="invalid")
    attendees = body.get("attendees")
    if attendees is not None:
        if not isinstance(attendees, list) or not all(
            isinstance(a, dict) and isinstance(a.get("email"), str) for a in attendees
        ):
            raise ApiError(400, "Invalid attendees", reason="invalid")
        for attendee in attendees:
            if attendee.get("responseStatus", "needsAction") not in RESPONSE_STATUSES:
                raise ApiError(400, "Invalid responseStatus", reason="invalid")
    if not event.resource.get("organizer", {}).get("self"):
        _check_attendee_patch(account, event.resource, body)
    updated = world.patch_event(account, event.id, body)
    return ApiResponse(200, dict(updated.resource))
