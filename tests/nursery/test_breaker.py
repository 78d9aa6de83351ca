"""Breaker behaviour under the autojump MockClock: exact open/half-open timing and probes."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from skytwin.nursery import (
    Breaker,
    BreakerState,
    BreakerTimeoutError,
    BreakerTransition,
    CircuitOpenError,
    FailureRate,
)

from .conftest import Recorder


async def fail(breaker: Breaker, times: int = 1, error: BaseException | None = None) -> None:
    """Push ``times`` failing calls through the breaker."""
    for _ in range(times):
        with pytest.raises(type(error) if error else OSError):
            async with breaker.permit():
                raise error if error else OSError("down")


async def succeed(breaker: Breaker) -> None:
    async with breaker.permit():
        pass


def transitions(events: Recorder) -> list[tuple[str, str, str, float | None]]:
    return [
        (e.old_state.value, e.new_state.value, e.reason, e.open_for_s)
        for e in events.of(BreakerTransition)
    ]


# ---- closed -> open ----------------------------------------------------------


async def test_opens_after_consecutive_failures_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = Breaker("user-1")
    await fail(breaker, 2)
    await succeed(breaker)  # resets the streak
    await fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    await fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError) as caught:
        await succeed(breaker)
    assert caught.value.name == "user-1"
    assert caught.value.retry_after_s == 300.0


async def test_rejection_carries_the_exact_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = Breaker("b")
    await fail(breaker, 3)
    await trio.sleep(100)
    with pytest.raises(CircuitOpenError) as caught:
        await breaker.call(trio.sleep, 0)
    assert caught.value.retry_after_s == 200.0
    assert "retry after 200.000s" in str(caught.value)


async def test_half_opens_exactly_when_the_open_period_ends(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    breaker = Breaker("b")
    await fail(breaker, 3)
    await trio.sleep(299.999)
    with pytest.raises(CircuitOpenError):
        await succeed(breaker)
    assert breaker.state is BreakerState.OPEN
    await trio.sleep(0.001)
    assert breaker.state is BreakerState.HALF_OPEN  # reads half-open before anyone asks
    await succeed(breaker)
    assert breaker.state is BreakerState.CLOSED
    assert transitions(events) == [
        ("closed", "open", "consecutive_failures", 300.0),
        ("open", "half_open", "open_elapsed", None),
        ("half_open", "closed", "probe_succeeded", None),
    ]


async def test_open_duration_doubles_to_the_cap_and_resets_after_success(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    breaker = Breaker("b")  # 300 s, x2, up to 1200 s
    await fail(breaker, 3)
    opened = []
    for _ in range(4):
        snap = breaker.snapshot()
        opened.append((snap.opened_at, snap.open_for_s, snap.next_probe_at))
        await breaker.wait_allowed()
        await fail(breaker)  # the probe fails: re-open
    assert opened == [
        (0.0, 300.0, 300.0),
        (300.0, 600.0, 900.0),
        (900.0, 1200.0, 2100.0),
        (2100.0, 1200.0, 3300.0),
    ]
    await breaker.wait_allowed()
    assert trio.current_time() == 4500.0
    await succeed(breaker)
    assert breaker.snapshot().open_count == 0
    await fail(breaker, 3)
    assert breaker.snapshot().open_for_s == 300.0
    assert [t[3] for t in transitions(events) if t[1] == "open"] == [
        300.0,
        600.0,
        1200.0,
        1200.0,
        1200.0,
        300.0,
    ]


# ---- half-open probes ----------------------------------------------------------


async def test_hundred_callers_on_a_half_open_breaker_run_exactly_one_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = Breaker("b")
    await fail(breaker, 3)
    await trio.sleep(300)
    probes = rejected = 0
    retry_afters: set[float] = set()

    async def caller() -> None:
        nonlocal probes, rejected
        try:
            async with breaker.permit():
                probes += 1
                await trio.sleep(1)
        except CircuitOpenError as exc:
            rejected += 1
            retry_afters.add(exc.retry_after_s)

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(caller)
    assert (probes, rejected) == (1, 99)
    assert retry_afters == {0.0}
    assert breaker.state is BreakerState.CLOSED
    assert trio.current_time() == 301.0


async def test_half_open_admits_k_probes(autojump_clock: trio.testing.MockClock) -> None:
    breaker = Breaker("b", half_open_probes=3, open_s=10, open_max_s=10)
    await fail(breaker, 3)
    await trio.sleep(10)
    inside = 0
    peak = 0

    async def caller() -> None:
        nonlocal inside, peak
        try:
            async with breaker.permit():
                inside += 1
                peak = max(peak, inside)
                await trio.sleep(1)
                inside -= 1
                raise OSError("still down")
        except (CircuitOpenError, OSError):
            pass

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(caller)
    assert peak == 3
    assert breaker.state is BreakerState.OPEN  # the first failed probe re-opened it


async def test_a_cancelled_probe_releases_its_permit(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    breaker = Breaker("b")
    await fail(breaker, 3)
    await trio.sleep(300)
    with trio.move_on_after(5):
        async with breaker.permit():
            await trio.sleep_forever()
    snap = breaker.snapshot()
    assert snap.state is BreakerState.HALF_OPEN
    assert snap.probes_in_flight == 0
    assert (snap.consecutive_failures, snap.open_count) == (3, 1)  # unchanged: neither counted
    await succeed(breaker)  # a new probe is admitted at once
    assert breaker.state is BreakerState.CLOSED
    assert trio.current_time() == 305.0


async def test_a_crashed_probe_reopens_and_releases(autojump_clock: trio.testing.MockClock) -> None:
    breaker = Breaker("b", open_s=10, open_max_s=100)
    await fail(breaker, 3)
    await trio.sleep(10)
    await fail(breaker, 1, RuntimeError("probe crashed"))
    snap = breaker.snapshot()
    assert snap.state is BreakerState.OPEN
    assert snap.probes_in_flight == 0
    assert snap.next_probe_at == 30.0
    assert snap.last_error == "RuntimeError: probe crashed"


async def test_wait_allowed_sleeps_exactly_until_half_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = Breaker("b")
    await breaker.wait_allowed()  # closed: at once
    assert trio.current_time() == 0.0
    await trio.sleep(10)
    await fail(breaker, 3)
    await breaker.wait_allowed()
    assert trio.current_time() == 310.0


async def test_wait_allowed_waits_for_the_probes_verdict(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = Breaker("b")
    await fail(breaker, 3)
    await trio.sleep(300)
    woke: list[float] = []

    async def probe() -> None:
        async with breaker.permit():
            await trio.sleep(4)

    async def waiter() -> None:
        await breaker.wait_allowed()
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter)
    assert woke == [304.0]


async def test_wait_allowed_after_forced_open_waits_for_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = Breaker("b")
    breaker.force_open()
    woke: list[float] = []

    async def waiter() -> None:
        await breaker.wait_allowed()
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(50)
        assert woke == []
        breaker.reset()
    assert woke == [50.0]


# ---- what counts ---------------------------------------------------------------


async def test_outside_cancellation_is_neither_success_nor_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = Breaker("b", call_timeout_s=10)
    await fail(breaker, 2)
    for _ in range(5):
        with trio.move_on_after(1) as scope:
            await breaker.call(trio.sleep_forever)
        assert scope.cancelled_caught
    snap = breaker.snapshot()
    assert snap.state is BreakerState.CLOSED
    assert snap.consecutive_failures == 2  # not reset as a success either


async def test_own_deadline_counts_as_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = Breaker("b", call_timeout_s=5, failure_types=(OSError,))
    for expected_at in (5.0, 10.0, 15.0):
        with pytest.raises(BreakerTimeoutError) as caught:
            async with breaker.permit():
                await trio.sleep(60)
        assert isinstance(caught.value, trio.TooSlowError)
        assert trio.current_time() == expected_at
    assert breaker.state is BreakerState.OPEN
    assert breaker.snapshot().last_error == (
        "BreakerTimeoutError: call through circuit 'b' took longer than 5s"
    )


async def test_a_fast_call_within_the_own_deadline_succeeds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = Breaker("b", call_timeout_s=5)
    assert await breaker.call(trio.sleep, 4.9) is None
    assert trio.current_time() == 4.9


async def test_only_named_failure_types_count(autojump_clock: trio.testing.MockClock) -> None:
    breaker = Breaker("b", failure_types=(OSError,))
    await fail(breaker, 2)
    await fail(breaker, 1, ValueError("the dependency answered: bad input"))
    assert breaker.snapshot().consecutive_failures == 0  # an answer is a success
    await fail(breaker, 3)
    assert breaker.state is BreakerState.OPEN


async def test_results_from_a_past_era_are_ignored(autojump_clock: trio.testing.MockClock) -> None:
    breaker = Breaker("b", open_s=10, open_max_s=10)
    release = trio.Event()

    async def slow_success() -> None:
        async with breaker.permit():
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_success)
        await trio.testing.wait_all_tasks_blocked()
        await fail(breaker, 3)
        release.set()
    assert breaker.state is BreakerState.OPEN  # the old success did not close it


async def test_failure_rate_over_a_window(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    breaker = Breaker(
        "b",
        failure_threshold=100,
        failure_rate=FailureRate(threshold=0.5, window_s=60, min_calls=10),
    )
    for _ in range(4):
        await succeed(breaker)
        await fail(breaker)
        await trio.sleep(1)
    assert breaker.state is BreakerState.CLOSED  # 8 calls: below min_calls
    await succeed(breaker)
    await fail(breaker)  # 10 calls, 5 failed
    assert breaker.state is BreakerState.OPEN
    assert transitions(events)[-1] == ("closed", "open", "failure_rate", 300.0)


async def test_failure_rate_forgets_old_calls(autojump_clock: trio.testing.MockClock) -> None:
    breaker = Breaker(
        "b", failure_threshold=100, failure_rate=FailureRate(threshold=0.5, min_calls=4)
    )
    await fail(breaker, 3)
    await trio.sleep(61)
    await succeed(breaker)
    await fail(breaker)
    assert breaker.state is BreakerState.CLOSED  # the three old failures left the window


# ---- manual control, snapshots -------------------------------------------------


async def test_force_open_disable_reset(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    breaker = Breaker("b")
    breaker.force_open()
    with pytest.raises(CircuitOpenError) as caught:
        await succeed(breaker)
    assert caught.value.retry_after_s == math.inf
    assert "until reset" in str(caught.value)
    await trio.sleep(10_000)
    assert breaker.state is BreakerState.FORCED_OPEN

    breaker.disable()
    await fail(breaker, 10)
    assert breaker.state is BreakerState.DISABLED
    assert breaker.snapshot().consecutive_failures == 0

    breaker.reset()
    assert breaker.state is BreakerState.CLOSED
    assert transitions(events) == [
        ("closed", "forced_open", "forced", None),
        ("forced_open", "disabled", "disabled", None),
        ("disabled", "closed", "reset", None),
    ]


async def test_snapshot(autojump_clock: trio.testing.MockClock) -> None:
    breaker = Breaker("user-7", open_s=60, open_max_s=240)
    await trio.sleep(5)
    await fail(breaker, 3, OSError("connection refused"))
    snap = breaker.snapshot()
    assert snap.name == "user-7"
    assert snap.state is BreakerState.OPEN
    assert snap.consecutive_failures == 3
    assert snap.open_count == 1
    assert (snap.opened_at, snap.open_for_s, snap.next_probe_at) == (5.0, 60.0, 65.0)
    assert snap.last_error == "OSError: connection refused"
    assert snap.probes_in_flight == 0


async def test_call_fast_path_counts_like_a_permit(autojump_clock: trio.testing.MockClock) -> None:
    breaker = Breaker("b")

    async def boom() -> None:
        raise OSError("down")

    for _ in range(2):
        with pytest.raises(OSError):
            await breaker.call(boom)
    assert await breaker.call(trio.sleep, 0) is None
    assert breaker.snapshot().consecutive_failures == 0
    for _ in range(3):
        with pytest.raises(OSError):
            await breaker.call(boom)
    assert breaker.state is BreakerState.OPEN


def test_validation() -> None:
    with pytest.raises(ValueError):
        Breaker("b", failure_threshold=0)
    with pytest.raises(ValueError):
        Breaker("b", open_s=10, open_max_s=5)
    with pytest.raises(ValueError):
        Breaker("b", call_timeout_s=0)
    with pytest.raises(ValueError):
        FailureRate(threshold=0)


async def test_a_cancelled_probe_wakes_a_waiter_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = Breaker("b")
    await fail(breaker, 3)
    await trio.sleep(300)
    woke: list[float] = []

    async def waiter() -> None:
        await breaker.wait_allowed()
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        probe_scope = trio.CancelScope()

        async def probe() -> None:
            with probe_scope:
                async with breaker.permit():
                    await trio.sleep_forever()

        nursery.start_soon(probe)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter)
        await trio.sleep(2)
        probe_scope.cancel()
    assert woke == [302.0]


async def test_per_user_poll_loop_sleeps_exactly_until_half_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The worker's loop from design.md: wait for a permit, poll, repeat."""
    breaker = Breaker("user-1")
    cycles: list[tuple[float, str]] = []
    outcomes = ["fail"] * 4 + ["ok"] * 2

    async def poll_once() -> None:
        outcome = outcomes.pop(0)
        cycles.append((trio.current_time(), outcome))
        await trio.sleep(1)
        if outcome == "fail":
            raise OSError("google is down")

    while outcomes:
        await breaker.wait_allowed()
        try:
            async with breaker.permit():
                await poll_once()
        except (CircuitOpenError, OSError):
            continue
        await trio.sleep(60)  # the poll interval
    # Three failures open it at 3; the probe at 303 fails (re-open for 600 s at 304);
    # the probe at 904 succeeds, the next cycle follows a poll interval later.
    assert cycles == [
        (0.0, "fail"),
        (1.0, "fail"),
        (2.0, "fail"),
        (303.0, "fail"),
        (904.0, "ok"),
        (965.0, "ok"),
    ]
