"""Fixtures for the connector tests: the same served fake as tests/fakegoogle."""

from tests.fakegoogle.fixtures import clock, rig, world

__all__ = ["clock", "rig", "world"]
