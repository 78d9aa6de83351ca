"""Decision rules: what SkyTwin proposes for a new signal.

Pure functions, no I/O. Every proposal carries all the parameters its action
needs (the reference system executed actions with empty parameters), a risk
level, whether it is reversible, and the urgency that sets its approval's
expiry. Whether a proposal needs approval is decided from the user's settings:
anything that changes the user's mail or calendar needs approval unless the user
lets low-risk, reversible actions run alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# Approval lifetimes by urgency (the reference intended 15 min / 24 h / 72 h).
EXPIRY_BY_URGENCY = {
    "high": timedelta(minutes=15),
    "normal": timedelta(hours=24),
    "low": timedelta(hours=72),
}

ACTIONS = ("gmail.archive", "gmail.mark_read", "gmail.label", "calendar.respond")
RENEWAL_LABEL = "SkyTwin/Renewals"
TRAVEL_LABEL = "SkyTwin/Travel"
ORDERS_LABEL = "SkyTwin/Orders"


@dataclass(frozen=True, slots=True)
class Proposal:
    """An action SkyTwin would take for one signal, with everything needed to take it."""

    action: str
    params: dict[str, Any]
    risk: str  # low | medium | high
    reversible: bool
    urgency: str  # high | normal | low
    reason: str

    def requires_approval(self, settings: Mapping[str, Any]) -> bool:
        """True unless the user lets low-risk, reversible actions run alone."""
        auto = bool(settings.get("auto_approve_low_risk", False))
        return not (auto and self.risk == "low" and self.reversible)

    def expires_at(self, now: datetime) -> datetime:
        """When an approval request for this proposal stops being answerable."""
        return now + EXPIRY_BY_URGENCY[self.urgency]


def propose(
    source: str, signal_type: str, data: Mapping[str, Any], *, now: datetime
) -> Proposal | None:
    """The proposal for one signal, or None when SkyTwin has nothing to do."""
    if source == "gmail":
        return _propose_for_mail(signal_type, data)
    if source == "calendar":
        return _propose_for_event(signal_type, data, now)
    return None


def _propose_for_mail(signal_type: str, data: Mapping[str, Any]) -> Proposal | None:
    message_id = data.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        return None
    subject = str(data.get("subject") or "(no subject)")
    sender = str(data.get("from") or "unknown sender")
    if signal_type == "newsletter":
        return Proposal(
            "gmail.archive",
            {"messageId": message_id},
            "low",
            True,
            "low",
            f"Newsletter from {sender}: archive it ({subject!r}).",
        )
    if signal_type == "notification":
        return Proposal(
            "gmail.mark_read",
            {"messageId": message_id},
            "low",
            True,
            "low",
            f"Automated notification from {sender}: mark it read ({subject!r}).",
        )
    if signal_type == "subscription_renewal":
        return Proposal(
            "gmail.label",
            {"messageId": message_id, "label": RENEWAL_LABEL},
            "medium",
            True,
            "high",
            f"A subscription renews or bills soon ({subject!r} from {sender}): "
            "flag it so you decide before it charges.",
        )
    if signal_type == "travel_alert":
        return Proposal(
            "gmail.label",
            {"messageId": message_id, "label": TRAVEL_LABEL},
            "low",
            True,
            "normal",
            f"Travel mail from {sender}: file it under {TRAVEL_LABEL}.",
        )
    if signal_type == "grocery_reorder":
        return Proposal(
            "gmail.label",
            {"messageId": message_id, "label": ORDERS_LABEL},
            "low",
            True,
            "low",
            f"Order or delivery mail from {sender}: file it under {ORDERS_LABEL}.",
        )
    return None


def _propose_for_event(signal_type: str, data: Mapping[str, Any], now: datetime) -> Proposal | None:
    if signal_type != "meeting_invite" or data.get("status") == "cancelled":
        return None
    event_id = data.get("eventId")
    if not isinstance(event_id, str) or not event_id:
        return None
    title = str(data.get("title") or "(untitled)")
    organizer = str(data.get("organizer") or "the organizer")
    urgency = _urgency_from_start(data.get("startTime"), now)
    if data.get("hasConflict"):
        return Proposal(
            "calendar.respond",
            {"eventId": event_id, "response": "declined"},
            "medium",
            False,
            urgency,
            f"{title!r} from {organizer} clashes with another event: decline it "
            "(or propose another time).",
        )
    return Proposal(
        "calendar.respond",
        {"eventId": event_id, "response": "accepted"},
        "medium",
        False,
        urgency,
        f"{title!r} from {organizer} fits your calendar: accept it.",
    )


def _urgency_from_start(start: Any, now: datetime) -> str:
    """An invite for the next 24 hours is urgent; one within a week is normal."""
    if not isinstance(start, str):
        return "normal"
    try:
        when = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError:
        return "normal"
    if when.tzinfo is None:
        return "normal"
    if when - now <= timedelta(hours=24):
        return "high"
    if when - now <= timedelta(days=7):
        return "normal"
    return "low"
