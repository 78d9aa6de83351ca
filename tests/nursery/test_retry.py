"""retry_call under the autojump MockClock: exact schedules, deadlines, cancellation, budget."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from skytwin.nursery import (
    Retryable,
    RetryBudget,
    RetryBudgetExhausted,
    RetryGaveUp,
    RetryPolicy,
    RetryScheduled,
    classify_httpx,
    retry_call,
)

from .conftest import Recorder

NO_JITTER = RetryPolicy(attempts=4, base_delay_s=1.0, cap_s=30.0, jitter="none")
REQUEST = httpx.Request("GET", "https://api.example.test/v1/things")


class Script:
    """An async callable that raises the scripted exceptions in turn, then returns "ok"."""

    def __init__(self, *outcomes: BaseException) -> None:
        self.outcomes = list(outcomes)
        self.times: list[float] = []

    async def __call__(self) -> str:
        self.times.append(trio.current_time())
        if self.outcomes:
            raise self.outcomes.pop(0)
        return "ok"


class AlwaysFails:
    """An async callable that raises a fresh error on every call and keeps each one."""

    def __init__(self, factory: Any = lambda: httpx.ConnectError("refused")) -> None:
        self.factory = factory
        self.raised: list[BaseException] = []
        self.times: list[float] = []

    async def __call__(self) -> None:
        self.times.append(trio.current_time())
        error = self.factory()
        self.raised.append(error)
        raise error


def status_error(status: int, **headers: str) -> httpx.HTTPStatusError:
    response = httpx.Response(status, headers=headers, request=REQUEST)
    return httpx.HTTPStatusError(f"status {status}", request=REQUEST, response=response)


# ---- schedules ---------------------------------------------------------------


async def test_clock_starts_at_zero(autojump_clock: trio.testing.MockClock) -> None:
    assert trio.current_time() == 0.0


async def test_backoff_schedule_without_jitter_is_exact(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    fn = Script(httpx.ConnectError("a"), httpx.ReadTimeout("b"), status_error(503))
    assert await retry_call(fn, policy=NO_JITTER, target="gmail") == "ok"
    assert fn.times == [0.0, 1.0, 3.0, 7.0]
    assert events.of(RetryScheduled) == [
        RetryScheduled("gmail", 1, 1.0, "ConnectError", "connect_error"),
        RetryScheduled("gmail", 2, 2.0, "ReadTimeout", "read_timeout"),
        RetryScheduled("gmail", 3, 4.0, "HTTPStatusError", "status_503"),
    ]


async def test_delays_are_capped(autojump_clock: trio.testing.MockClock) -> None:
    policy = RetryPolicy(attempts=5, base_delay_s=10.0, cap_s=15.0, jitter="none")
    fn = Script(*(httpx.ConnectError("x") for _ in range(4)))
    await retry_call(fn, policy=policy, target="t")
    assert fn.times == [0.0, 10.0, 25.0, 40.0, 55.0]


async def test_full_jitter_is_exact_with_a_seeded_rng(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    policy = RetryPolicy(attempts=6, base_delay_s=1.0, cap_s=5.0, jitter="full")
    fn = Script(*(httpx.ConnectError("x") for _ in range(5)))
    await retry_call(fn, policy=policy, target="t", rng=random.Random(7))

    twin = random.Random(7)
    expected = [twin.uniform(0.0, min(5.0, 2.0 ** (n - 1))) for n in range(1, 6)]
    delays = [e.delay_s for e in events.of(RetryScheduled)]
    assert delays == expected
    assert all(0.0 <= d <= min(5.0, 2.0**n) for n, d in enumerate(delays))
    starts = [0.0]
    for d in expected:
        starts.append(starts[-1] + d)
    assert fn.times == pytest.approx(starts, abs=1e-9)


async def test_decorrelated_jitter_stays_between_base_and_cap(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    policy = RetryPolicy(attempts=12, base_delay_s=0.5, cap_s=8.0, jitter="decorrelated")
    fn = Script(*(httpx.ConnectError("x") for _ in range(11)))
    await retry_call(fn, policy=policy, target="t", rng=random.Random(3))

    twin, previous, expected = random.Random(3), 0.5, []
    for _ in range(11):
        previous = min(8.0, twin.uniform(0.5, previous * 3))
        expected.append(previous)
    delays = [e.delay_s for e in events.of(RetryScheduled)]
    assert delays == expected
    assert all(0.5 <= d <= 8.0 for d in delays)


async def test_gives_up_after_attempts_with_the_last_original_error(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    fn = AlwaysFails()
    with pytest.raises(httpx.ConnectError) as caught:
        await retry_call(fn, policy=NO_JITTER, target="t")
    assert caught.value is fn.raised[-1]
    assert len(fn.raised) == 4
    assert trio.current_time() == 7.0
    assert events.of(RetryGaveUp) == [
        RetryGaveUp("t", 4, "ConnectError", "connect_error", "attempts")
    ]


# ---- classification ----------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [ValueError("bad"), TypeError("nope"), status_error(401), status_error(404), status_error(400)],
)
async def test_not_retryable_fails_at_once(
    autojump_clock: trio.testing.MockClock, events: Recorder, error: Exception
) -> None:
    fn = Script(error)
    with pytest.raises(type(error)) as caught:
        await retry_call(fn, policy=NO_JITTER, target="t")
    assert caught.value is error
    assert fn.times == [0.0]
    assert list(events) == []


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (status_error(408), "status_408"),
        (status_error(429), "status_429"),
        (status_error(500), "status_500"),
        (status_error(502), "status_502"),
        (status_error(503), "status_503"),
        (status_error(504), "status_504"),
        (httpx.ConnectTimeout("x"), "connect_timeout"),
        (httpx.ReadTimeout("x"), "read_timeout"),
        (httpx.WriteTimeout("x"), "write_timeout"),
        (httpx.PoolTimeout("x"), "pool_timeout"),
        (httpx.ConnectError("x"), "connect_error"),
        (httpx.ReadError("x"), "read_error"),
        (httpx.WriteError("x"), "write_error"),
        (httpx.RemoteProtocolError("x"), "remote_protocol_error"),
        (ConnectionResetError(), "connection_reset"),
    ],
)
def test_classify_httpx_retryable(error: Exception, reason: str) -> None:
    assert classify_httpx(error) == Retryable(reason)


@pytest.mark.parametrize(
    "error",
    [
        status_error(401),
        status_error(403),
        status_error(404),
        status_error(501),
        httpx.UnsupportedProtocol("x"),
        httpx.DecodingError("x"),
        httpx.TooManyRedirects("x"),
        ValueError("x"),
        TimeoutError(),
        trio.TooSlowError(),
    ],
)
def test_classify_httpx_not_retryable(error: Exception) -> None:
    assert classify_httpx(error) is None


def test_classify_honours_an_errors_own_verdict() -> None:
    class Declares(Exception):
        def __init__(self, retryable: Retryable | None) -> None:
            self.retryable = retryable

    assert classify_httpx(Declares(Retryable("quota", 3.0))) == Retryable("quota", 3.0)
    assert classify_httpx(Declares(None)) is None

    class Unrelated(httpx.ConnectError):
        retryable = True  # not a verdict: ignored, the type decides

    assert classify_httpx(Unrelated("x")) == Retryable("connect_error")


# ---- Retry-After ---------------------------------------------------------------


async def test_retry_after_seconds_replace_the_backoff(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    fn = Script(status_error(429, **{"Retry-After": "7"}), status_error(503))
    await retry_call(fn, policy=NO_JITTER, target="t")
    assert fn.times == [0.0, 7.0, 9.0]  # 7 from the header, then the backoff's 2 s


async def test_retry_after_http_date_is_measured_against_the_servers_date(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server_now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    headers = {
        "Date": format_datetime(server_now, usegmt=True),
        "Retry-After": format_datetime(server_now + timedelta(seconds=12), usegmt=True),
    }
    fn = Script(status_error(503, **headers))
    await retry_call(fn, policy=NO_JITTER, target="t")
    assert fn.times == [0.0, 12.0]


async def test_retry_after_in_the_past_means_now(autojump_clock: trio.testing.MockClock) -> None:
    headers = {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
    fn = Script(status_error(503, **headers))
    await retry_call(fn, policy=NO_JITTER, target="t")
    assert fn.times == [0.0, 0.0]


async def test_retry_after_is_capped(autojump_clock: trio.testing.MockClock) -> None:
    policy = RetryPolicy(attempts=2, jitter="none", retry_after_cap_s=120.0)
    fn = Script(status_error(429, **{"Retry-After": "86400"}))
    await retry_call(fn, policy=policy, target="t")
    assert fn.times == [0.0, 120.0]


async def test_garbage_retry_after_is_ignored(autojump_clock: trio.testing.MockClock) -> None:
    fn = Script(status_error(503, **{"Retry-After": "soon-ish"}))
    await retry_call(fn, policy=NO_JITTER, target="t")
    assert fn.times == [0.0, 1.0]


# ---- deadlines -------------------------------------------------------------------


async def test_never_sleeps_past_the_enclosing_deadline(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    policy = RetryPolicy(attempts=10, base_delay_s=1.0, cap_s=30.0, jitter="none")
    fn = AlwaysFails()
    with trio.fail_after(10):
        with pytest.raises(httpx.ConnectError) as caught:
            await retry_call(fn, policy=policy, target="t")
    # Attempts at 0, 1, 3, 7; the next would start at 15 > 10: give up at 7, not at 10.
    assert fn.times == [0.0, 1.0, 3.0, 7.0]
    assert trio.current_time() == 7.0
    assert caught.value is fn.raised[-1]
    assert events.of(RetryGaveUp)[-1].why == "deadline"


async def test_an_attempt_that_would_start_at_the_deadline_is_not_made(
    autojump_clock: trio.testing.MockClock,
) -> None:
    policy = RetryPolicy(attempts=10, jitter="none")
    fn = AlwaysFails()
    with trio.move_on_after(7), pytest.raises(httpx.ConnectError):
        await retry_call(fn, policy=policy, target="t")
    assert fn.times == [0.0, 1.0, 3.0]
    assert trio.current_time() == 3.0


async def test_retry_after_beyond_the_deadline_gives_up_now(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fn = Script(status_error(429, **{"Retry-After": "30"}))
    with trio.fail_after(10), pytest.raises(httpx.HTTPStatusError):
        await retry_call(fn, policy=NO_JITTER, target="t")
    assert trio.current_time() == 0.0


async def test_total_time_bounds_the_schedule(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    policy = RetryPolicy(attempts=10, jitter="none", total_s=5.0)
    fn = AlwaysFails()
    with pytest.raises(httpx.ConnectError):
        await retry_call(fn, policy=policy, target="t")
    assert fn.times == [0.0, 1.0, 3.0]
    assert events.of(RetryGaveUp)[-1].why == "total_time"


# ---- cancellation ----------------------------------------------------------------


async def test_outside_cancellation_during_an_attempt_is_not_retried(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    calls: list[float] = []
    budget = RetryBudget("t", ratio=0.0, min_per_s=1.0)

    async def hangs() -> None:
        calls.append(trio.current_time())
        await trio.sleep_forever()

    with trio.move_on_after(5) as scope:
        await retry_call(hangs, policy=NO_JITTER, target="t", budget=budget)
    assert scope.cancelled_caught  # the Cancelled reached its scope: not swallowed
    assert calls == [0.0]
    assert list(events) == []
    assert budget.available() == 10.0  # nothing spent


async def test_outside_cancellation_during_backoff_propagates(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    fn = AlwaysFails()
    # Cancelled by hand, not by a deadline: with a deadline retry_call would not even sleep.
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def cancel_later() -> None:
            await trio.sleep(0.5)
            scope.cancel()

        nursery.start_soon(cancel_later)
        with scope:
            await retry_call(fn, policy=NO_JITTER, target="t")
    assert scope.cancelled_caught
    assert fn.times == [0.0]
    assert len(events.of(RetryScheduled)) == 1
    assert trio.current_time() == 0.5


async def test_cancelled_raised_by_fn_is_never_classified(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[BaseException] = []

    def classify(exc: BaseException) -> Retryable | None:
        seen.append(exc)
        return Retryable("anything")

    fn = AlwaysFails(lambda: KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        await retry_call(fn, policy=NO_JITTER, target="t", classify=classify)
    assert seen == []
    assert len(fn.times) == 1


# ---- budget ----------------------------------------------------------------------


async def test_budget_allows_a_share_of_calls_then_fails_fast(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    budget = RetryBudget("google", ratio=0.2, min_per_s=0.0, window_s=10.0)
    for _ in range(10):
        budget.record_call()  # healthy traffic
    fn = AlwaysFails()
    with pytest.raises(httpx.ConnectError):
        await retry_call(fn, policy=NO_JITTER, target="google", budget=budget)
    # 11 calls allow 2.2 retries: two are made, the third is refused at t=3.
    assert fn.times == [0.0, 1.0, 3.0]
    assert events.of(RetryBudgetExhausted) == [RetryBudgetExhausted("google", "ConnectError")]

    other = AlwaysFails()
    with pytest.raises(httpx.ConnectError):
        await retry_call(other, policy=NO_JITTER, target="google", budget=budget)
    assert other.times == [3.0]  # spent: fails at once, adding no load


async def test_budget_refills_as_the_window_slides(autojump_clock: trio.testing.MockClock) -> None:
    budget = RetryBudget("t", ratio=0.0, min_per_s=0.2, window_s=10.0)
    assert budget.available() == 2.0
    assert budget.try_spend() and budget.try_spend()
    assert not budget.try_spend()
    await trio.sleep(9.0)
    assert not budget.try_spend()
    await trio.sleep(1.0)  # both retries were in the slice [0, 1), now out of the window
    assert budget.try_spend()


async def test_budget_floor_lets_a_quiet_target_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = RetryBudget("quiet")  # defaults: 20 %, 1 per second over 10 s
    fn = Script(httpx.ConnectError("x"), httpx.ConnectError("y"))
    assert await retry_call(fn, policy=NO_JITTER, target="quiet", budget=budget) == "ok"
    assert budget.available() == pytest.approx(0.2 * 1 + 10.0 - 2)


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay_s=5.0, cap_s=1.0)
    with pytest.raises(ValueError):
        RetryPolicy(total_s=0.0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter="fancy")  # type: ignore[arg-type]
