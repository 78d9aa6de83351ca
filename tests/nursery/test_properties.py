"""Hypothesis properties of backoff delays, deadlines and Retry-After parsing."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skytwin.nursery import RetryPolicy, backoff_delay, parse_retry_after, retry_call

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

policies = st.builds(
    lambda base, extra, jitter, attempts: RetryPolicy(
        attempts=attempts, base_delay_s=base, cap_s=base + extra, jitter=jitter
    ),
    base=st.floats(0.0, 10.0),
    extra=st.floats(0.0, 100.0),
    jitter=st.sampled_from(["full", "decorrelated", "none"]),
    attempts=st.integers(1, 30),
)


@FAST
@given(
    policy=policies,
    retry=st.integers(1, 5000),
    previous=st.none() | st.floats(0.0, 1e6),
    seed=st.integers(0, 2**32),
)
def test_delay_is_within_zero_and_cap(
    policy: RetryPolicy, retry: int, previous: float | None, seed: int
) -> None:
    delay = backoff_delay(policy, retry, previous_s=previous, rng=random.Random(seed))
    assert 0.0 <= delay <= policy.cap_s


@FAST
@given(policy=policies, retry=st.integers(1, 200))
def test_unjittered_delay_grows_until_the_cap(policy: RetryPolicy, retry: int) -> None:
    plain = RetryPolicy(base_delay_s=policy.base_delay_s, cap_s=policy.cap_s, jitter="none")
    assert backoff_delay(plain, retry) <= backoff_delay(plain, retry + 1)
    assert backoff_delay(plain, retry) == min(plain.cap_s, plain.base_delay_s * 2.0 ** (retry - 1))


@FAST
@given(
    policy=policies,
    deadline=st.floats(0.001, 200.0),
    work=st.floats(0.0, 3.0),
    seed=st.integers(0, 2**32),
)
def test_retry_never_starts_an_attempt_past_the_deadline(
    policy: RetryPolicy, deadline: float, work: float, seed: int
) -> None:
    starts: list[float] = []
    raised: list[Exception] = []

    async def fails() -> None:
        starts.append(trio.current_time())
        await trio.sleep(work)
        raised.append(httpx.ConnectError("refused"))
        raise raised[-1]

    async def main() -> BaseException | None:
        with trio.move_on_after(deadline):
            try:
                await retry_call(fails, policy=policy, target="p", rng=random.Random(seed))
            except httpx.ConnectError as exc:
                return exc
        return None  # cancelled by the deadline while an attempt was running

    outcome = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert all(start < deadline for start in starts)
    assert 1 <= len(starts) <= policy.attempts
    if outcome is not None:  # gave up: with the last original error, before the deadline
        assert outcome is raised[-1]
    for earlier, later in zip(starts, starts[1:], strict=False):
        assert -1e-9 <= later - earlier - work <= policy.cap_s + 1e-9


@FAST
@given(st.text())
def test_retry_after_never_raises_and_is_never_negative(value: str) -> None:
    parsed = parse_retry_after(value)
    assert parsed is None or parsed >= 0.0


@FAST
@given(st.integers(0, 10**12), st.sampled_from(["", " ", "\t", "  "]))
def test_retry_after_delta_seconds_round_trip(seconds: int, pad: str) -> None:
    assert parse_retry_after(f"{pad}{seconds}{pad}") == float(seconds)


@FAST
@given(st.from_regex(r"-[0-9]+|[0-9]+\.[0-9]+|[0-9]+[a-z]+|\+[0-9]+", fullmatch=True))
def test_retry_after_rejects_non_delta_numbers(value: str) -> None:
    assert parse_retry_after(value) is None


instants = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


@FAST
@given(when=instants, now=instants)
def test_retry_after_http_date(when: datetime, now: datetime) -> None:
    expected = max(0.0, (when - now).total_seconds())
    assert parse_retry_after(format_datetime(when, usegmt=True), now=now) == expected


@FAST
@given(now=instants, ahead=st.integers(0, 10**6))
def test_retry_after_date_forms_agree(now: datetime, ahead: int) -> None:
    when = now + timedelta(seconds=ahead)
    imf = format_datetime(when, usegmt=True)
    asctime = when.strftime("%a %b ") + f"{when.day:2d}" + when.strftime(" %H:%M:%S %Y")
    assert parse_retry_after(imf, now=now) == parse_retry_after(asctime, now=now) == float(ahead)


def test_retry_after_examples() -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now=now) == 120.0
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now=now) == 0.0
    assert parse_retry_after("1.5") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("9" * 400) == math.inf
