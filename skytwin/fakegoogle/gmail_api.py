"""Gmail API v1 handlers: profile, history, messages list/get/modify.

Shapes follow the discovery document `gmail.v1.json`; pagination is keyset
based so a page token stays valid while the mailbox changes underneath it.
"""

from __future__ import annotations

import bisect
import re
from datetime import timedelta
from typing import Any

from skytwin.fakegoogle.protocol import (
    ApiError,
    ApiRequest,
    ApiResponse,
    decode_page_token,
    encode_page_token,
)
from skytwin.fakegoogle.world import SYSTEM_LABELS, Account, HistoryRecord, Message, World

GMAIL_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/gmail.modify",
        "https://www.googleapis.com/auth/gmail.readonly",
        "https://mail.google.com/",
    }
)
HISTORY_TYPES = frozenset({"messageAdded", "messageDeleted", "labelAdded", "labelRemoved"})
_HISTORY_KEYS = {
    "messageAdded": "messagesAdded",
    "messageDeleted": "messagesDeleted",
    "labelAdded": "labelsAdded",
    "labelRemoved": "labelsRemoved",
}
_AGE = re.compile(r"^(newer_than|older_than):(\d+)([dmy])$")
_AGE_DAYS = {"d": 1, "m": 31, "y": 365}
FORMATS = frozenset({"minimal", "full", "metadata"})


def _mailbox(request: ApiRequest) -> Account:
    """The account whose mailbox the request names ("me" or its own address)."""
    account = request.account
    grant = request.grant
    assert account is not None and grant is not None  # the app authenticated the request
    user_id = request.params["userId"]
    if user_id != "me" and user_id.lower() != account.email:
        raise ApiError(403, "Delegation denied for " + account.email, reason="forbidden")
    if not grant.scopes & GMAIL_SCOPES:
        raise ApiError(
            403, "Request had insufficient authentication scopes.", reason="insufficientPermissions"
        )
    return account


def _message_ref(message_id: str, thread_id: str) -> dict[str, str]:
    return {"id": message_id, "threadId": thread_id}


# ---- users.getProfile ----


def get_profile(world: World, request: ApiRequest) -> ApiResponse:
    """users.getProfile: the address and the current history id."""
    account = _mailbox(request)
    return ApiResponse(
        200,
        {
            "emailAddress": account.email,
            "messagesTotal": len(account.messages),
            "threadsTotal": len({m.thread_id for m in account.messages.values()}),
            "historyId": str(account.history_id),
        },
    )


# ---- users.history.list ----


def _render_history(record: HistoryRecord) -> dict[str, Any]:
    ref = _message_ref(record.message_id, record.thread_id)
    item: dict[str, Any] = {"id": str(record.id), "messages": [ref]}
    entry: dict[str, Any] = {"message": {**ref, "labelIds": list(record.message_labels)}}
    if record.changed_labels:
        entry["labelIds"] = list(record.changed_labels)
    item[_HISTORY_KEYS[record.kind]] = [entry]
    return item


def list_history(world: World, request: ApiRequest) -> ApiResponse:
    """users.history.list: changes after startHistoryId; 404 when that is too old."""
    account = _mailbox(request)
    raw_start = request.arg("startHistoryId")
    if raw_start is None:
        raise ApiError(400, "Missing required parameter: startHistoryId", reason="required")
    try:
        start = int(raw_start)
    except ValueError:
        raise ApiError(400, "Invalid startHistoryId", reason="invalidArgument") from None
    if start < account.history_floor:
        raise ApiError(404, "Requested entity was not found.")
    types = set(request.args("historyTypes")) or set(HISTORY_TYPES)
    if not types <= HISTORY_TYPES:
        raise ApiError(400, "Invalid value for historyTypes", reason="invalid")
    label = request.arg("labelId")
    limit = request.int_arg("maxResults", 100, low=1, high=500)
    after = start
    token = request.arg("pageToken")
    if token is not None:
        after = int(decode_page_token(token)[0])
    # Record ids are contiguous above the floor, so the first record to look at is an index.
    history = account.history
    index = max(after - account.history_floor, 0)
    items: list[dict[str, Any]] = []
    next_token: str | None = None
    while index < len(history):
        record = history[index]
        index += 1
        if record.kind not in types or (label is not None and label not in record.message_labels):
            continue
        items.append(_render_history(record))
        if len(items) == limit:
            if index < len(history):
                next_token = encode_page_token(record.id)
            break
    body: dict[str, Any] = {"historyId": str(account.history_id)}
    if items:
        body["history"] = items
    if next_token is not None:
        body["nextPageToken"] = next_token
    return ApiResponse(200, body)


# ---- users.messages.list ----


def _age_filter(world: World, query: str | None) -> tuple[int | None, int | None]:
    """The (newer-than, older-than) bounds in ms for the `q` terms the fake understands."""
    newer: int | None = None
    older: int | None = None
    for term in (query or "").split():
        match = _AGE.match(term)
        if match is None:
            raise ApiError(400, f"The fake Gmail does not understand q term {term!r}")
        days = int(match.group(2)) * _AGE_DAYS[match.group(3)]
        bound = int((world.now() - timedelta(days=days)).timestamp() * 1000)
        if match.group(1) == "newer_than":
            newer = bound
        else:
            older = bound
    return newer, older


def list_messages(world: World, request: ApiRequest) -> ApiResponse:
    """users.messages.list: newest first, filtered by labelIds and newer_than/older_than."""
    account = _mailbox(request)
    newer, older = _age_filter(world, request.arg("q"))
    labels = request.args("labelIds")
    include_spam_trash = request.bool_arg("includeSpamTrash")
    limit = request.int_arg("maxResults", 100, low=1, high=500)
    order = account.message_order
    position = len(order)
    token = request.arg("pageToken")
    if token is not None:
        ms_raw, message_id = decode_page_token(token)
        position = bisect.bisect_left(order, (int(ms_raw), message_id))
    refs: list[dict[str, str]] = []
    next_token: str | None = None
    while position > 0:
        position -= 1
        ms, message_id = order[position]
        if newer is not None and ms <= newer:
            break  # everything further down the list is older still
        message = account.messages[message_id]
        if older is not None and ms >= older:
            continue
        if not include_spam_trash and ("SPAM" in message.labels or "TRASH" in message.labels):
            continue
        if any(label not in message.labels for label in labels):
            continue
        refs.append(_message_ref(message.id, message.thread_id))
        if len(refs) == limit:
            if position > 0:
                next_token = encode_page_token(ms, message_id)
            break
    body: dict[str, Any] = {"resultSizeEstimate": len(refs)}
    if refs:
        body["messages"] = refs
    if next_token is not None:
        body["nextPageToken"] = next_token
    return ApiResponse(200, body)


# ---- users.messages.get / modify ----


def _render_message(message: Message, fmt: str, wanted: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": message.id,
        "threadId": message.thread_id,
        "labelIds": list(message.labels),
        "snippet": message.snippet,
        "sizeEstimate": message.size,
        "historyId": str(message.history_id),
        "internalDate": str(message.internal_ms),
    }
    if fmt == "minimal":
        return body
    headers = message.headers
    if fmt == "metadata" and wanted:
        names = {name.lower() for name in wanted}
        headers = [h for h in headers if h[0].lower() in names]
    payload: dict[str, Any] = {
        "partId": "",
        "mimeType": "text/plain",
        "filename": "",
        "headers": [{"name": name, "value": value} for name, value in headers],
    }
    if fmt == "full":
        payload["body"] = {"size": 0}
    body["payload"] = payload
    return body


def _message(account: Account, request: ApiRequest) -> Message:
    message = account.messages.get(request.params["id"])
    if message is None:
        raise ApiError(404, "Requested entity was not found.")
    return message


def get_message(world: World, request: ApiRequest) -> ApiResponse:
    """users.messages.get in minimal, metadata (with metadataHeaders) or full format."""
    account = _mailbox(request)
    fmt = request.arg("format") or "full"
    if fmt not in FORMATS:
        raise ApiError(400, f"Invalid value for format: {fmt}", reason="invalid")
    message = _message(account, request)
    return ApiResponse(200, _render_message(message, fmt, request.args("metadataHeaders")))


def modify_message(world: World, request: ApiRequest) -> ApiResponse:
    """users.messages.modify: add/remove label ids; idempotent."""
    account = _mailbox(request)
    message = _message(account, request)
    body = request.json()
    add = body.get("addLabelIds", [])
    remove = body.get("removeLabelIds", [])
    for value in (add, remove):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ApiError(400, "Invalid label id list", reason="invalidArgument")
    if set(add) & set(remove):
        raise ApiError(400, "A label cannot be both added and removed", reason="invalidArgument")
    for label in [*add, *remove]:
        if label not in SYSTEM_LABELS and label not in account.labels:
            raise ApiError(400, f"Invalid label: {label}", reason="invalidArgument")
    world.modify_labels(account.email, message.id, add, remove)
    return ApiResponse(200, _render_message(message, "minimal", []))


# ---- users.labels.list / create ----


def _render_label(label_id: str, name: str, kind: str) -> dict[str, str]:
    return {"id": label_id, "name": name, "type": kind}


def list_labels(world: World, request: ApiRequest) -> ApiResponse:
    """users.labels.list: the system labels and the account's own."""
    account = _mailbox(request)
    labels = [_render_label(label, label, "system") for label in sorted(SYSTEM_LABELS)]
    labels += [_render_label(i, name, "user") for i, name in account.labels.items()]
    return ApiResponse(200, {"labels": labels})


def create_label(world: World, request: ApiRequest) -> ApiResponse:
    """users.labels.create: a new user label; 409 when the name is taken."""
    account = _mailbox(request)
    name = request.json().get("name")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "Invalid label name", reason="invalidArgument")
    taken = {n.lower() for n in account.labels.values()} | {n.lower() for n in SYSTEM_LABELS}
    if name.lower() in taken:
        raise ApiError(409, "Label name exists or conflicts", reason="duplicate")
    label_id = world.add_label(account.email, name)
    return ApiResponse(200, _render_label(label_id, name, "user"))
