"""Supervisor under the autojump MockClock: restart backoff, intensity, strategies, shutdown."""

from __future__ import annotations

import contextvars
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from skytwin.nursery import (
    ChildGivenUp,
    ChildRestarted,
    ChildStarted,
    ChildState,
    ChildStopped,
    Restart,
    RetryPolicy,
    Strategy,
    Supervisor,
    SupervisorEscalated,
    SupervisorEscalation,
    stop_requested,
)

from .conftest import Recorder

NO_JITTER = RetryPolicy(base_delay_s=1.0, cap_s=30.0, jitter="none")
Child = Callable[..., Awaitable[None]]


@asynccontextmanager
async def supervising(supervisor: Supervisor) -> AsyncIterator[Supervisor]:
    """Run ``supervisor`` in a nursery for the block, then shut it down."""
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        yield supervisor
        await supervisor.shutdown()


class Log:
    """What children did and when: (name, what, trio time)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, float]] = []

    def __call__(self, name: str, what: str) -> None:
        self.entries.append((name, what, trio.current_time()))

    def times(self, name: str, what: str) -> list[float]:
        return [t for n, w, t in self.entries if n == name and w == what]

    def order(self, what: str) -> list[str]:
        return [n for n, w, _ in self.entries if w == what]


def crashing(log: Log, name: str, *, after: float = 0.0, ready_after: float = 0.0) -> Child:
    """A child that becomes ready after ``ready_after`` and crashes ``after`` seconds later."""

    async def child(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        log(name, "start")
        await trio.sleep(ready_after)
        task_status.started()
        await trio.sleep(after)
        log(name, "crash")
        raise RuntimeError(f"{name} boom")

    return child


def polite(log: Log, name: str) -> Child:
    """A child that runs until asked to stop, then returns."""

    async def child(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        log(name, "start")
        task_status.started()
        await stop_requested().wait()
        log(name, "stop")

    return child


def stubborn(log: Log, name: str) -> Child:
    """A child that ignores stop requests and must be cancelled."""

    async def child(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        log(name, "start")
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            log(name, "cancelled")

    return child


# ---- starting ------------------------------------------------------------------


async def test_start_child_returns_once_the_child_is_ready(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    log = Log()
    async with supervising(Supervisor("s")) as sup:
        await sup.start_child("a", crashing(log, "a", after=1000, ready_after=2))
        assert trio.current_time() == 2.0
        snap = sup.snapshot().children[0]
        assert (snap.name, snap.state, snap.since, snap.restarts) == (
            "a",
            ChildState.RUNNING,
            2.0,
            0,
        )
        assert events.of(ChildStarted) == [ChildStarted("s", "a", 0)]


async def test_a_crash_during_the_first_start_is_raised_and_not_kept(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    async def broken(*, task_status: Any) -> None:
        await trio.sleep(1)
        raise ValueError("bad config")

    async with supervising(Supervisor("s")) as sup:
        with pytest.raises(ValueError, match="bad config"):
            await sup.start_child("a", broken)
        assert not sup.has_child("a")
        await trio.sleep(100)
        assert events.of(ChildRestarted) == []


async def test_returning_before_started_is_an_error(autojump_clock: trio.testing.MockClock) -> None:
    async def returns(*, task_status: Any) -> None:
        return None

    async with supervising(Supervisor("s")) as sup:
        with pytest.raises(RuntimeError, match="before calling task_status.started"):
            await sup.start_child("a", returns)


async def test_duplicate_names_and_not_running(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    sup = Supervisor("s")
    with pytest.raises(RuntimeError, match="not running"):
        await sup.start_child("a", polite(log, "a"))
    async with supervising(sup):
        await sup.start_child("a", polite(log, "a"))
        with pytest.raises(ValueError, match="already has a child 'a'"):
            await sup.start_child("a", polite(log, "a"))


async def test_children_inherit_the_callers_context(autojump_clock: trio.testing.MockClock) -> None:
    user_id: contextvars.ContextVar[str] = contextvars.ContextVar("user_id", default="-")
    seen: list[str] = []

    async def child(*, task_status: Any) -> None:
        seen.append(user_id.get())
        task_status.started()
        await trio.sleep(1)
        raise RuntimeError("again")

    sup = Supervisor("s", backoff=NO_JITTER, max_restarts=2)
    async with supervising(sup):
        user_id.set("u-42")
        await sup.start_child("u-42", child)
        user_id.set("someone else")
        await trio.sleep(10)
    assert seen == ["u-42", "u-42", "u-42"]  # first start and both restarts


def test_stop_requested_outside_a_child_is_never_set() -> None:
    assert not stop_requested().is_set()


# ---- restart backoff and intensity ------------------------------------------------


async def test_restart_backoff_schedule_and_give_up(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    log = Log()
    sup = Supervisor("users", backoff=NO_JITTER)  # at most 5 restarts in 60 s
    async with supervising(sup):
        await sup.start_child("u1", crashing(log, "u1"))
        await trio.sleep(100)
        assert log.times("u1", "start") == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0]
        assert [e.delay_s for e in events.of(ChildRestarted)] == [1.0, 2.0, 4.0, 8.0, 16.0]
        assert events.of(ChildGivenUp) == [
            ChildGivenUp("users", "u1", 5, "RuntimeError", "RuntimeError: u1 boom")
        ]
        snap = sup.snapshot()
        assert snap.given_up_children == ("u1",)
        assert snap.failed and not snap.escalated
        child = snap.children[0]
        assert (child.state, child.restarts, child.since) == (ChildState.FAILED, 5, 31.0)
        assert (child.last_error, child.last_error_type) == (
            "RuntimeError: u1 boom",
            "RuntimeError",
        )


async def test_jittered_restart_delays_are_exact_with_a_seeded_rng(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    log = Log()
    backoff = RetryPolicy(base_delay_s=1.0, cap_s=30.0, jitter="full")
    sup = Supervisor("s", backoff=backoff, max_restarts=4, rng=random.Random(11))
    async with supervising(sup):
        await sup.start_child("a", crashing(log, "a"))
        await trio.sleep(100)
    twin = random.Random(11)
    expected = [twin.uniform(0.0, 2.0 ** (n - 1)) for n in range(1, 5)]
    delays = [e.delay_s for e in events.of(ChildRestarted)]
    assert delays == expected
    assert all(0.0 <= d <= 2.0**n for n, d in enumerate(delays))
    starts = log.times("a", "start")
    assert [b - a for a, b in zip(starts, starts[1:], strict=False)] == pytest.approx(expected)


async def test_intensity_window_gives_up_only_on_crashes_within_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    sup = Supervisor("s", backoff=NO_JITTER, max_restarts=2, window_s=60)
    async with supervising(sup):
        await sup.start_child("tight", crashing(log, "tight", after=20))
        await sup.start_child("loose", crashing(log, "loose", after=40))
        await trio.sleep(400)
        states = {c.name: c.state for c in sup.snapshot().children}
    # tight: crashes at 20, 41, 63 -> the third is the third within 60 s: given up.
    assert log.times("tight", "crash") == [20.0, 41.0, 63.0]
    assert states["tight"] is ChildState.FAILED
    # loose: crashes 40, 81, 123, ... -> never more than two within 60 s; the backoff
    # exponent follows the restarts in the window (1 s, then 2 s, 2 s, ...).
    assert log.times("loose", "crash")[:4] == [40.0, 81.0, 123.0, 165.0]
    assert states["loose"] is ChildState.RUNNING  # still going at t=400


async def test_escalation_stops_everyone_and_raises_from_run(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    log = Log()
    sup = Supervisor("s", backoff=NO_JITTER, max_restarts=1, escalate=True)
    escalations: list[SupervisorEscalation] = []

    async def run_supervisor(*, task_status: Any) -> None:
        try:
            await sup.run(task_status=task_status)
        except SupervisorEscalation as exc:
            escalations.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(run_supervisor)
        await sup.start_child("calm", polite(log, "calm"))
        await sup.start_child("bad", crashing(log, "bad", after=5))
    [escalation] = escalations
    assert (escalation.supervisor, escalation.child) == ("s", "bad")
    assert isinstance(escalation.__cause__, RuntimeError)
    assert trio.current_time() == 11.0  # crash at 5, restart at 6, crash at 11: escalate
    assert log.times("calm", "stop") == [11.0]
    assert events.of(SupervisorEscalated) == [
        SupervisorEscalated("s", "bad", "RuntimeError", "RuntimeError: bad boom")
    ]
    snap = sup.snapshot()
    assert snap.escalated and not snap.running
    assert {c.name: c.state for c in snap.children} == {
        "calm": ChildState.STOPPED,
        "bad": ChildState.FAILED,
    }


async def test_a_failed_childs_name_can_be_reused(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    sup = Supervisor("s", max_restarts=0)
    async with supervising(sup):
        await sup.start_child("a", crashing(log, "a"))
        await trio.testing.wait_all_tasks_blocked()
        assert sup.snapshot().children[0].state is ChildState.FAILED
        await sup.start_child("a", polite(log, "a"))
        assert sup.snapshot().children[0].state is ChildState.RUNNING


# ---- restart types --------------------------------------------------------------


async def test_restart_types(autojump_clock: trio.testing.MockClock, events: Recorder) -> None:
    log = Log()

    def exits(name: str, *, error: bool) -> Child:
        async def child(*, task_status: Any) -> None:
            log(name, "start")
            task_status.started()
            await trio.sleep(5)
            if error:
                raise OSError(f"{name} crashed")

        return child

    sup = Supervisor("s", backoff=NO_JITTER, max_restarts=100, window_s=10)
    async with supervising(sup):
        for name, restart, error in [
            ("perm-ok", Restart.PERMANENT, False),
            ("trans-ok", Restart.TRANSIENT, False),
            ("trans-bad", Restart.TRANSIENT, True),
            ("temp-ok", Restart.TEMPORARY, False),
            ("temp-bad", Restart.TEMPORARY, True),
        ]:
            await sup.start_child(name, exits(name, error=error), restart=restart)
        await trio.sleep(13.5)
        states = {c.name: c.state for c in sup.snapshot().children}
    # Exits at 5 and 11; the second restart is the second in the 10 s window: 2 s backoff.
    assert log.times("perm-ok", "start") == [0.0, 6.0, 13.0]  # restarted after a clean exit too
    assert log.times("trans-ok", "start") == [0.0]
    assert log.times("trans-bad", "start") == [0.0, 6.0, 13.0]
    assert log.times("temp-ok", "start") == [0.0]
    assert log.times("temp-bad", "start") == [0.0]
    assert states["trans-ok"] is ChildState.STOPPED
    assert states["temp-ok"] is ChildState.STOPPED
    assert states["temp-bad"] is ChildState.FAILED
    stopped = {e.child: e.reason for e in events.of(ChildStopped)}
    assert stopped["trans-ok"] == "exited"
    assert stopped["temp-bad"] == "crashed"
    assert [e.error_type for e in events.of(ChildRestarted) if e.child == "perm-ok"] == [None, None]


# ---- one_for_all ----------------------------------------------------------------


async def test_one_for_all_stops_the_others_in_reverse_and_restarts_all_in_order(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    log = Log()
    sup = Supervisor("s", strategy=Strategy.ONE_FOR_ALL, backoff=NO_JITTER)
    async with supervising(sup):
        await sup.start_child("a", polite(log, "a"))
        await sup.start_child("b", crashing(log, "b", after=5))
        await sup.start_child("c", polite(log, "c"))
        await sup.start_child("t", polite(log, "t"), restart=Restart.TEMPORARY)
        await trio.sleep(5.5)
        snap = {c.name: (c.state, c.restarts) for c in sup.snapshot().children}
        assert snap == {
            "a": (ChildState.BACKING_OFF, 1),
            "b": (ChildState.BACKING_OFF, 1),
            "c": (ChildState.BACKING_OFF, 1),
            "t": (ChildState.STOPPED, 0),  # temporary: not restarted with the group
        }
        await trio.sleep(1)
        assert sup.snapshot().children[0].state is ChildState.RUNNING
    assert log.order("stop")[:3] == ["t", "c", "a"]  # reverse start order, at the crash
    assert log.times("a", "stop")[0] == 5.0
    starts = [(n, t) for n, w, t in log.entries if w == "start"]
    assert starts[4:7] == [("a", 6.0), ("b", 6.0), ("c", 6.0)]
    assert {e.child: e.cause for e in events.of(ChildRestarted)} == {"a": "b", "b": "b", "c": "b"}


async def test_one_for_all_restarts_wait_for_each_child_to_be_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    sup = Supervisor("s", strategy=Strategy.ONE_FOR_ALL, backoff=NO_JITTER)

    def slow_ready(name: str, ready_after: float) -> Child:
        async def child(*, task_status: Any) -> None:
            log(name, "start")
            await trio.sleep(ready_after)
            task_status.started()
            await stop_requested().wait()

        return child

    async with supervising(sup):
        await sup.start_child("db", slow_ready("db", 3))
        await sup.start_child("api", slow_ready("api", 2))
        await sup.start_child("bad", crashing(log, "bad", after=10))
        assert trio.current_time() == 5.0
        await trio.sleep(20)  # crash at 15, restart at 16: db 16 -> ready 19, api 19 -> 21
        assert log.times("db", "start") == [0.0, 16.0]
        assert log.times("api", "start") == [3.0, 19.0]
        assert log.times("bad", "start") == [5.0, 21.0]


async def test_one_for_all_gives_up_as_a_group(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    sup = Supervisor("s", strategy=Strategy.ONE_FOR_ALL, backoff=NO_JITTER, max_restarts=1)
    async with supervising(sup):
        await sup.start_child("a", polite(log, "a"))
        await sup.start_child("b", crashing(log, "b", after=1))
        await trio.sleep(10)
        states = {c.name: c.state for c in sup.snapshot().children}
        assert states == {"a": ChildState.STOPPED, "b": ChildState.FAILED}
        await sup.start_child("c", polite(log, "c"))  # the supervisor itself carries on
        assert sup.snapshot().children[-1].state is ChildState.RUNNING


# ---- adding, removing, shutting down ---------------------------------------------


async def test_add_and_remove_while_running(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    log = Log()
    sup = Supervisor("users")
    async with supervising(sup):
        await sup.start_child("u1", polite(log, "u1"))
        await sup.start_child("u2", polite(log, "u2"))
        await trio.sleep(3)
        await sup.remove_child("u1")
        assert trio.current_time() == 3.0  # it honoured the stop request at once
        assert log.times("u1", "stop") == [3.0]
        assert not sup.has_child("u1")
        assert sup.child_names() == ["u2"]
        await sup.start_child("u3", polite(log, "u3"))
        assert sup.child_names() == ["u2", "u3"]
        assert [c.restarts for c in sup.snapshot().children] == [0, 0]
        with pytest.raises(KeyError):
            await sup.remove_child("nobody")
    assert ChildStopped("users", "u1", "removed") in events


async def test_removing_a_child_that_ignores_stop_cancels_it_after_its_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with supervising(Supervisor("s")) as sup:
        await sup.start_child("x", stubborn(log, "x"), shutdown_grace_s=2.5)
        await trio.sleep(1)
        await sup.remove_child("x")
        assert trio.current_time() == 3.5
        assert log.times("x", "cancelled") == [3.5]


async def test_removing_a_child_while_it_backs_off(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    async with supervising(Supervisor("s", backoff=NO_JITTER)) as sup:
        await sup.start_child("x", crashing(log, "x", after=1))
        await trio.sleep(1.5)
        assert sup.snapshot().children[0].state is ChildState.BACKING_OFF
        await sup.remove_child("x")
        assert trio.current_time() == 1.5
        await trio.sleep(10)
        assert log.times("x", "start") == [0.0]


async def test_shutdown_in_reverse_order_with_grace_then_cancel(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    log = Log()
    sup = Supervisor("s", shutdown_grace_s=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child("a", polite(log, "a"))
        await sup.start_child("b", stubborn(log, "b"), shutdown_grace_s=3)
        await sup.start_child("c", polite(log, "c"))
        await sup.start_child("d", stubborn(log, "d"))
        await trio.sleep(10)
        await sup.shutdown()
        assert trio.current_time() == 18.0
    # d: 5 s grace, cancelled at 15; c stops at 15; b: 3 s grace, cancelled at 18; a at 18.
    assert [(n, w, t) for n, w, t in log.entries if w != "start"] == [
        ("d", "cancelled", 15.0),
        ("c", "stop", 15.0),
        ("b", "cancelled", 18.0),
        ("a", "stop", 18.0),
    ]
    assert [e.child for e in events.of(ChildStopped)] == ["d", "c", "b", "a"]
    snap = sup.snapshot()
    assert not snap.running
    assert all(c.state is ChildState.STOPPED for c in snap.children)
    with pytest.raises(RuntimeError):
        await sup.start_child("late", polite(log, "late"))


async def test_parallel_shutdown_asks_everyone_at_once_in_reverse_order(
    autojump_clock: trio.testing.MockClock, events: Recorder
) -> None:
    log = Log()
    sup = Supervisor("s", shutdown_grace_s=5, parallel_shutdown=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child("a", polite(log, "a"))
        await sup.start_child("b", stubborn(log, "b"), shutdown_grace_s=3)
        await sup.start_child("c", polite(log, "c"))
        await sup.start_child("d", stubborn(log, "d"))
        await trio.sleep(10)
        await sup.shutdown()
        # One grace period in all, not the sum of them.
        assert trio.current_time() == 15.0
    stops = sorted((t, n, w) for n, w, t in log.entries if w != "start")
    assert stops == [
        (10.0, "a", "stop"),
        (10.0, "c", "stop"),
        (13.0, "b", "cancelled"),
        (15.0, "d", "cancelled"),
    ]
    assert all(c.state is ChildState.STOPPED for c in sup.snapshot().children)


async def test_outside_cancellation_is_a_hard_stop(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    sup = Supervisor("s")
    with trio.move_on_after(4):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.start_child("a", stubborn(log, "a"))
            await sup.start_child("b", polite(log, "b"))
    assert trio.current_time() == 4.0  # no grace periods
    assert log.times("a", "cancelled") == [4.0]
    assert log.times("b", "stop") == []
    assert all(c.state is ChildState.STOPPED for c in sup.snapshot().children)


async def test_a_cancelled_start_child_leaves_nothing_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with supervising(Supervisor("s")) as sup:
        with trio.move_on_after(1):
            await sup.start_child("slow", crashing(log, "slow", ready_after=10))
        assert not sup.has_child("slow")
        await trio.sleep(20)
        assert log.times("slow", "start") == [0.0]
        assert log.times("slow", "crash") == []


async def test_snapshot(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    sup = Supervisor("users", backoff=NO_JITTER)
    async with supervising(sup):
        await sup.start_child("ok", polite(log, "ok"))
        await sup.start_child("flaky", crashing(log, "flaky", after=2), restart=Restart.TRANSIENT)
        await trio.sleep(2.5)
        snap = sup.snapshot()
        assert (snap.name, snap.strategy, snap.running, snap.escalated) == (
            "users",
            Strategy.ONE_FOR_ONE,
            True,
            False,
        )
        assert snap.given_up_children == ()
        ok, flaky = snap.children
        assert (ok.name, ok.state, ok.restarts, ok.last_error, ok.since) == (
            "ok",
            ChildState.RUNNING,
            0,
            None,
            0.0,
        )
        assert (flaky.state, flaky.restarts, flaky.since, flaky.restart) == (
            ChildState.BACKING_OFF,
            1,
            2.0,
            Restart.TRANSIENT,
        )
        assert flaky.last_error == "RuntimeError: flaky boom"
