"""Google Calendar: incremental sync with a sync token, full sync of a window, invite answers.

`sync_calendar` lists the primary calendar's events with `singleEvents=true`
(recurring events as instances). With a sync token it sends none of the
parameters Google rejects beside one (timeMin, timeMax, orderBy, q, ...);
a 410 drops the token and lists the window instead. It never persists
anything: the caller commits the signals and the new token together.

Conflicts need the neighbours of a changed event, which an incremental
listing does not contain, so an incremental sync with changed timed events
makes one more (paginated) listing of the span they cover.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

import structlog

from skytwin.connectors.api import AccessTokens, GoogleApi, call_api
from skytwin.connectors.errors import ActionNotApplicable, PermanentApiError, SyncTokenGone
from skytwin.connectors.oauth import utc_now
from skytwin.connectors.signals import (
    Signal,
    SyncResult,
    calendar_signal,
    event_bound,
    find_conflicts,
    own_attendee,
)

DEFAULT_PAST_DAYS = 1
DEFAULT_FUTURE_DAYS = 30
PAGE_SIZE = 250  # Google's default page; it allows up to 2500
InviteResponse = Literal["accepted", "declined", "tentative"]
RESPONSES: frozenset[str] = frozenset({"accepted", "declined", "tentative"})

log = structlog.get_logger("skytwin.connectors.calendar")


def rfc3339(moment: datetime) -> str:
    """A UTC timestamp as Google wants it in timeMin/timeMax."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _events_path(calendar_id: str, event_id: str | None = None) -> str:
    path = f"/calendars/{quote(calendar_id, safe='@')}/events"
    return path if event_id is None else f"{path}/{quote(event_id, safe='')}"


# ---- sync ----


async def sync_calendar(
    api: GoogleApi,
    tokens: AccessTokens,
    cursor: str | None,
    *,
    calendar_id: str = "primary",
    past_days: int = DEFAULT_PAST_DAYS,
    future_days: int = DEFAULT_FUTURE_DAYS,
    page_size: int = PAGE_SIZE,
    now: Callable[[], datetime] = utc_now,
) -> SyncResult:
    """Signals for events changed since `cursor` (a sync token), and the token to store next."""
    observed_at = now()
    if cursor is not None:
        try:
            changed, sync_token = await _list_events(
                api, tokens, calendar_id, [("syncToken", cursor)], page_size
            )
        except SyncTokenGone:
            log.info("skytwin.calendar_sync_token_gone")
        else:
            neighbours = await _neighbours(api, tokens, calendar_id, changed, page_size)
            signals = _signals(changed, neighbours, observed_at)
            return SyncResult(signals, _require(sync_token), full_sync=False)

    window = [
        ("timeMin", rfc3339(observed_at - timedelta(days=past_days))),
        ("timeMax", rfc3339(observed_at + timedelta(days=future_days))),
    ]
    events, sync_token = await _list_events(api, tokens, calendar_id, window, page_size)
    signals = _signals(events, events, observed_at)
    log.info("skytwin.calendar_full_sync", events=len(events), signals=len(signals))
    return SyncResult(signals, _require(sync_token), full_sync=True)


def _require(sync_token: str | None) -> str:
    if sync_token is None:
        raise PermanentApiError(200, "missing_sync_token", "events.list ended without one")
    return sync_token


async def _list_events(
    api: GoogleApi,
    tokens: AccessTokens,
    calendar_id: str,
    query: list[tuple[str, str]],
    page_size: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """Every page of one events.list query: the events (latest version each) and nextSyncToken."""
    events: dict[str, dict[str, Any]] = {}
    page_token: str | None = None
    while True:
        params = [*query, ("singleEvents", "true"), ("maxResults", str(page_size))]
        if page_token is not None:
            params.append(("pageToken", page_token))
        try:
            page = await call_api(
                api,
                tokens,
                "GET",
                _events_path(calendar_id),
                params=params,
                operation="calendar.events.list",
            )
        except PermanentApiError as exc:
            if exc.status == 410:
                raise SyncTokenGone("calendar sync token no longer valid") from exc
            raise
        for item in page.get("items") or ():
            if isinstance(item, dict) and item.get("id"):
                events[str(item["id"])] = item
        page_token = page.get("nextPageToken")
        if not page_token:
            return list(events.values()), page.get("nextSyncToken")


async def _neighbours(
    api: GoogleApi,
    tokens: AccessTokens,
    calendar_id: str,
    changed: Iterable[Mapping[str, Any]],
    page_size: int,
) -> list[dict[str, Any]]:
    """The live events overlapping the span of the changed timed events (for conflicts)."""
    starts: list[datetime] = []
    ends: list[datetime] = []
    for event in changed:
        if event.get("status") == "cancelled":
            continue
        start, end = event_bound(event.get("start")), event_bound(event.get("end"))
        if isinstance(start, datetime) and isinstance(end, datetime):
            starts.append(start)
            ends.append(end)
    if not starts:
        return []
    window = [("timeMin", rfc3339(min(starts))), ("timeMax", rfc3339(max(ends)))]
    events, _ = await _list_events(api, tokens, calendar_id, window, page_size)
    return events


def _signals(
    changed: list[dict[str, Any]],
    neighbours: list[dict[str, Any]],
    observed_at: datetime,
) -> tuple[Signal, ...]:
    # The changed versions win over what the neighbour listing saw of the same events.
    everything = {str(e["id"]): e for e in neighbours}
    everything.update((str(e["id"]), e) for e in changed)
    conflicts = find_conflicts(everything.values())
    signals = [
        calendar_signal(e, has_conflict=str(e["id"]) in conflicts, observed_at=observed_at)
        for e in changed
    ]
    return tuple(sorted(signals, key=lambda s: (s.occurred_at, s.external_id)))


# ---- actions ----


async def respond_to_invite(
    api: GoogleApi,
    tokens: AccessTokens,
    event_id: str,
    response: InviteResponse,
    *,
    calendar_id: str = "primary",
    send_updates: Literal["all", "externalOnly", "none"] = "all",
) -> dict[str, Any]:
    """Answer an invite on the account's own attendee entry; a repeated answer is a no-op.

    events.patch replaces the whole attendee list, so the current list is read
    first and sent back with only our own `responseStatus` changed.
    """
    if response not in RESPONSES:
        raise ValueError(f"response must be one of {sorted(RESPONSES)}, not {response!r}")
    path = _events_path(calendar_id, event_id)
    event = await call_api(api, tokens, "GET", path, operation="calendar.events.get")
    if event.get("status") == "cancelled":
        raise ActionNotApplicable("event_cancelled", f"event {event_id}")
    own = own_attendee(event)
    if own is None:
        raise ActionNotApplicable("not_an_attendee", f"event {event_id}")
    if own.get("responseStatus") == response:
        return event  # already answered so: no second notification to the organizer
    attendees = [
        {**attendee, "responseStatus": response} if attendee.get("self") else attendee
        for attendee in event.get("attendees") or ()
    ]
    return await call_api(
        api,
        tokens,
        "PATCH",
        path,
        params={"sendUpdates": send_updates},
        body={"attendees": attendees},
        operation="calendar.events.patch",
    )
