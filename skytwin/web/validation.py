"""Request validation that names every bad field.

Small and explicit on purpose: each endpoint states its fields, and a bad
request gets one 400 listing all the problems, e.g.
``{"error": "invalid request", "fields": {"occurred_at": "must be an ISO 8601 …"}}``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from quart import request

from .errors import ApiError


class ValidationFailed(ApiError):
    """The request body or query has bad fields."""

    status = 400

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("invalid request", fields=fields)


def _no_constants(name: str) -> Any:
    # NaN and Infinity are not JSON (PostgreSQL's jsonb refuses them): reject, don't store.
    raise ValueError(f"{name} is not valid JSON")


async def json_object() -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why it is not one."""
    if not request.is_json:
        raise ApiError("body must be JSON (Content-Type: application/json)", status=415)
    raw = await request.get_data(as_text=False)
    try:
        # Bytes, not text: json.loads detects UTF-8/16/32 and rejects undecodable input
        # as a ValueError (Quart's own decoding would raise past us: a 500).
        body = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise ApiError("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError("body must be a JSON object")
    unstorable = {
        _printable(name): "must not contain NUL (\\u0000) or unpaired surrogate characters"
        for name, value in body.items()
        if not storable(name) or not storable(value)
    }
    if unstorable:
        raise ValidationFailed(unstorable)
    return body


def storable(value: Any) -> bool:
    """True unless ``value`` holds a string PostgreSQL cannot store (NUL, unpaired surrogate).

    JSON allows both (``"\\u0000"``, ``"\\ud800"``); PostgreSQL's text and jsonb do
    not, so they are refused here rather than failing the insert. Iterative: a
    body nested as deep as the JSON parser allows must not exhaust the stack.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item or not item.isascii() and not _encodes(item):
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(name: str) -> str:
    """A field name that is safe to echo in a JSON answer."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def text(
    body: dict[str, Any], name: str, errors: dict[str, str], *,
    required: bool = True, max_len: int = 512, pattern: re.Pattern[str] | None = None,
) -> str | None:
    """A string field: present (if required), non-empty, bounded, matching ``pattern``."""
    value = body.get(name)
    if value is None:
        if required:
            errors[name] = "is required"
        return None
    if not isinstance(value, str) or not value.strip():
        errors[name] = "must be a non-empty string"
        return None
    if len(value) > max_len:
        errors[name] = f"must be at most {max_len} characters"
        return None
    if pattern is not None and not pattern.fullmatch(value):
        errors[name] = f"must match {pattern.pattern}"
        return None
    return value


def timestamp(body: dict[str, Any], name: str, errors: dict[str, str]) -> datetime | None:
    """An optional ISO 8601 timestamp with a time zone."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None and 1970 <= parsed.year <= 9999:
            try:
                # In UTC: PostgreSQL refuses offsets beyond ±15:59 that Python accepts.
                return parsed.astimezone(UTC)
            except OverflowError:
                pass  # 9999-12-31 late in the day with a negative offset: past year 9999
    errors[name] = "must be an ISO 8601 timestamp with a time zone, e.g. 2026-01-31T09:00:00Z"
    return None


def query_int(name: str, *, default: int, minimum: int, maximum: int) -> int:
    """An integer query parameter within bounds, or a 400 naming it."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed({name: "must be an integer"}) from None
    if not minimum <= value <= maximum:
        raise ValidationFailed({name: f"must be between {minimum} and {maximum}"})
    return value


def query_cursor(name: str = "cursor") -> int | None:
    """An opaque page cursor from a previous response (a positive integer inside)."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18 or int(raw) < 1:
        raise ValidationFailed({name: "is not a cursor this API returned"})
    return int(raw)
