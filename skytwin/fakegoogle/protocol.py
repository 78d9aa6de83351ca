"""Requests, responses and errors as the fake's handlers see them, plus Google's wire formats."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from skytwin.fakegoogle.world import AccessGrant, Account, World

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "ALREADY_EXISTS",
    410: "GONE",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_DEFAULT_REASONS = {
    400: "badRequest",
    401: "authError",
    403: "forbidden",
    404: "notFound",
    410: "deleted",
    429: "rateLimitExceeded",
    500: "backendError",
    503: "backendError",
}


class ApiError(Exception):
    """A Google-style error answer (`{"error": {...}}`) raised from a handler."""

    def __init__(self, status: int, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or _DEFAULT_REASONS.get(status, "error")


@dataclass(slots=True)
class ApiRequest:
    """One parsed request, with the account its bearer token (or grant) stands for."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    params: dict[str, str]
    headers: dict[bytes, bytes]
    account: Account | None = None
    grant: AccessGrant | None = None

    def arg(self, name: str) -> str | None:
        """The first value of a query parameter, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    def args(self, name: str) -> list[str]:
        """Every value of a (repeated) query parameter."""
        return self.query.get(name, [])

    def int_arg(self, name: str, default: int, *, low: int, high: int) -> int:
        """An integer query parameter clamped to Google's documented range."""
        raw = self.arg(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, f"Invalid value for {name}: {raw}", reason="invalid") from None
        if value < low:
            raise ApiError(400, f"Invalid value for {name}: {raw}", reason="invalid")
        return min(value, high)

    def bool_arg(self, name: str) -> bool:
        """A boolean query parameter ("true"/"false")."""
        raw = self.arg(name)
        if raw is None:
            return False
        if raw not in ("true", "false"):
            raise ApiError(400, f"Invalid boolean value for {name}: {raw}", reason="invalid")
        return raw == "true"

    def json(self) -> dict[str, Any]:
        """The body as a JSON object."""
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            raise ApiError(400, "Invalid JSON payload received.", reason="parseError") from None
        if not isinstance(value, dict):
            raise ApiError(400, "Invalid JSON payload received.", reason="parseError")
        return value

    def form(self) -> dict[str, str]:
        """The body as a url-encoded form (first value of each field)."""
        parsed = parse_qs(self.body.decode("latin-1"), keep_blank_values=True)
        return {key: values[0] for key, values in parsed.items()}


@dataclass(slots=True)
class ApiResponse:
    """What a handler answers: a status, a JSON body (or none) and extra headers."""

    status: int
    body: dict[str, Any] | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Handler = Callable[[World, ApiRequest], ApiResponse]


def error_body(status: int, message: str, reason: str) -> dict[str, Any]:
    """Google's JSON error envelope."""
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
        }
    }


def encode_page_token(*parts: int | str) -> str:
    """An opaque page/sync token: clients must not look inside."""
    raw = "|".join(str(part) for part in parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, name: str = "pageToken") -> list[str]:
    """The parts of a token made by `encode_page_token`; 400 if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return raw.decode().split("|")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(400, f"Invalid {name}", reason="invalid") from None


def parse_rfc3339(value: str, name: str) -> datetime:
    """An RFC 3339 timestamp with an offset, as Google requires for timeMin/timeMax."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"Bad Request: invalid {name}", reason="badRequest") from None
    if moment.tzinfo is None:
        raise ApiError(400, f"Bad Request: {name} needs a time zone offset", reason="badRequest")
    return moment
