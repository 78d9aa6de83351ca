"""The state enums that events and snapshots carry.

They live apart from ``breaker`` and ``supervisor`` so that ``events`` can name them
without an import cycle. Both are ``StrEnum``: they compare equal to their string
value and serialise as plain strings in JSON logs.
"""

from __future__ import annotations

import enum

__all__ = ["BreakerState", "ChildState"]


class BreakerState(enum.StrEnum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


class ChildState(enum.StrEnum):
    """Where a supervised child stands."""

    STARTING = "starting"
    RUNNING = "running"
    BACKING_OFF = "backing_off"
    FAILED = "failed"
    STOPPED = "stopped"
