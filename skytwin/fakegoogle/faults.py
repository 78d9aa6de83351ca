"""Fault injection for the fake Google: what goes wrong, for whom, and when.

A `FaultPlan` belongs to one API ("gmail", "calendar" or "oauth") and either
one account or every account. For each request the fake asks the plans that
apply for a `Fault`: first the scripted ones (consumed in order, optionally
aimed at one operation or one resource), then an outage window ("down until
T"), then a random error rate drawn from the world's seeded generator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

APIS = ("gmail", "calendar", "oauth")


@dataclass(frozen=True, slots=True)
class Fault:
    """One thing that goes wrong with one request.

    `delay_s` sleeps first (trio time, so virtual-time tests see it); then
    `drop` sends the response headers and closes the connection mid-body (after
    handling the request when `after_handling`: the change is made, the answer
    lost), or `status` answers with that error instead of handling the request.
    """

    status: int | None = None
    retry_after: str | None = None
    delay_s: float = 0.0
    drop: bool = False
    after_handling: bool = False
    oauth_error: str | None = None
    operation: str | None = None
    resource: str | None = None

    @classmethod
    def error(
        cls,
        status: int,
        *,
        retry_after: str | None = None,
        operation: str | None = None,
        resource: str | None = None,
    ) -> Fault:
        """Answer with an HTTP error, maybe with Retry-After (seconds or an HTTP-date)."""
        return cls(status=status, retry_after=retry_after, operation=operation, resource=resource)

    @classmethod
    def dropped(cls, *, operation: str | None = None, resource: str | None = None) -> Fault:
        """Send the headers, then close the connection before the body."""
        return cls(drop=True, operation=operation, resource=resource)

    @classmethod
    def lost_answer(cls, *, operation: str | None = None, resource: str | None = None) -> Fault:
        """Handle the request (its change happens), then drop the connection mid-answer."""
        return cls(drop=True, after_handling=True, operation=operation, resource=resource)

    @classmethod
    def slow(
        cls, delay_s: float, *, operation: str | None = None, resource: str | None = None
    ) -> Fault:
        """Answer normally, but only after `delay_s` seconds."""
        return cls(delay_s=delay_s, operation=operation, resource=resource)

    @classmethod
    def invalid_grant(cls) -> Fault:
        """Make the token endpoint answer 400 invalid_grant once."""
        return cls(status=400, oauth_error="invalid_grant")

    def applies_to(self, operation: str, resource: str | None) -> bool:
        """Whether this scripted fault is aimed at a request for `operation` on `resource`."""
        if self.operation is not None and self.operation != operation:
            return False
        return self.resource is None or self.resource == resource


@dataclass(slots=True)
class FaultPlan:
    """The faults planned for one API of one account (or of all accounts)."""

    script: list[Fault] = field(default_factory=list)
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (429, 500, 503)
    error_retry_after: str | None = None
    latency_s: float = 0.0
    down_until: float | None = None
    down_status: int = 503
    down_retry_after: str | None = None

    def add(self, *faults: Fault) -> FaultPlan:
        """Append faults to the script; each is used by exactly one matching request."""
        self.script.extend(faults)
        return self

    def clear(self) -> None:
        """Forget every planned fault."""
        self.script.clear()
        self.error_rate = 0.0
        self.latency_s = 0.0
        self.down_until = None

    def take(
        self, operation: str, resource: str | None, now: float, rng: random.Random
    ) -> Fault | None:
        """The fault for this request, if any; consumes a scripted fault it uses."""
        for index, fault in enumerate(self.script):
            if fault.applies_to(operation, resource):
                del self.script[index]
                return fault
        if self.down_until is not None and now < self.down_until:
            return Fault(status=self.down_status, retry_after=self.down_retry_after)
        if self.error_rate > 0.0 and rng.random() < self.error_rate:
            status = rng.choice(self.error_statuses)
            return Fault(status=status, retry_after=self.error_retry_after)
        if self.latency_s > 0.0:
            return Fault(delay_s=self.latency_s)
        return None
