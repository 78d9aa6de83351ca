"""A trio-native circuit breaker: closed, open, half-open, plus forced-open and disabled.

What must stay true:

- A permit is an ``async with`` block, so a cancelled or crashed probe always gives
  its half-open slot back.
- Failures are the exception types the owner names, plus overrunning the breaker's own
  ``call_timeout_s``. Cancellation from outside (and any other ``BaseException``) is
  neither success nor failure. Other exceptions mean the dependency answered: success.
- Results of permits granted before the latest state change are ignored, so a slow
  call from a past era cannot open or close the circuit of the present one.
- Open -> half-open happens lazily, when someone asks after ``next_probe_at``;
  ``wait_allowed()`` sleeps exactly until then instead of polling.
- The closed-state success path reads no clock and emits nothing.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import trio

from skytwin.nursery._window import SlidingPair
from skytwin.nursery.errors import BreakerTimeoutError, CircuitOpenError
from skytwin.nursery.events import BreakerTransition, describe_error, emit
from skytwin.nursery.states import BreakerState

__all__ = [
    "Breaker",
    "BreakerSnapshot",
    "BreakerState",
    "BreakerTimeoutError",
    "CircuitOpenError",
    "FailureRate",
]

T = TypeVar("T")

# Module-level aliases: the hot path compares identities without attribute lookups.
_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN
_FORCED_OPEN = BreakerState.FORCED_OPEN
_DISABLED = BreakerState.DISABLED


@dataclass(frozen=True, slots=True)
class FailureRate:
    """Also open when ``threshold`` of at least ``min_calls`` calls in ``window_s`` failed."""

    threshold: float = 0.5
    window_s: float = 60.0
    min_calls: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1 or self.window_s <= 0 or self.min_calls < 1:
            raise ValueError("need 0 < threshold <= 1, window_s > 0, min_calls >= 1")


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker's state at one moment, for health checks and the dashboard (trio times)."""

    name: str
    state: BreakerState
    consecutive_failures: int
    open_count: int
    opened_at: float | None
    next_probe_at: float | None
    last_error: str | None
    open_for_s: float | None
    probes_in_flight: int


class _Permit:
    """One call's passage through the breaker; cheaper than an @asynccontextmanager."""

    __slots__ = ("_breaker", "_epoch", "_probe", "_scope")

    def __init__(self, breaker: Breaker) -> None:
        self._breaker = breaker
        self._epoch = -1
        self._probe = False
        self._scope: trio.CancelScope | None = None

    async def __aenter__(self) -> None:
        breaker = self._breaker
        if breaker._state is _CLOSED:
            self._epoch = breaker._epoch
        else:
            breaker._admit(self)
        if breaker._call_timeout_s is not None:
            scope = trio.CancelScope(deadline=trio.current_time() + breaker._call_timeout_s)
            scope.__enter__()
            self._scope = scope

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        breaker = self._breaker
        scope = self._scope
        if scope is not None:
            self._scope = None
            try:
                scope.__exit__(exc_type, exc, tb)
            except BaseException as remainder:  # the scope re-raised part of a group
                breaker._settle(self._epoch, self._probe, remainder)
                raise
            if scope.cancelled_caught:
                error = BreakerTimeoutError(breaker.name, breaker._call_timeout_s or 0.0)
                breaker._failed(self._epoch, self._probe, error)
                raise error from None
        if exc is None:
            if breaker._fast:  # closed with a clean streak: a success changes nothing
                return
            breaker._succeeded(self._epoch, self._probe)
        else:
            breaker._settle(self._epoch, self._probe, exc)


class Breaker:
    """A circuit breaker for one dependency (for example one user's Google account)."""

    __slots__ = (
        "_call_timeout_s",
        "_changed",
        "_epoch",
        "_failure_threshold",
        "_failure_types",
        "_failures",
        "_fast",
        "_half_open_probes",
        "_last_error",
        "_next_probe_at",
        "_open_count",
        "_open_for_s",
        "_open_max_s",
        "_open_multiplier",
        "_open_s",
        "_opened_at",
        "_probes",
        "_rate",
        "_rate_window",
        "_state",
        "name",
    )

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        open_s: float = 300.0,
        open_max_s: float = 1200.0,
        open_multiplier: float = 2.0,
        half_open_probes: int = 1,
        failure_types: tuple[type[BaseException], ...] = (Exception,),
        call_timeout_s: float | None = None,
        failure_rate: FailureRate | None = None,
    ) -> None:
        if failure_threshold < 1 or half_open_probes < 1:
            raise ValueError("failure_threshold and half_open_probes must be >= 1")
        if not 0 < open_s <= open_max_s or open_multiplier < 1:
            raise ValueError("need 0 < open_s <= open_max_s and open_multiplier >= 1")
        if call_timeout_s is not None and call_timeout_s <= 0:
            raise ValueError("call_timeout_s must be > 0 or None")
        self.name = name
        self._failure_threshold = failure_threshold
        self._open_s = open_s
        self._open_max_s = open_max_s
        self._open_multiplier = open_multiplier
        self._half_open_probes = half_open_probes
        self._failure_types = failure_types
        self._call_timeout_s = call_timeout_s
        self._rate = failure_rate
        self._rate_window = SlidingPair(failure_rate.window_s) if failure_rate else None
        self._state = _CLOSED
        # Bumped on every state change; a permit only reports into the epoch it was granted in.
        self._epoch = 0
        self._failures = 0
        self._open_count = 0
        self._open_for_s: float | None = None
        self._opened_at: float | None = None
        self._next_probe_at: float | None = None
        self._probes = 0
        self._last_error: str | None = None
        self._changed: trio.Event | None = None  # created only when someone waits
        # True while a success changes nothing: closed, no failure streak, nothing to
        # count, no own deadline. The hot paths read this one flag instead of five fields.
        self._fast = failure_rate is None and call_timeout_s is None

    # ---- public API ----------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose open period has elapsed reads half-open."""
        if self._state is _OPEN and self._open_elapsed():
            return _HALF_OPEN
        return self._state

    def permit(self) -> AbstractAsyncContextManager[None]:
        """``async with breaker.permit():`` guards one call; raises CircuitOpenError if refused."""
        if self._state is not _CLOSED:
            self._refuse_early()
        return _Permit(self)

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``fn(*args)`` under a permit (the cheapest way through a closed breaker)."""
        if not self._fast:
            if self._state is not _CLOSED:
                self._refuse_early()
            async with _Permit(self):
                return await fn(*args)
        # The same bookkeeping as a permit, without allocating one.
        epoch = self._epoch
        try:
            result = await fn(*args)
        except BaseException as exc:
            self._settle(epoch, False, exc)
            raise
        if not self._fast:
            self._succeeded(epoch, False)
        return result

    async def wait_allowed(self) -> None:
        """Return once a permit could be granted; sleeps exactly until half-open if open.

        Another task may still take the last probe slot before this one asks, so
        callers loop on ``CircuitOpenError``.
        """
        while True:
            now = trio.current_time()
            allowed_from = self._allowed_from()
            if allowed_from <= now:
                await trio.lowlevel.checkpoint_if_cancelled()
                return
            if self._changed is None:
                self._changed = trio.Event()
            with trio.move_on_at(allowed_from):
                await self._changed.wait()

    def force_open(self) -> None:
        """Refuse every call until ``reset()`` or ``disable()``."""
        self._transition(_FORCED_OPEN, "forced")

    def disable(self) -> None:
        """Let every call through and count nothing until ``reset()`` or ``force_open()``."""
        self._transition(_DISABLED, "disabled")

    def reset(self) -> None:
        """Close the breaker and forget failures and open-duration growth."""
        self._transition(_CLOSED, "reset")

    def snapshot(self) -> BreakerSnapshot:
        """A frozen copy of the breaker's state (times are trio times)."""
        return BreakerSnapshot(
            name=self.name,
            state=self.state,
            consecutive_failures=self._failures,
            open_count=self._open_count,
            opened_at=self._opened_at,
            next_probe_at=self._next_probe_at,
            last_error=self._last_error,
            open_for_s=self._open_for_s,
            probes_in_flight=self._probes,
        )

    # ---- admission -----------------------------------------------------------

    def _open_elapsed(self) -> bool:
        return self._next_probe_at is not None and trio.current_time() >= self._next_probe_at

    def _allowed_from(self) -> float:
        """The trio time from which a permit could be granted (inf: wait for a change)."""
        state = self._state
        if state is _CLOSED or state is _DISABLED:
            return -math.inf
        if state is _OPEN:
            assert self._next_probe_at is not None
            return self._next_probe_at
        if state is _HALF_OPEN and self._probes < self._half_open_probes:
            return -math.inf
        return math.inf

    def _refuse_early(self) -> None:
        """Refuse at once when surely open, before a permit object or coroutine exists.

        Only a shortcut: ``_admit`` decides again on entry, where half-open is handled.
        """
        state = self._state
        if state is _OPEN:
            next_probe_at = self._next_probe_at
            assert next_probe_at is not None
            now = trio.current_time()
            if now < next_probe_at:
                raise CircuitOpenError(self.name, next_probe_at - now)
        elif state is _FORCED_OPEN:
            raise CircuitOpenError(self.name, math.inf)

    def _admit(self, permit: _Permit) -> None:
        """Grant ``permit`` outside the closed fast path, or raise CircuitOpenError."""
        state = self._state
        if state is _DISABLED:
            permit._epoch = self._epoch
            return
        if state is _OPEN:
            assert self._next_probe_at is not None
            now = trio.current_time()
            if now < self._next_probe_at:
                raise CircuitOpenError(self.name, self._next_probe_at - now)
            self._transition(_HALF_OPEN, "open_elapsed")
            state = _HALF_OPEN
        if state is _HALF_OPEN:
            if self._probes < self._half_open_probes:
                self._probes += 1
                permit._epoch = self._epoch
                permit._probe = True
                return
            # Probes are in flight; their verdict decides. wait_allowed() waits for it.
            raise CircuitOpenError(self.name, 0.0)
        raise CircuitOpenError(self.name, math.inf)

    # ---- outcomes ------------------------------------------------------------

    def _is_failure(self, exc: BaseException) -> bool:
        if isinstance(exc, self._failure_types):
            return True
        if isinstance(exc, BaseExceptionGroup):
            return exc.subgroup(self._failure_types) is not None
        return False

    # A permit reports as (epoch it was granted in, whether it is a half-open probe).

    def _settle(self, epoch: int, probe: bool, exc: BaseException) -> None:
        """Book the outcome of a permit that ended with ``exc``."""
        if self._is_failure(exc):
            self._failed(epoch, probe, exc)
        elif isinstance(exc, Exception):
            self._succeeded(epoch, probe)  # the dependency answered; the error is the caller's
        else:
            self._released(epoch, probe)  # cancellation from outside: neither success nor failure

    def _succeeded(self, epoch: int, probe: bool) -> None:
        if epoch != self._epoch:
            return
        if self._state is _CLOSED:
            self._failures = 0
            self._fast = self._rate is None and self._call_timeout_s is None
            if self._rate_window is not None:
                self._rate_window.add(trio.current_time(), 1, 0)
        elif self._state is _HALF_OPEN and probe:
            self._probes -= 1
            self._transition(_CLOSED, "probe_succeeded")

    def _failed(self, epoch: int, probe: bool, exc: BaseException) -> None:
        if epoch != self._epoch:
            return
        if self._state is _CLOSED:
            self._last_error = describe_error(exc)
            self._failures += 1
            self._fast = False
            if self._failures >= self._failure_threshold:
                self._transition(_OPEN, "consecutive_failures")
            elif self._rate_tripped():
                self._transition(_OPEN, "failure_rate")
        elif self._state is _HALF_OPEN and probe:
            self._last_error = describe_error(exc)
            self._probes -= 1
            self._transition(_OPEN, "probe_failed")

    def _released(self, epoch: int, probe: bool) -> None:
        if epoch == self._epoch and self._state is _HALF_OPEN and probe:
            self._probes -= 1
            self._notify()

    def _rate_tripped(self) -> bool:
        if self._rate is None or self._rate_window is None:
            return False
        now = trio.current_time()
        self._rate_window.add(now, 1, 1)
        calls, failures = self._rate_window.totals(now)
        return calls >= self._rate.min_calls and failures >= self._rate.threshold * calls

    # ---- transitions ---------------------------------------------------------

    def _transition(self, new: BreakerState, reason: str) -> None:
        old = self._state
        self._epoch += 1
        self._probes = 0
        open_for: float | None = None
        if new is _OPEN:
            self._open_count += 1
            # Grow step by step so the duration never overflows, however many re-opens.
            previous = self._open_for_s if self._open_count > 1 else None
            open_for = (
                self._open_s
                if previous is None
                else min(self._open_max_s, previous * self._open_multiplier)
            )
            now = trio.current_time()
            self._open_for_s = open_for
            self._opened_at = now
            self._next_probe_at = now + open_for
        elif new is _HALF_OPEN:
            self._next_probe_at = None
        elif new is _FORCED_OPEN:
            self._opened_at = trio.current_time()
            self._next_probe_at = None
        else:  # closed or disabled: a clean slate
            self._failures = 0
            self._open_count = 0
            self._open_for_s = None
            self._opened_at = None
            self._next_probe_at = None
            if self._rate_window is not None:
                self._rate_window.clear()
        self._state = new
        self._fast = (
            new is _CLOSED
            and self._failures == 0
            and self._rate is None
            and self._call_timeout_s is None
        )
        if new is not old:
            emit(BreakerTransition(self.name, old, new, reason, open_for))
        self._notify()

    def _notify(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()
