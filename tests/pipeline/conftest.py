"""Pipeline tests run on virtual time that never jumps while PostgreSQL works.

The fake Google and PostgreSQL are reached over real sockets: the jumper waits
for 5 ms of real idleness (a jump between a send and the answer becoming
readable would fire a timeout that never happened) and holds still while a
query is in flight (see tests/clocks.py).
"""

import pytest
from trio.testing import MockClock

from tests.fakegoogle.fixtures import world

__all__ = ["world"]


@pytest.fixture
def clock() -> MockClock:
    """A virtual clock that only moves when the rig's jumper moves it."""
    return MockClock()
