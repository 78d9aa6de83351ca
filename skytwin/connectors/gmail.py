"""Gmail: incremental sync from a history id, full sync of a recent window, and label actions.

`sync_gmail` never persists anything: it returns the signals and the cursor
(a history id) for the caller to commit in one transaction. The full sync
reads the current history id *before* listing messages, so mail arriving
during the listing is picked up by the next incremental sync (at worst twice;
signals are unique on their message id, so twice is harmless).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import structlog
import trio

from skytwin.connectors.api import AccessTokens, GoogleApi, call_api
from skytwin.connectors.errors import (
    ConnectorError,
    HistoryTooOld,
    NotFound,
    PermanentApiError,
)
from skytwin.connectors.oauth import utc_now
from skytwin.connectors.signals import Signal, SyncResult, gmail_signal

DEFAULT_WINDOW_DAYS = 7
DEFAULT_CONCURRENCY = 8
METADATA_HEADERS = ("From", "Subject", "Date")
PAGE_SIZE = 500  # the most Gmail returns per page
# Not mail that came in: the user's drafts, their own outgoing mail, spam and trash.
_SKIP_LABELS = frozenset({"DRAFT", "SPAM", "TRASH"})

log = structlog.get_logger("skytwin.connectors.gmail")


def _user_path(user_id: str, suffix: str) -> str:
    return f"/users/{quote(user_id, safe='@')}{suffix}"


def is_incoming(message: dict[str, Any]) -> bool:
    """Whether a message is mail the user received (not a draft, sent-only, spam or trash)."""
    labels = set(message.get("labelIds") or ())
    if labels & _SKIP_LABELS:
        return False
    return not ("SENT" in labels and "INBOX" not in labels)


# ---- sync ----


async def sync_gmail(
    api: GoogleApi,
    tokens: AccessTokens,
    cursor: str | None,
    *,
    window_days: int = DEFAULT_WINDOW_DAYS,
    concurrency: int = DEFAULT_CONCURRENCY,
    limiter: trio.CapacityLimiter | None = None,
    user_id: str = "me",
    page_size: int = PAGE_SIZE,
    now: Callable[[], datetime] = utc_now,
) -> SyncResult:
    """Signals for mail since `cursor` (a history id), and the history id to store with them.

    No cursor, or one Gmail no longer has history for, means a full sync of the
    last `window_days`. Details are fetched at most `concurrency` at a time, or
    through `limiter` when one is shared (for instance across all users).
    """
    limiter = limiter or trio.CapacityLimiter(concurrency)
    if cursor is not None:
        try:
            message_ids, history_id = await _history_since(api, tokens, user_id, cursor, page_size)
        except HistoryTooOld:
            log.info("skytwin.gmail_history_too_old", start_history_id=cursor)
        else:
            signals = await _fetch_signals(api, tokens, user_id, message_ids, limiter, now())
            return SyncResult(signals, history_id, full_sync=False)

    profile = await call_api(
        api, tokens, "GET", _user_path(user_id, "/profile"), operation="gmail.users.getProfile"
    )
    history_id = str(profile["historyId"])
    message_ids = await _recent_message_ids(api, tokens, user_id, window_days, page_size)
    signals = await _fetch_signals(api, tokens, user_id, message_ids, limiter, now())
    log.info("skytwin.gmail_full_sync", messages=len(message_ids), signals=len(signals))
    return SyncResult(signals, history_id, full_sync=True)


async def _history_since(
    api: GoogleApi, tokens: AccessTokens, user_id: str, start_history_id: str, page_size: int
) -> tuple[list[str], str]:
    """Ids of messages added after `start_history_id`, and the mailbox's current history id."""
    added: dict[str, None] = {}  # an ordered set
    history_id = start_history_id
    page_token: str | None = None
    while True:
        params = [
            ("startHistoryId", start_history_id),
            ("historyTypes", "messageAdded"),
            ("maxResults", str(page_size)),
        ]
        if page_token is not None:
            params.append(("pageToken", page_token))
        try:
            page = await call_api(
                api,
                tokens,
                "GET",
                _user_path(user_id, "/history"),
                params=params,
                operation="gmail.users.history.list",
            )
        except NotFound as exc:
            raise HistoryTooOld(f"no history after {start_history_id}") from exc
        for record in page.get("history") or ():
            for entry in record.get("messagesAdded") or ():
                added[str(entry["message"]["id"])] = None
        history_id = str(page.get("historyId", history_id))
        page_token = page.get("nextPageToken")
        if not page_token:
            return list(added), history_id


async def _recent_message_ids(
    api: GoogleApi, tokens: AccessTokens, user_id: str, window_days: int, page_size: int
) -> list[str]:
    """Ids of messages received in the last `window_days`, newest first."""
    ids: dict[str, None] = {}
    page_token: str | None = None
    while True:
        params = [("q", f"newer_than:{window_days}d"), ("maxResults", str(page_size))]
        if page_token is not None:
            params.append(("pageToken", page_token))
        page = await call_api(
            api,
            tokens,
            "GET",
            _user_path(user_id, "/messages"),
            params=params,
            operation="gmail.users.messages.list",
        )
        for ref in page.get("messages") or ():
            ids[str(ref["id"])] = None
        page_token = page.get("nextPageToken")
        if not page_token:
            return list(ids)


async def _fetch_signals(
    api: GoogleApi,
    tokens: AccessTokens,
    user_id: str,
    message_ids: Sequence[str],
    limiter: trio.CapacityLimiter,
    observed_at: datetime,
) -> tuple[Signal, ...]:
    """Fetch each message's metadata (bounded concurrency) and make signals of incoming mail."""
    signals: dict[str, Signal] = {}
    failures: list[ConnectorError] = []
    params = [("format", "metadata"), *(("metadataHeaders", h) for h in METADATA_HEADERS)]

    async def fetch(message_id: str, cancel_scope: trio.CancelScope) -> None:
        try:
            async with limiter:
                message = await call_api(
                    api,
                    tokens,
                    "GET",
                    _user_path(user_id, f"/messages/{quote(message_id, safe='')}"),
                    params=params,
                    operation="gmail.users.messages.get",
                )
        except NotFound:
            # Deleted between the listing and now: nothing to signal.
            log.info("skytwin.gmail_message_vanished", message_id=message_id)
            return
        except ConnectorError as exc:
            # One failure fails the sync (the cursor must not move); stop the others now and
            # raise it plainly after the nursery instead of inside an exception group.
            failures.append(exc)
            cancel_scope.cancel()
            return
        if is_incoming(message):
            signals[message_id] = gmail_signal(message, observed_at=observed_at)

    async with trio.open_nursery() as nursery:
        for message_id in message_ids:
            nursery.start_soon(fetch, message_id, nursery.cancel_scope)
    if failures:
        raise failures[0]
    return tuple(sorted(signals.values(), key=lambda s: (s.occurred_at, s.external_id)))


# ---- actions ----


async def modify_labels(
    api: GoogleApi,
    tokens: AccessTokens,
    message_id: str,
    *,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
    user_id: str = "me",
) -> list[str]:
    """users.messages.modify (idempotent); returns the message's labels afterwards."""
    body = {"addLabelIds": list(add), "removeLabelIds": list(remove)}
    message = await call_api(
        api,
        tokens,
        "POST",
        _user_path(user_id, f"/messages/{quote(message_id, safe='')}/modify"),
        body=body,
        operation="gmail.users.messages.modify",
    )
    return [str(label) for label in message.get("labelIds") or ()]


async def archive_message(api: GoogleApi, tokens: AccessTokens, message_id: str) -> list[str]:
    """Archive a message (remove INBOX); returns its labels afterwards."""
    return await modify_labels(api, tokens, message_id, remove=["INBOX"])


async def mark_read(api: GoogleApi, tokens: AccessTokens, message_id: str) -> list[str]:
    """Mark a message read (remove UNREAD); returns its labels afterwards."""
    return await modify_labels(api, tokens, message_id, remove=["UNREAD"])


async def add_label(
    api: GoogleApi, tokens: AccessTokens, message_id: str, label_id: str
) -> list[str]:
    """Add a label (by label id) to a message; returns its labels afterwards."""
    return await modify_labels(api, tokens, message_id, add=[label_id])


async def _find_label(api: GoogleApi, tokens: AccessTokens, name: str, user_id: str) -> str | None:
    page = await call_api(
        api, tokens, "GET", _user_path(user_id, "/labels"), operation="gmail.users.labels.list"
    )
    for label in page.get("labels") or ():
        if str(label.get("name", "")).lower() == name.lower():
            return str(label["id"])
    return None


async def ensure_label(
    api: GoogleApi, tokens: AccessTokens, name: str, *, user_id: str = "me"
) -> str:
    """The id of the label called `name`, creating the label if the mailbox lacks it.

    messages.modify takes label ids, not names ("SkyTwin/Travel" is a name).
    """
    label_id = await _find_label(api, tokens, name, user_id)
    if label_id is not None:
        return label_id
    try:
        created = await call_api(
            api,
            tokens,
            "POST",
            _user_path(user_id, "/labels"),
            body={"name": name},
            operation="gmail.users.labels.create",
        )
    except PermanentApiError as exc:
        # 409: it exists after all (a concurrent create, or our own retried create whose
        # first answer was lost). Either way the label is there now: look it up.
        if exc.status != 409:
            raise
        label_id = await _find_label(api, tokens, name, user_id)
        if label_id is None:
            raise
        return label_id
    return str(created["id"])


async def add_label_by_name(
    api: GoogleApi, tokens: AccessTokens, message_id: str, name: str
) -> list[str]:
    """Add the label called `name` (created if missing) to a message; returns its label ids."""
    label_id = await ensure_label(api, tokens, name)
    return await add_label(api, tokens, message_id, label_id)
