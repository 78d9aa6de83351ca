"""Instrumentation: every notable thing the primitives do is a frozen record passed to hooks.

Nothing is installed at import. The app calls ``install_structlog_hook()`` once (and
tests call ``add_hook(list.append)``-style collectors); each returns a function that
unregisters it. Hooks run synchronously in the task that caused the event, so
``structlog.contextvars`` fields bound there (``user_id``, ``connector``) come along.
A hook that raises is logged and skipped: instrumentation never breaks the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from skytwin.nursery.states import BreakerState

__all__ = [
    "BreakerTransition",
    "ChildGivenUp",
    "ChildRestarted",
    "ChildStarted",
    "ChildStopped",
    "Event",
    "Hook",
    "RetryBudgetExhausted",
    "RetryGaveUp",
    "RetryScheduled",
    "SupervisorEscalated",
    "add_hook",
    "describe_error",
    "emit",
    "event_name",
    "install_structlog_hook",
]

# Error texts end up in logs and snapshots; keep them bounded.
_MAX_ERROR_CHARS = 500


def describe_error(exc: BaseException) -> str:
    """Render an exception as ``"Type: message"``, truncated for logs and snapshots."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


# ---- retry -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """A retry was scheduled: ``attempt`` (1-based) failed and the next starts after ``delay_s``."""

    target: str
    attempt: int
    delay_s: float
    error_type: str
    reason: str


@dataclass(frozen=True, slots=True)
class RetryGaveUp:
    """A retryable failure was not retried: ``why`` is attempts, deadline or total_time."""

    target: str
    attempts: int
    error_type: str
    reason: str
    why: str


@dataclass(frozen=True, slots=True)
class RetryBudgetExhausted:
    """A retry was refused because the target's retry budget is spent."""

    target: str
    error_type: str


# ---- breaker -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """A breaker changed state; ``open_for_s`` is set when it (re)opened."""

    name: str
    old_state: BreakerState
    new_state: BreakerState
    reason: str
    open_for_s: float | None = None


# ---- supervisor --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChildStarted:
    """A supervised child reported readiness (``restarts`` so far)."""

    supervisor: str
    child: str
    restarts: int


@dataclass(frozen=True, slots=True)
class ChildRestarted:
    """A child will restart after ``delay_s``; ``cause`` names the child whose exit caused it."""

    supervisor: str
    child: str
    restarts: int
    delay_s: float
    error_type: str | None
    error: str | None
    cause: str


@dataclass(frozen=True, slots=True)
class ChildGivenUp:
    """A child exceeded its restart intensity and is left failed."""

    supervisor: str
    child: str
    restarts: int
    error_type: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class ChildStopped:
    """A child ended for good: removed, shut down, exited, or crashed as temporary."""

    supervisor: str
    child: str
    reason: str
    error_type: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SupervisorEscalated:
    """A supervisor gave up on a child and escalates to its parent."""

    supervisor: str
    child: str
    error_type: str | None
    error: str | None


Event = (
    RetryScheduled
    | RetryGaveUp
    | RetryBudgetExhausted
    | BreakerTransition
    | ChildStarted
    | ChildRestarted
    | ChildGivenUp
    | ChildStopped
    | SupervisorEscalated
)
Hook = Callable[[Event], None]

# ---- hooks -------------------------------------------------------------------

# A tuple, replaced on change: emit() iterates a snapshot even if a hook unregisters itself.
_hooks: tuple[Hook, ...] = ()
_log = logging.getLogger(__name__)


def add_hook(hook: Hook) -> Callable[[], None]:
    """Register ``hook`` for every event; returns a function that unregisters it."""
    global _hooks
    _hooks = (*_hooks, hook)

    def remove() -> None:
        """Unregister the hook (idempotent)."""
        global _hooks
        hooks = list(_hooks)
        if hook in hooks:
            hooks.remove(hook)
            _hooks = tuple(hooks)

    return remove


def emit(event: Event) -> None:
    """Pass ``event`` to every hook; a hook that raises is logged and skipped."""
    for hook in _hooks:
        try:
            hook(event)
        except Exception:
            _log.exception("skytwin.nursery instrumentation hook %r failed", hook)


# ---- structlog ---------------------------------------------------------------

_BREAKER_NAMES = {
    BreakerState.OPEN: "skytwin.breaker_opened",
    BreakerState.HALF_OPEN: "skytwin.breaker_half_open",
    BreakerState.CLOSED: "skytwin.breaker_closed",
    BreakerState.FORCED_OPEN: "skytwin.breaker_forced_open",
    BreakerState.DISABLED: "skytwin.breaker_disabled",
}
_NAMES: dict[type[Any], str] = {
    RetryScheduled: "skytwin.retry_scheduled",
    RetryGaveUp: "skytwin.retry_gave_up",
    RetryBudgetExhausted: "skytwin.retry_budget_exhausted",
    ChildStarted: "skytwin.child_started",
    ChildRestarted: "skytwin.child_restarted",
    ChildGivenUp: "skytwin.child_failed",
    ChildStopped: "skytwin.child_stopped",
    SupervisorEscalated: "skytwin.supervisor_escalated",
}
_LEVELS: dict[str, str] = {
    "skytwin.retry_scheduled": "warning",
    "skytwin.retry_gave_up": "warning",
    "skytwin.retry_budget_exhausted": "warning",
    "skytwin.breaker_opened": "warning",
    "skytwin.breaker_forced_open": "warning",
    "skytwin.breaker_disabled": "warning",
    "skytwin.child_restarted": "warning",
    "skytwin.child_failed": "error",
    "skytwin.supervisor_escalated": "error",
}


def event_name(event: Event) -> str:
    """The stable log event name of ``event``, e.g. ``skytwin.breaker_opened``."""
    if isinstance(event, BreakerTransition):
        return _BREAKER_NAMES[event.new_state]
    return _NAMES[type(event)]


def install_structlog_hook(logger: Any = None) -> Callable[[], None]:
    """Log every event as one structlog line with flat fields; returns the unregister function."""
    import structlog  # imported here: the primitives themselves do not need structlog

    log = logger if logger is not None else structlog.get_logger("skytwin.nursery")

    def hook(event: Event) -> None:
        """Log one event as one line."""
        name = event_name(event)
        fields = asdict(event)
        if isinstance(event, BreakerTransition):
            fields["breaker"] = fields.pop("name")
        getattr(log, _LEVELS.get(name, "info"))(name, **fields)

    return add_hook(hook)
