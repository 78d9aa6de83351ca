"""Virtual time for tests that mix Trio's MockClock with a real PostgreSQL.

MockClock's built-in autojump treats every wait as idleness, including a query
PostgreSQL (another process, real time) is still answering; a jump then would
fire deadlines (cycle, connect, acquire) that never really passed. The jumper
here does what autojump does — wait until every task has been blocked for a few
milliseconds of real time, then jump to the next deadline — except while
``skytwin.store.connection.DB_WAITS`` says a query is in flight.
"""

from __future__ import annotations

import math

import trio
from trio.testing import MockClock, wait_all_tasks_blocked

from skytwin.store.connection import DB_WAITS


async def jump_when_idle(clock: MockClock, *, cushion_s: float = 0.005) -> None:
    """Forever: once everything is idle (and no query runs), jump to the next deadline."""
    while True:
        await wait_all_tasks_blocked(cushion_s)
        if DB_WAITS.in_flight:
            continue
        jump = trio.lowlevel.current_statistics().seconds_to_next_deadline
        if 0 < jump < math.inf:
            clock.jump(jump)
