"""Carrying out an approved action through the connectors, and checking it was done.

``verify_done`` lets the executor recover an execution that a crash interrupted
between claim and result without acting twice: it asks Google whether the
effect is already there.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..connectors import gmail as gmail_actions
from ..connectors.api import AccessTokens, call_api
from ..connectors.calendar import respond_to_invite
from ..connectors.errors import NotFound
from .google import Google
from .rules import ACTIONS

RESPONSES = ("accepted", "declined", "tentative")


class PolicyViolation(Exception):
    """The action may not run: unknown, malformed, or forbidden by the user's settings."""


def check_params(action: str, params: dict[str, Any]) -> None:
    """Refuse an action whose parameters are missing or malformed (never run on empty params)."""
    if action not in ACTIONS:
        raise PolicyViolation(f"unknown action {action!r}")
    if action.startswith("gmail."):
        if not isinstance(params.get("messageId"), str) or not params["messageId"]:
            raise PolicyViolation("gmail actions need a messageId")
        if action == "gmail.label" and (
            not isinstance(params.get("label"), str) or not 1 <= len(params["label"]) <= 100
        ):
            raise PolicyViolation("gmail.label needs a label name of 1-100 characters")
    if action == "calendar.respond":
        if not isinstance(params.get("eventId"), str) or not params["eventId"]:
            raise PolicyViolation("calendar.respond needs an eventId")
        if params.get("response") not in RESPONSES:
            raise PolicyViolation(f"calendar.respond response must be one of {RESPONSES}")


async def carry_out(
    google: Google, tokens: AccessTokens, action: str, params: dict[str, Any]
) -> dict[str, Any]:
    """Do ``action`` at Google; return a small result for the execution record."""
    if action == "gmail.archive":
        labels = await gmail_actions.archive_message(google.gmail, tokens, params["messageId"])
        return {"labels": labels}
    if action == "gmail.mark_read":
        labels = await gmail_actions.mark_read(google.gmail, tokens, params["messageId"])
        return {"labels": labels}
    if action == "gmail.label":
        labels = await gmail_actions.add_label_by_name(
            google.gmail, tokens, params["messageId"], params["label"]
        )
        return {"labels": labels}
    if action == "calendar.respond":
        event = await respond_to_invite(
            google.calendar, tokens, params["eventId"], params["response"]
        )
        return {"eventId": event.get("id", params["eventId"]), "response": params["response"]}
    raise PolicyViolation(f"unknown action {action!r}")


async def verify_done(
    google: Google, tokens: AccessTokens, action: str, params: dict[str, Any]
) -> bool | None:
    """Whether the action's effect is already in place (None: cannot tell)."""
    if action.startswith("gmail."):
        try:
            message = await call_api(
                google.gmail,
                tokens,
                "GET",
                f"/users/me/messages/{quote(params['messageId'], safe='')}",
                params={"format": "minimal"},
                operation="gmail.users.messages.get",
            )
        except NotFound:
            return None
        labels = set(message.get("labelIds") or ())
        if action == "gmail.archive":
            return "INBOX" not in labels
        if action == "gmail.mark_read":
            return "UNREAD" not in labels
        return None  # a label by name: let carry_out (idempotent) settle it
    if action == "calendar.respond":
        # respond_to_invite reads the event first and sends no patch when the
        # answer is already there, so carrying it out again is the check.
        return None
    return None
