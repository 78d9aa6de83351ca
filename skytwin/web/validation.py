"""Request validation that names every bad field.

Small and explicit on purpose: each endpoint states its fields, and a bad
request gets one 400 listing all the problems, e.g.
``{"error": "invalid request", "fields": {"occurred_at": "must be an ISO 8601 …"}}``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from quart import request

from .errors import ApiError


class ValidationFailed(ApiError):
    """The request body or query has bad fields."""

    status = 400

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("invalid request", fields=fields)


async def json_object() -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why it is not one."""
    if not request.is_json:
        raise ApiError("body must be JSON (Content-Type: application/json)", status=415)
    body = await request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError("body must be a JSON object")
    return body


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
            return parsed
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
