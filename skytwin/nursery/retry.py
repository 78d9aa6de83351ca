"""Retry with capped exponential backoff, jitter, Retry-After, deadlines and a retry budget.

What must stay true:

- Only what a classifier names is retried; anything else propagates at once.
- Cancellation from outside (``trio.Cancelled`` and other ``BaseException``) is never
  caught, retried, counted or swallowed: ``retry_call`` only catches ``Exception``.
- No sleep runs past the enclosing deadline (``trio.current_effective_deadline()``):
  if the next attempt could not start before it, ``retry_call`` gives up now.
- Giving up re-raises the last original exception, never a wrapper.
- The success path allocates nothing and reads no clock unless ``total_s`` or a
  budget asks for it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal, TypeVar

import httpx
import trio

from skytwin.nursery._window import SlidingPair
from skytwin.nursery.events import (
    RetryBudgetExhausted,
    RetryGaveUp,
    RetryScheduled,
    emit,
)

__all__ = [
    "RETRYABLE_STATUS",
    "Classifier",
    "RetryBudget",
    "RetryPolicy",
    "Retryable",
    "backoff_delay",
    "classify_httpx",
    "parse_retry_after",
    "retry_call",
]

T = TypeVar("T")

RETRYABLE_STATUS: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})


# ---- policy and backoff -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry; ``attempts`` counts the first try."""

    attempts: int = 4
    base_delay_s: float = 1.0
    cap_s: float = 30.0
    jitter: Literal["full", "decorrelated", "none"] = "full"
    total_s: float | None = None
    retry_after_cap_s: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1 (it counts the first try)")
        if not 0 <= self.base_delay_s <= self.cap_s:
            raise ValueError("need 0 <= base_delay_s <= cap_s")
        if self.jitter not in ("full", "decorrelated", "none"):
            raise ValueError(f"unknown jitter {self.jitter!r}")
        if self.total_s is not None and self.total_s <= 0:
            raise ValueError("total_s must be > 0 or None")
        if self.retry_after_cap_s < 0:
            raise ValueError("retry_after_cap_s must be >= 0")


def _exponential(policy: RetryPolicy, retry: int) -> float:
    # Clamp the exponent: 2.0 ** 1100 raises OverflowError, and the cap wins long before.
    return min(policy.cap_s, policy.base_delay_s * 2.0 ** min(retry - 1, 1000))


def backoff_delay(
    policy: RetryPolicy,
    retry: int,
    *,
    previous_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number ``retry`` (1-based); always within ``[0, cap_s]``.

    ``none``: ``min(cap, base * 2**(retry-1))``. ``full`` (AWS "full jitter"): uniform
    in ``[0, that]``. ``decorrelated`` (AWS): uniform in ``[base, 3 * previous]``,
    capped, with ``previous`` starting at ``base``.
    """
    if retry < 1:
        raise ValueError("retry is 1-based")
    uniform = rng.uniform if rng is not None else random.uniform
    if policy.jitter == "none":
        return _exponential(policy, retry)
    if policy.jitter == "full":
        return min(policy.cap_s, uniform(0.0, _exponential(policy, retry)))
    previous = policy.base_delay_s if previous_s is None else previous_s
    high = max(policy.base_delay_s, previous * 3.0)
    return min(policy.cap_s, uniform(policy.base_delay_s, high))


# ---- classification -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retryable:
    """A classifier's verdict: retry this, for this reason (and maybe after this long)."""

    reason: str
    retry_after_s: float | None = None


Classifier = Callable[[BaseException], Retryable | None]

_DELTA_SECONDS = re.compile(r"[0-9]+")
_MISSING = object()


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date); garbage -> None.

    A date in the past means "now" (``0.0``). ``now`` defaults to the wall clock; pass
    the response's ``Date`` header to measure against the server's clock instead.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        # float() of a digit string never raises; absurd values become inf and get capped.
        return float(text)
    when = _parse_http_date(text)
    if when is None:
        return None
    reference = now if now is not None else datetime.now(UTC)
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=UTC)
    return max(0.0, (when - reference).total_seconds())


def _parse_http_date(text: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # HTTP dates are GMT; asctime and "-0000" forms come back naive.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# Checked in order: the timeouts are subclasses of httpx.TimeoutException.
_TRANSPORT_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (httpx.ConnectTimeout, "connect_timeout"),
    (httpx.ReadTimeout, "read_timeout"),
    (httpx.WriteTimeout, "write_timeout"),
    (httpx.PoolTimeout, "pool_timeout"),
    (httpx.ConnectError, "connect_error"),
    (httpx.ReadError, "read_error"),
    (httpx.WriteError, "write_error"),
    (httpx.RemoteProtocolError, "remote_protocol_error"),
    (ConnectionResetError, "connection_reset"),
)


def classify_httpx(exc: BaseException) -> Retryable | None:
    """Retry verdict for httpx failures: 408/429/5xx statuses and transport failures, by type.

    An exception carrying a ``retryable`` attribute (``Retryable`` or ``None``) decides
    for itself; connectors use that for their own errors. A 401 is never retried here:
    it belongs to the token-refresh path.
    """
    verdict = getattr(exc, "retryable", _MISSING)
    if verdict is None or isinstance(verdict, Retryable):
        return verdict
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        if status not in RETRYABLE_STATUS:
            return None
        headers = exc.response.headers
        server_now = _parse_http_date(headers.get("date", ""))
        return Retryable(
            f"status_{status}", parse_retry_after(headers.get("retry-after"), now=server_now)
        )
    for exc_type, reason in _TRANSPORT_REASONS:
        if isinstance(exc, exc_type):
            return Retryable(reason)
    return None


# ---- budget -------------------------------------------------------------------


class RetryBudget:
    """Caps retries to a share of calls per target, so an outage cannot multiply our load.

    Over a sliding ``window_s``, retries may number at most ``ratio * calls +
    min_per_s * window_s``; the floor lets a quiet target still retry at all. Share
    one instance per target (for example one per Google API) across all callers.
    """

    __slots__ = ("_counts", "min_per_s", "ratio", "target", "window_s")

    def __init__(
        self, target: str, *, ratio: float = 0.2, min_per_s: float = 1.0, window_s: float = 10.0
    ) -> None:
        if ratio < 0 or min_per_s < 0 or window_s <= 0:
            raise ValueError("need ratio >= 0, min_per_s >= 0, window_s > 0")
        self.target = target
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.window_s = window_s
        self._counts = SlidingPair(window_s)  # (calls, retries)

    def record_call(self) -> None:
        """Count one original call (not a retry) towards the budget."""
        self._counts.add(trio.current_time(), 1, 0)

    def available(self) -> float:
        """How many retries the budget would allow right now."""
        calls, retries = self._counts.totals(trio.current_time())
        return self.ratio * calls + self.min_per_s * self.window_s - retries

    def try_spend(self) -> bool:
        """Take one retry from the budget; False (and nothing taken) when it is spent."""
        now = trio.current_time()
        calls, retries = self._counts.totals(now)
        if retries + 1 > self.ratio * calls + self.min_per_s * self.window_s:
            return False
        self._counts.add(now, 0, 1)
        return True


# ---- the retry loop -----------------------------------------------------------


async def retry_call(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    target: str,
    classify: Classifier = classify_httpx,
    budget: RetryBudget | None = None,
    rng: random.Random | None = None,
) -> T:
    """Await ``fn()`` and retry what ``classify`` calls retryable; give up with the last error."""
    if budget is not None:
        budget.record_call()
    started_at = trio.current_time() if policy.total_s is not None else 0.0
    attempt = 1
    previous_s: float | None = None
    while True:
        try:
            return await fn()
        except Exception as exc:
            verdict = classify(exc)
            if verdict is None:
                raise
            delay = _plan_retry(
                policy, target, attempt, exc, verdict, previous_s, started_at, budget, rng
            )
            if delay is None:
                raise
        # Sleep outside the except block so a cancellation here does not chain the old error.
        await trio.sleep(delay)
        previous_s = delay
        attempt += 1


def _plan_retry(
    policy: RetryPolicy,
    target: str,
    attempt: int,
    exc: Exception,
    verdict: Retryable,
    previous_s: float | None,
    started_at: float,
    budget: RetryBudget | None,
    rng: random.Random | None,
) -> float | None:
    """The delay before the next attempt, or None to give up (events emitted here)."""
    error_type = type(exc).__name__
    if attempt >= policy.attempts:
        emit(RetryGaveUp(target, attempt, error_type, verdict.reason, "attempts"))
        return None
    if verdict.retry_after_s is not None:
        delay = min(max(verdict.retry_after_s, 0.0), policy.retry_after_cap_s)
    else:
        delay = backoff_delay(policy, attempt, previous_s=previous_s, rng=rng)
    starts_at = trio.current_time() + delay
    # An attempt that would start at the deadline is cancelled on arrival: give up now.
    if starts_at >= trio.current_effective_deadline():
        emit(RetryGaveUp(target, attempt, error_type, verdict.reason, "deadline"))
        return None
    if policy.total_s is not None and starts_at >= started_at + policy.total_s:
        emit(RetryGaveUp(target, attempt, error_type, verdict.reason, "total_time"))
        return None
    if budget is not None and not budget.try_spend():
        emit(RetryBudgetExhausted(target, error_type))
        return None
    emit(RetryScheduled(target, attempt, delay, error_type, verdict.reason))
    return delay
