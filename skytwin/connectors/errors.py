"""Errors raised by the Google connectors; httpx errors never escape them untranslated.

Hierarchy::

    ConnectorError(Exception)            anything a connector call can fail with
    ├── GoogleUnavailable                transient failure (429, 5xx, timeout, dropped
    │                                    connection) that outlived its retries; try next cycle
    ├── NeedsReauthorization             the grant is gone (invalid_grant): the connection is
    │                                    marked needs_reauth; never retried
    ├── PermanentApiError(status)        Google refused the request for good (4xx)
    │   └── NotFound                     404 on a resource (message or event gone)
    ├── ActionNotApplicable(reason)      the action cannot apply (not an attendee, event
    │                                    cancelled); retrying will not help
    ├── HistoryTooOld      (internal)    Gmail 404 on history.list: full sync instead
    └── SyncTokenGone      (internal)    Calendar 410 on a syncToken: full sync instead

Each error carries `retryable` (a `skytwin.nursery.Retryable` or None), which
`classify_httpx` honours: that is how one attempt tells `retry_call` whether
another is worth it. On an error that escapes a connector the retries are
already spent; `retryable` then only says the failure was transient.
Messages never contain tokens.
"""

from __future__ import annotations

from skytwin.nursery import Retryable


class ConnectorError(Exception):
    """Base class of every connector error."""

    retryable: Retryable | None = None


class GoogleUnavailable(ConnectorError):
    """Google did not answer usefully (transient failure) after the retries the policy allows."""

    def __init__(
        self, message: str, *, status: int | None = None, retryable: Retryable | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class NeedsReauthorization(ConnectorError):
    """The user must connect the account again: the refresh token was revoked or expired."""

    def __init__(self, connection_id: int | None, reason: str) -> None:
        super().__init__(f"connection {connection_id} needs re-authorization: {reason}")
        self.connection_id = connection_id
        self.reason = reason


class PermanentApiError(ConnectorError):
    """Google answered with an error that retrying will not fix."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"HTTP {status} {reason}" + (f": {detail}" if detail else ""))
        self.status = status
        self.reason = reason
        self.detail = detail


class NotFound(PermanentApiError):
    """404: the message, event or history the request named does not exist (any more)."""


class ActionNotApplicable(ConnectorError):
    """The action cannot apply to the resource as it is now (e.g. not an attendee, cancelled)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason + (f": {detail}" if detail else ""))
        self.reason = reason


class HistoryTooOld(ConnectorError):
    """Gmail no longer has history from the stored id; a full sync must replace it."""


class SyncTokenGone(ConnectorError):
    """Calendar invalidated the stored sync token (410); a full sync must replace it."""
