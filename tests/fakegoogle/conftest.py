"""Fixtures for the fake Google's own tests."""

from tests.fakegoogle.fixtures import clock, rig, world

__all__ = ["clock", "rig", "world"]
