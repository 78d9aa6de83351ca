"""Exceptions raised by SkyTwin's resilience primitives.

Hierarchy::

    NurseryError(Exception)
    ├── CircuitOpenError        a breaker refused a permit; carries ``retry_after_s``
    ├── BreakerTimeoutError     a call overran the breaker's own deadline
    │                           (also a ``trio.TooSlowError``)
    └── SupervisorEscalation    a supervisor gave up and hands the failure to its parent

``retry_call`` never wraps: when it gives up it re-raises the last original
exception, so callers translate their own types at the boundary.
"""

from __future__ import annotations

import math

import trio

__all__ = ["BreakerTimeoutError", "CircuitOpenError", "NurseryError", "SupervisorEscalation"]


class NurseryError(Exception):
    """Base class of every error raised by ``skytwin.nursery`` itself."""


class CircuitOpenError(NurseryError):
    """A breaker refused a permit; ``retry_after_s`` says when asking again may succeed.

    ``retry_after_s`` is ``0.0`` while half-open probes are in flight (their verdict
    decides; ``Breaker.wait_allowed()`` waits for it) and ``math.inf`` when forced open.
    """

    # Raised as CircuitOpenError(name, retry_after_s). Deliberately no Python-level
    # __init__ (it would triple the cost of a refusal): both live in ``args``.
    args: tuple[str, float]

    @property
    def name(self) -> str:
        """The breaker's name."""
        return self.args[0]

    @property
    def retry_after_s(self) -> float:
        """Seconds until asking again may succeed (0.0: probes pending; inf: forced open)."""
        return self.args[1]

    def __str__(self) -> str:
        after = self.retry_after_s
        when = "until reset" if math.isinf(after) else f"retry after {after:.3f}s"
        return f"circuit {self.name!r} is open; {when}"


class BreakerTimeoutError(NurseryError, trio.TooSlowError):
    """A call overran the breaker's own ``call_timeout_s``; counted as a failure."""

    def __init__(self, name: str, timeout_s: float) -> None:
        self.name = name
        self.timeout_s = timeout_s
        super().__init__(f"call through circuit {name!r} took longer than {timeout_s}s")

    def __reduce__(self) -> tuple[type[BreakerTimeoutError], tuple[str, float]]:
        return (type(self), (self.name, self.timeout_s))


class SupervisorEscalation(NurseryError):
    """A child exceeded its restart intensity under a supervisor with ``escalate=True``.

    The original error is the ``__cause__``.
    """

    def __init__(self, supervisor: str, child: str, error: str | None) -> None:
        self.supervisor = supervisor
        self.child = child
        self.error = error
        super().__init__(
            f"supervisor {supervisor!r} escalates: child {child!r} exceeded its restart "
            f"intensity (last error: {error})"
        )

    def __reduce__(self) -> tuple[type[SupervisorEscalation], tuple[str, str, str | None]]:
        return (type(self), (self.supervisor, self.child, self.error))
