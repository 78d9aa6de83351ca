"""Pipeline tests run on a virtual clock that jumps after 5 ms of real idleness.

Not threshold 0: the fake Google and PostgreSQL are reached over real sockets,
and a jump in the instant between a send and the answer becoming readable would
fire a timeout that never happened.
"""

from tests.fakegoogle.fixtures import clock, world

__all__ = ["clock", "world"]
