"""Fixtures shared by tests/fakegoogle and tests/connectors (each conftest imports them)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from trio.testing import MockClock

from skytwin.fakegoogle import World
from tests.fakegoogle.harness import Rig, new_world, rig_for


@pytest.fixture
def clock() -> MockClock:
    """A virtual clock that jumps once the loop has been idle for 5 ms of real time.

    Not threshold 0: client and fake talk over real loopback sockets, and a
    jump taken in the instant between one side's send() and the kernel making
    the bytes readable on the other would fire a timeout that never happened.
    """
    return MockClock(autojump_threshold=0.005)


@pytest.fixture
def world() -> World:
    """An empty world on the virtual wall clock."""
    return new_world()


@pytest.fixture
async def rig(clock: MockClock, world: World) -> AsyncIterator[Rig]:
    """The world served over HTTP, with one connected account (ada@example.com).

    pytest-trio only takes the clock from the test's own arguments, so a test
    using this fixture must also ask for `clock`; this guard says so.
    """
    if trio.lowlevel.current_clock() is not clock:
        raise RuntimeError("a test using `rig` must request the `clock` fixture too")
    async with rig_for(world) as rig:
        rig.connect()
        yield rig
    assert world.errors == [], "the fake Google crashed:\n" + "\n".join(world.errors)
