"""Instrumentation: hooks, their isolation, and the structlog rendering."""

from __future__ import annotations

import logging

import pytest
import structlog.testing

from skytwin.nursery import (
    BreakerState,
    BreakerTransition,
    ChildGivenUp,
    ChildRestarted,
    RetryBudgetExhausted,
    RetryScheduled,
    add_hook,
    describe_error,
    emit,
    event_name,
    install_structlog_hook,
)
from skytwin.nursery import events as events_module


def test_hooks_receive_events_until_removed() -> None:
    seen: list[object] = []
    remove = add_hook(seen.append)
    event = RetryScheduled("gmail", 1, 0.5, "ReadTimeout", "read_timeout")
    emit(event)
    remove()
    emit(event)
    remove()  # idempotent
    assert seen == [event]


def test_a_crashing_hook_never_breaks_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[object] = []

    def broken(event: object) -> None:
        raise RuntimeError("hook bug")

    remove_broken = add_hook(broken)
    remove_good = add_hook(seen.append)
    try:
        with caplog.at_level(logging.ERROR, logger=events_module.__name__):
            emit(RetryBudgetExhausted("gmail", "ConnectError"))
    finally:
        remove_broken()
        remove_good()
    assert len(seen) == 1  # later hooks still run
    assert "hook bug" in caplog.text


def test_nothing_is_installed_at_import() -> None:
    assert events_module._hooks == ()


@pytest.mark.parametrize(
    ("event", "name"),
    [
        (RetryScheduled("t", 1, 1.0, "E", "r"), "skytwin.retry_scheduled"),
        (RetryBudgetExhausted("t", "E"), "skytwin.retry_budget_exhausted"),
        (
            BreakerTransition("b", BreakerState.CLOSED, BreakerState.OPEN, "x", 300.0),
            "skytwin.breaker_opened",
        ),
        (
            BreakerTransition("b", BreakerState.OPEN, BreakerState.HALF_OPEN, "x"),
            "skytwin.breaker_half_open",
        ),
        (
            BreakerTransition("b", BreakerState.HALF_OPEN, BreakerState.CLOSED, "x"),
            "skytwin.breaker_closed",
        ),
        (ChildRestarted("s", "c", 1, 1.0, "E", "E: x", "c"), "skytwin.child_restarted"),
        (ChildGivenUp("s", "c", 5, "E", "E: x"), "skytwin.child_failed"),
    ],
)
def test_stable_event_names(event: object, name: str) -> None:
    assert event_name(event) == name  # type: ignore[arg-type]


def test_structlog_hook_logs_one_flat_line_per_event() -> None:
    remove = install_structlog_hook()
    try:
        with structlog.testing.capture_logs() as logs:
            emit(BreakerTransition("user-1", BreakerState.CLOSED, BreakerState.OPEN, "why", 300.0))
            emit(RetryScheduled("gmail", 2, 1.5, "ReadTimeout", "read_timeout"))
    finally:
        remove()
    assert logs == [
        {
            "event": "skytwin.breaker_opened",
            "log_level": "warning",
            "breaker": "user-1",
            "old_state": "closed",
            "new_state": "open",
            "reason": "why",
            "open_for_s": 300.0,
        },
        {
            "event": "skytwin.retry_scheduled",
            "log_level": "warning",
            "target": "gmail",
            "attempt": 2,
            "delay_s": 1.5,
            "error_type": "ReadTimeout",
            "reason": "read_timeout",
        },
    ]


def test_describe_error_is_bounded() -> None:
    assert describe_error(ValueError("x")) == "ValueError: x"
    assert describe_error(KeyError()) == "KeyError"
    long = describe_error(RuntimeError("y" * 2000))
    assert len(long) == 500 and long.endswith("…")
